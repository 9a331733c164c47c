//! Watches on keys (`Client::watch`).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use leasehold::{TxnOp, WatchEvent, WatchOptions};
use support::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

async fn next<S: Stream<Item = leasehold::Result<WatchEvent>> + Unpin>(s: &mut S) -> WatchEvent {
    tokio::time::timeout(secs(10), s.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("no error")
}

/// Puts, deletes and a key deleted with its lease, in revision order, from now.
#[tokio::test]
async fn a_watch_sees_puts_deletes_and_lease_deletions_in_order() {
    let server = server();
    let client = client(&server, "w1").await;
    client.put("m/old", "before the watch", None).await.unwrap();
    let mut w = Box::pin(
        client
            .watch("m/", WatchOptions::new().prefix())
            .await
            .unwrap(),
    );
    let mut exact = Box::pin(client.watch("m/a", WatchOptions::new()).await.unwrap());
    let session = client.session().await.unwrap();
    let r1 = client.put("m/a", "1", None).await.unwrap();
    let r2 = session.put("m/b", "2").await.unwrap();
    client.put("other", "x", None).await.unwrap();
    assert!(client.delete("m/a").await.unwrap());
    session.close().await.unwrap();
    let events = [
        next(&mut w).await,
        next(&mut w).await,
        next(&mut w).await,
        next(&mut w).await,
    ];
    assert_eq!(
        events[0],
        WatchEvent::Put {
            key: "m/a".into(),
            value: "1".into(),
            lease: None,
            revision: r1
        }
    );
    assert!(
        matches!(&events[1], WatchEvent::Put { key, lease: Some(l), revision, .. }
        if key == "m/b" && *l == session.lease() && *revision == r2)
    );
    assert!(matches!(&events[2], WatchEvent::Delete { key, .. } if key == "m/a"));
    assert!(matches!(&events[3], WatchEvent::Delete { key, .. } if key == "m/b"));
    assert!(events.windows(2).all(|p| p[0].revision() < p[1].revision()));
    // The exact watch saw only m/a.
    assert!(matches!(next(&mut exact).await, WatchEvent::Put { key, .. } if key == "m/a"));
    assert!(matches!(next(&mut exact).await, WatchEvent::Delete { key, .. } if key == "m/a"));
}

/// From a past revision: the events at it and after.
#[tokio::test]
async fn a_watch_from_a_revision_replays_what_the_log_has() {
    let server = server();
    let client = client(&server, "w2").await;
    client.put("x", "1", None).await.unwrap();
    let second = client.put("x", "2", None).await.unwrap();
    client.put("x", "3", None).await.unwrap();
    let mut w = Box::pin(
        client
            .watch("x", WatchOptions::new().start_revision(second))
            .await
            .unwrap(),
    );
    for want in ["2", "3"] {
        assert!(matches!(next(&mut w).await, WatchEvent::Put { value, .. } if value == want));
    }
}

/// A watch behind what the log keeps is told so, then goes on with the oldest event kept.
#[tokio::test]
async fn a_watch_that_fell_behind_the_log_is_told() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "w3").await;
    let first = client.put("k/0", "0", None).await.unwrap();
    // More events than the log keeps, 128 per call.
    let mut written = 1;
    while written < leasehold::KV_EVENT_LOG_ENTRIES + 300 {
        let mut txn = client.txn();
        for i in 0..leasehold::MAX_TXN_ITEMS {
            txn = txn.then(TxnOp::put(&format!("k/{}", (written + i) % 50), "v"));
        }
        txn.commit().await.unwrap();
        written += leasehold::MAX_TXN_ITEMS;
    }
    let kept: u64 = cmd(&raw, "XLEN", &["{w3}:kv-events"]).await.unwrap();
    assert!(
        kept as usize <= leasehold::KV_EVENT_LOG_ENTRIES + 200,
        "{kept} kept"
    );
    let mut w = Box::pin(
        client
            .watch("k/", WatchOptions::new().prefix().start_revision(first))
            .await
            .unwrap(),
    );
    assert!(matches!(next(&mut w).await, WatchEvent::Compacted { .. }));
    let after = next(&mut w).await;
    assert!(matches!(after, WatchEvent::Put { .. }));
    assert!(after.revision() > first);
}

/// 10,000 puts and deletes from 4 writers while 3 watchers read, one of them slowly: what each
/// watcher saw, applied in order (resyncing from `get_prefix` when told it fell behind), is
/// exactly the final state, and its revisions never go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_change_of_concurrent_writers() {
    const WRITERS: usize = 4;
    const OPS: usize = 10_000;
    let server = server();
    let client = client(&server, "w4").await;
    let watchers: Vec<_> = (0..3)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                let options = WatchOptions::new().prefix().start_revision(1);
                let mut w = Box::pin(client.watch("", options).await.unwrap());
                let mut state: BTreeMap<String, String> = BTreeMap::new();
                let (mut last, mut seen, mut resyncs) = (0, 0u64, 0);
                loop {
                    let ev = next(&mut w).await;
                    assert!(ev.revision() >= last, "watcher {n}: revision went back");
                    last = ev.revision();
                    seen += 1;
                    if n == 2 && seen % 100 == 0 {
                        // The slow one.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    match ev {
                        WatchEvent::Put { key, .. } if key == "done" => break,
                        WatchEvent::Put { key, value, .. } => {
                            state.insert(key, value);
                        }
                        WatchEvent::Delete { key, .. } => {
                            state.remove(&key);
                        }
                        WatchEvent::Compacted { .. } => {
                            resyncs += 1;
                            let page = client.get_prefix("", 10_000, None).await.unwrap();
                            state = page.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
                        }
                        other => panic!("{other:?}"),
                    }
                }
                (state, seen, resyncs)
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..OPS / WRITERS {
                    let key = format!("k{}", (i * 7 + t * 13) % 64);
                    if i % 3 == 2 {
                        client.delete(&key).await.unwrap();
                    } else {
                        client.put(&key, &format!("{t}:{i}"), None).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let final_state: BTreeMap<String, String> = client
        .get_prefix("", 10_000, None)
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    client.put("done", "", None).await.unwrap();
    for (n, w) in watchers.into_iter().enumerate() {
        let (state, seen, resyncs) = w.await.unwrap();
        assert_eq!(
            state, final_state,
            "watcher {n} ({seen} events, {resyncs} resyncs)"
        );
        eprintln!("watcher {n}: {seen} events, {resyncs} resyncs");
    }
}

/// A key whose lease expired, put again before any sweep deleted it: watches see its delete,
/// then the new put (the sweep logs nothing more, the key being someone else's now).
#[tokio::test]
async fn a_key_put_again_after_its_lease_expired_shows_its_delete() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "w5").await;
    let lease = client.grant(secs(60)).await.unwrap();
    client.put("k", "leased", Some(lease.id)).await.unwrap();
    let mut w = Box::pin(client.watch("k", WatchOptions::new()).await.unwrap());
    // Expired by the registry, not swept yet.
    let _: i64 = cmd(&raw, "ZADD", &["{w5}:leases", "1", &lease.id.to_string()])
        .await
        .unwrap();
    client.put("k", "again", None).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Delete { key, .. } if key == "k"));
    assert!(matches!(next(&mut w).await, WatchEvent::Put { value, .. } if value == "again"));
}
