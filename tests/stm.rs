//! Software transactional memory on keys (`Client::stm`).

mod support;

use std::collections::BTreeMap;

use leasehold::{Error, Isolation};
use support::*;

const ACCOUNTS: usize = 10;
const TASKS: usize = 8;
const TRANSFERS: usize = 1000;
const START: i64 = 1000;

fn account(i: usize) -> String {
    format!("acct/{i}")
}

async fn balance(stm: &leasehold::Stm, key: &str) -> leasehold::Result<i64> {
    let v = stm.get(key).await?.unwrap_or_default();
    v.parse()
        .map_err(|_| Error::InvalidArgument(format!("{key} holds {v:?}")))
}

/// 8 tasks move amounts between 10 accounts 1,000 times under serializable isolation: the
/// total never changes, and every transfer's effect is there exactly once (each logs itself in
/// the same transaction, and the balances are what the log implies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_keep_the_total_and_lose_nothing() {
    let server = server();
    let client = client(&server, "stm1").await;
    for i in 0..ACCOUNTS {
        client
            .put(&account(i), &START.to_string(), None)
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut retries = 0;
                for n in (t..TRANSFERS).step_by(TASKS) {
                    let (from, to) = (n % ACCOUNTS, (n * 7 + 3) % ACCOUNTS);
                    let amount = (n % 13 + 1) as i64;
                    let done = client
                        .stm(Isolation::Serializable, |stm| async move {
                            let a = balance(&stm, &account(from)).await?;
                            let b = balance(&stm, &account(to)).await?;
                            if from != to {
                                stm.put(&account(from), &(a - amount).to_string());
                                stm.put(&account(to), &(b + amount).to_string());
                            }
                            stm.put(&format!("log/{n:04}"), &format!("{from} {to} {amount}"));
                            Ok(())
                        })
                        .await
                        .unwrap();
                    retries += done.retries;
                }
                retries
            })
        })
        .collect();
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap();
    }
    let mut expected: BTreeMap<usize, i64> = (0..ACCOUNTS).map(|i| (i, START)).collect();
    let log = client.get_prefix("log/", 10_000, None).await.unwrap();
    assert_eq!(log.kvs.len(), TRANSFERS, "every transfer logged once");
    for kv in &log.kvs {
        let parts: Vec<i64> = kv.value.split(' ').map(|p| p.parse().unwrap()).collect();
        if parts[0] != parts[1] {
            *expected.get_mut(&(parts[0] as usize)).unwrap() -= parts[2];
            *expected.get_mut(&(parts[1] as usize)).unwrap() += parts[2];
        }
    }
    let mut total = 0;
    for (i, want) in expected {
        let got: i64 = client
            .get(&account(i))
            .await
            .unwrap()
            .unwrap()
            .value
            .parse()
            .unwrap();
        assert_eq!(got, want, "account {i}");
        total += got;
    }
    assert_eq!(total, START * ACCOUNTS as i64);
    eprintln!(
        "{TRANSFERS} transfers by {TASKS} tasks over {ACCOUNTS} accounts: {retries} retries ({:.1} per 100 transfers)",
        retries as f64 * 100.0 / TRANSFERS as f64
    );
}

/// Read committed commits its writes together whatever happened to what it read: no retry,
/// even though the key it read changed before the commit.
#[tokio::test]
async fn read_committed_writes_land_together_without_read_checks() {
    let server = server();
    let client = client(&server, "stm2").await;
    client.put("x", "1", None).await.unwrap();
    let mut first = true;
    let done = client
        .stm(Isolation::ReadCommitted, |stm| {
            let client = client.clone();
            let change = std::mem::take(&mut first);
            async move {
                let x = stm.get("x").await?;
                if change {
                    // Someone else writes x between our read and our commit.
                    client.put("x", "2", None).await?;
                }
                stm.put("y", &x.unwrap_or_default());
                stm.put("z", "done");
                Ok(())
            }
        })
        .await
        .unwrap();
    assert_eq!(done.retries, 0, "read committed does not retry");
    assert_eq!(client.get("y").await.unwrap().unwrap().value, "1");
    assert_eq!(client.get("z").await.unwrap().unwrap().value, "done");
}

/// A closure sees its own writes and the same value for a key read twice; an error from it
/// ends the transaction with nothing written; a serializable one whose read changed runs again.
#[tokio::test]
async fn reads_see_own_writes_errors_write_nothing_conflicts_retry() {
    let server = server();
    let client = client(&server, "stm3").await;
    let r = client
        .stm(Isolation::Serializable, |stm| async move {
            assert_eq!(stm.get("k").await?, None);
            stm.put("k", "v");
            let own = stm.get("k").await?;
            stm.delete("k");
            let gone = stm.get("k").await?;
            Ok((own, gone))
        })
        .await
        .unwrap();
    assert_eq!(r.value, (Some("v".to_owned()), None));
    let e = client
        .stm(Isolation::Serializable, |stm| async move {
            stm.put("never", "1");
            Err::<(), _>(Error::InvalidArgument("the closure gave up".into()))
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)));
    assert!(client.get("never").await.unwrap().is_none());

    client.put("c", "0", None).await.unwrap();
    let mut runs = 0;
    let done = client
        .stm(Isolation::Serializable, |stm| {
            runs += 1;
            let (client, first) = (client.clone(), runs == 1);
            async move {
                let c: i64 = stm.get("c").await?.unwrap().parse().unwrap();
                if first {
                    client.put("c", "5", None).await?;
                }
                stm.put("c", &(c + 1).to_string());
                Ok(())
            }
        })
        .await
        .unwrap();
    assert_eq!((done.retries, runs), (1, 2));
    assert_eq!(
        client.get("c").await.unwrap().unwrap().value,
        "6",
        "no lost update"
    );
}
