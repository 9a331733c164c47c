//! Transactions on keys (`Client::txn`) and writes guarded by lock ownership (`guard.put`).

mod support;

use std::time::Duration;

use leasehold::{Compare, CompareOp, Error, SessionOptions, TxnOp};
use support::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// etcd's compare-and-swap: the `then` branch runs only when the value is the expected one,
/// the `else` branch otherwise, and the revision is the put's.
#[tokio::test]
async fn compare_and_swap_runs_one_branch() {
    let server = server();
    let client = client(&server, "t1").await;
    client.put("cfg", "v1", None).await.unwrap();
    let swap = |from: &str, to: &str| {
        client
            .txn()
            .when(Compare::value("cfg", CompareOp::Equal, from))
            .then(TxnOp::put("cfg", to))
            .otherwise(TxnOp::put("lost-race", from))
    };
    let r = swap("v1", "v2").commit().await.unwrap();
    assert!(r.succeeded);
    let kv = client.get("cfg").await.unwrap().unwrap();
    assert_eq!((kv.value.as_str(), kv.mod_revision), ("v2", r.revision));
    let r = swap("v1", "v3").commit().await.unwrap();
    assert!(!r.succeeded);
    assert_eq!(client.get("cfg").await.unwrap().unwrap().value, "v2");
    assert_eq!(client.get("lost-race").await.unwrap().unwrap().value, "v1");
}

/// Compares on revisions and existence: create-if-absent, update-if-unchanged, delete.
#[tokio::test]
async fn revision_and_existence_compares() {
    let server = server();
    let client = client(&server, "t2").await;
    let create = || {
        client
            .txn()
            .when(Compare::missing("k"))
            .then(TxnOp::put("k", "first"))
    };
    assert!(create().commit().await.unwrap().succeeded);
    assert!(!create().commit().await.unwrap().succeeded, "created once");
    let rev = client.get("k").await.unwrap().unwrap().mod_revision;
    let update = |seen: u64, value: &str| {
        client
            .txn()
            .when(Compare::mod_revision("k", CompareOp::Equal, seen))
            .then(TxnOp::put("k", value))
    };
    let r = update(rev, "second").commit().await.unwrap();
    assert!(r.succeeded);
    assert!(!update(rev, "stale").commit().await.unwrap().succeeded);
    for (op, against, holds) in [
        (CompareOp::Less, r.revision + 1, true),
        (CompareOp::Less, r.revision, false),
        (CompareOp::Greater, r.revision - 1, true),
        (CompareOp::Greater, r.revision, false),
    ] {
        let t = client
            .txn()
            .when(Compare::mod_revision("k", op, against))
            .commit()
            .await
            .unwrap();
        assert_eq!(t.succeeded, holds, "{op:?} {against}");
    }
    let r = client
        .txn()
        .when(Compare::exists("k"))
        .when(Compare::value("k", CompareOp::NotEqual, "first"))
        .then(TxnOp::delete("k"))
        .commit()
        .await
        .unwrap();
    assert!(r.succeeded);
    assert!(client.get("k").await.unwrap().is_none());
    // An absent key's mod revision is 0, and it has no value.
    let absent = client
        .txn()
        .when(Compare::mod_revision("k", CompareOp::Equal, 0))
        .when(Compare::value("k", CompareOp::NotEqual, ""))
        .commit()
        .await
        .unwrap();
    assert!(absent.succeeded);
}

/// Compares on leases, and puts with a lease: a put naming a dead lease writes nothing.
#[tokio::test]
async fn lease_compares_and_puts_with_a_lease() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "t3").await;
    let session = client.session().await.unwrap();
    let r = client
        .txn()
        .when(Compare::alive(&session))
        .then(TxnOp::put_with_lease("member", "a", session.lease()))
        .commit()
        .await
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(
        client.get("member").await.unwrap().unwrap().lease,
        Some(session.lease())
    );
    let lease = session.lease();
    session.close().await.unwrap();
    assert!(
        client.get("member").await.unwrap().is_none(),
        "gone with it"
    );
    let r = client
        .txn()
        .when(Compare::lease_alive(lease))
        .then(TxnOp::put("x", "1"))
        .otherwise(TxnOp::put("y", "1"))
        .commit()
        .await
        .unwrap();
    assert!(!r.succeeded);
    let before = keys(&raw, "{t3}:key:*").await;
    let e = client
        .txn()
        .then(TxnOp::put("z", "1"))
        .then(TxnOp::put_with_lease("w", "1", lease))
        .commit()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::LeaseNotFound { .. }), "{e}");
    assert_eq!(keys(&raw, "{t3}:key:*").await, before, "nothing written");
}

/// Bad input is refused before any I/O, foreign data at a key fails typed, and neither writes.
#[tokio::test]
async fn bad_transactions_are_refused_and_write_nothing() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "t4").await;
    let cases = [
        client
            .txn()
            .when(Compare::mod_revision("k", CompareOp::NotEqual, 1)),
        client.txn().when(Compare::value("k", CompareOp::Less, "1")),
        client.txn().then(TxnOp::put("", "1")),
    ];
    for txn in cases {
        let e = txn.commit().await.unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(_) | Error::InvalidName { .. }),
            "{e}"
        );
    }
    let big = "x".repeat(leasehold::MAX_VALUE_LEN + 1);
    let e = client
        .txn()
        .then(TxnOp::put("k", &big))
        .commit()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ValueTooLarge { .. }), "{e}");
    let mut txn = client.txn();
    for i in 0..=leasehold::MAX_TXN_ITEMS {
        txn = txn.then(TxnOp::put(&format!("k{i}"), "v"));
    }
    assert!(matches!(txn.commit().await, Err(Error::InvalidArgument(_))));
    // At the limit it runs.
    let mut txn = client.txn();
    for i in 0..leasehold::MAX_TXN_ITEMS {
        txn = txn.then(TxnOp::put(&format!("k{i}"), "v"));
    }
    assert!(txn.commit().await.unwrap().succeeded);
    assert_eq!(
        zcard(&raw, "{t4}:keys").await,
        leasehold::MAX_TXN_ITEMS as u64
    );

    let _: () = cmd(&raw, "SET", &["{t4}:key:foreign", "not a hash"])
        .await
        .unwrap();
    let before = keys(&raw, "{t4}:*").await;
    let e = client
        .txn()
        .then(TxnOp::put("fresh", "1"))
        .then(TxnOp::put("foreign", "1"))
        .commit()
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::WrongType { ref key, .. } if key == "{t4}:key:foreign"),
        "{e}"
    );
    assert_eq!(keys(&raw, "{t4}:*").await, before, "nothing written");
}

/// A holder whose lease ended (revoked, or expired while it was paused) and whose lock went to
/// the next holder never writes through its guard: 0 stale writes over 1,000 rounds, and the
/// next holder's writes land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_holder_never_writes_through_its_guard() {
    let server = server();
    let client = client(&server, "t5").await;
    let admin = support::client(&server, "t5").await;
    let mut stale = 0;
    for round in 0..1000 {
        let (a, b) = (
            client.session().await.unwrap(),
            client.session().await.unwrap(),
        );
        let old = a.mutex("m").unwrap().lock().await.unwrap();
        old.put("k", &format!("a{round}")).await.unwrap();
        let next = spawn_lock_guard(b.mutex("m").unwrap());
        admin.revoke(a.lease()).await.unwrap();
        let new = next.await.unwrap().unwrap();
        match old.put("k", &format!("stale{round}")).await {
            Err(Error::NotHeld { .. }) => {}
            Ok(_) => stale += 1,
            Err(e) => panic!("round {round}: {e}"),
        }
        assert!(matches!(old.delete("k").await, Err(Error::NotHeld { .. })));
        new.put("k", &format!("b{round}")).await.unwrap();
        assert_eq!(
            client.get("k").await.unwrap().unwrap().value,
            format!("b{round}")
        );
        new.unlock().await.unwrap();
        drop((old, a, b));
    }
    assert_eq!(stale, 0, "stale writes");

    // Paused past its TTL: the session stops renewing (as in a long pause), its lease
    // expires, the next holder takes the lock; the old guard's write is refused.
    let a = client
        .session_with(SessionOptions::new().ttl(secs(1)))
        .await
        .unwrap();
    let b = client.session().await.unwrap();
    let old = a.mutex("m").unwrap().lock().await.unwrap();
    a.orphan();
    let new = tokio::time::timeout(secs(10), b.mutex("m").unwrap().lock())
        .await
        .expect("the next holder gets it once the lease expired")
        .unwrap();
    assert!(matches!(
        old.put("k", "stale").await,
        Err(Error::NotHeld { .. })
    ));
    new.put("k", "fresh").await.unwrap();
    assert_eq!(client.get("k").await.unwrap().unwrap().value, "fresh");
}

/// The other guards write the same way, and their `held()` compare composes with others.
#[tokio::test]
async fn rwlock_and_semaphore_guards_write_while_held() {
    let server = server();
    let client = client(&server, "t6").await;
    let session = client.session().await.unwrap();
    let w = session.rwlock("rw").unwrap().write().await.unwrap();
    w.put("a", "1").await.unwrap();
    let permit = session.semaphore("s", 2).unwrap().acquire().await.unwrap();
    let r = client
        .txn()
        .when(w.held())
        .when(permit.held())
        .when(Compare::value("a", CompareOp::Equal, "1"))
        .then(TxnOp::put("b", "2"))
        .commit()
        .await
        .unwrap();
    assert!(r.succeeded);
    w.unlock().await.unwrap();
    permit.release().await.unwrap();
    assert_eq!(client.get("b").await.unwrap().unwrap().value, "2");
}

/// `spawn_lock`, keeping the guard.
fn spawn_lock_guard(
    mutex: leasehold::Mutex,
) -> tokio::task::JoinHandle<leasehold::Result<leasehold::MutexGuard>> {
    tokio::spawn(async move { mutex.lock().await })
}
