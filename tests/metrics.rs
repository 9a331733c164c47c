//! Metrics reach an installed recorder (own test binary: the recorder is process-global).

mod support;

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use support::*;

#[tokio::test]
async fn metrics_are_recorded_and_described() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("install recorder");
    leasehold::metrics::describe();

    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "mx").await;
    let a = client
        .session_with(leasehold::SessionOptions::new().ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    let b = client.session().await.unwrap();
    // Made before the eviction policy below, which a new client refuses.
    let alone = support::client(&server, "mx-lost").await;
    let c = alone.session().await.unwrap();
    let g = a.mutex("m").unwrap().lock().await.unwrap();
    let m = b.mutex("m").unwrap();
    let w = spawn_lock(m);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(g);
    w.await.unwrap().unwrap();
    flush_scripts(&raw).await;
    // Scripts used before the flush are loaded again: reloads.
    let g = b.mutex("m2").unwrap().lock().await.unwrap();
    g.unlock().await.unwrap();
    let _: () = cmd(&raw, "CONFIG", &["SET", "maxmemory-policy", "allkeys-lru"])
        .await
        .unwrap();
    // Renewals, one after the flush and the policy change.
    tokio::time::sleep(Duration::from_millis(800)).await;
    // A session a lock call finds gone (its lease deleted behind its back) is lost once, and
    // counted once, whoever notices first.
    let id = c.lease().to_string();
    let _: () = cmd(&raw, "ZREM", &["{mx-lost}:leases", &id]).await.unwrap();
    let _: () = cmd(&raw, "DEL", &[&format!("{{mx-lost}}:lease:{id}")])
        .await
        .unwrap();
    let e = c.mutex("m").unwrap().lock().await.unwrap_err();
    assert!(
        matches!(
            e,
            leasehold::Error::SessionLost {
                reason: leasehold::SessionEnd::LeaseNotFound,
                ..
            }
        ),
        "{e}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(c);
    drop(alone);

    a.close().await.unwrap();
    drop(a);
    drop(b);
    // b's revoke, sent by its drop, done.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let snap = snapshot_map(&snapshotter);
    let get = |name: &str| -> Vec<(MetricKind, &DebugValue)> {
        snap.iter()
            .filter(|(k, _, _)| k.as_str() == name)
            .map(|(_, kind, v)| (*kind, v))
            .collect()
    };
    let counter = |name: &str| -> u64 {
        get(name)
            .into_iter()
            .map(|(_, v)| match v {
                DebugValue::Counter(n) => *n,
                other => panic!("{name}: {other:?}"),
            })
            .sum()
    };
    assert_eq!(counter("leasehold_leases_granted_total"), 3);
    // a closed, b dropped; c's lease was gone already.
    assert_eq!(counter("leasehold_leases_revoked_total"), 2);
    assert!(counter("leasehold_renew_calls_total") >= 1);
    assert_eq!(counter("leasehold_lock_handoffs_total"), 1);
    assert_eq!(counter("leasehold_session_lost_total"), 1);
    match get("leasehold_sessions_live")[0].1 {
        DebugValue::Gauge(v) => assert_eq!(v.into_inner(), 0.0, "both sessions dropped"),
        other => panic!("{other:?}"),
    }
    // The first load of each script is not a reload: only the loads after the SCRIPT FLUSH
    // count, one per script used both before and after it (lock, unlock, maybe renew).
    let reloads = counter("leasehold_script_reloads_total");
    assert!((1..=4).contains(&reloads), "{reloads} reloads");
    // Both guards went: the oldest held mutex is 0 s old again.
    match get("leasehold_lock_oldest_held_seconds")[0].1 {
        DebugValue::Gauge(v) => assert_eq!(v.into_inner(), 0.0),
        other => panic!("{other:?}"),
    }
    match get("leasehold_redis_can_evict")[0].1 {
        DebugValue::Gauge(v) => assert_eq!(v.into_inner(), 1.0, "the policy set at run time"),
        other => panic!("{other:?}"),
    }
    for h in [
        "leasehold_lock_wait_seconds",
        "leasehold_lock_hold_seconds",
        "leasehold_renew_latency_seconds",
        "leasehold_renew_headroom_seconds",
    ] {
        let samples: usize = get(h)
            .into_iter()
            .map(|(_, v)| match v {
                DebugValue::Histogram(s) => s.len(),
                other => panic!("{h}: {other:?}"),
            })
            .sum();
        assert!(samples > 0, "{h} has samples");
    }
}

fn snapshot_map(s: &metrics_util::debugging::Snapshotter) -> Vec<(String, MetricKind, DebugValue)> {
    s.snapshot()
        .into_vec()
        .into_iter()
        .map(|(ck, _unit, _desc, v)| (ck.key().name().to_owned(), ck.kind(), v))
        .collect()
}
