//! The soak (`examples/soak.rs`) in CI form: the same churn of sessions dropped without
//! `close()`, some orphaned, short and small; then every count returns to zero and Redis holds
//! only the keys that outlive sessions by design. Its own test binary: it installs the
//! process-global metrics recorder.

mod support;

// The example's workload, so the test and the soak exercise the same thing.
#[path = "../examples/soak.rs"]
#[allow(dead_code)]
mod soak;

use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use soak::{expected_keys, namespace_keys, settle, Churn, Workload};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churned_sessions_leave_nothing_behind() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("install recorder");

    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "soak").await;
    let workload = Workload {
        ttl: Duration::from_secs(3),
        ..Workload::new(200)
    };
    let tasks = tokio::runtime::Handle::current().metrics();
    let baseline_tasks = tasks.num_alive_tasks();

    let churn = Churn::start(&client, &workload);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(client.live_sessions() > 0, "sessions in flight");
    let stats = churn.stop().await;
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "{} cycles: {} acquired, {} refused, {} timed out, {} puts, {} led, {} orphaned",
        n(&stats.cycles),
        n(&stats.acquired),
        n(&stats.refused),
        n(&stats.timed_out),
        n(&stats.puts),
        n(&stats.led),
        n(&stats.orphaned)
    );
    assert_eq!(
        n(&stats.errors),
        0,
        "first error: {:?}",
        stats.first_error()
    );
    for (what, count) in [
        ("acquisitions", &stats.acquired),
        ("puts", &stats.puts),
        ("campaigns", &stats.led),
        ("orphans", &stats.orphaned),
    ] {
        assert!(n(count) > 0, "the churn did no {what}");
    }

    // Every handle is gone with its worker: nothing live, by the count and by the gauge.
    assert_eq!(client.live_sessions(), 0);
    let gauge = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(k, ..)| k.key().name() == "leasehold_sessions_live")
        .map(|(.., v)| v);
    match gauge {
        Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), 0.0),
        other => panic!("leasehold_sessions_live: {other:?}"),
    }

    // Dropped sessions were revoked; orphaned ones expire and are swept, with nobody left to
    // renew: the registry empties within TTL + a few renewal intervals, and the tasks are
    // those from before the churn.
    let bound = workload.settle_bound();
    let settled = settle(&client, &raw, baseline_tasks, bound).await.unwrap();
    println!("settled after {:?}: {settled:?}", settled.waited);
    assert_eq!(
        settled.registry, 0,
        "lease registry not empty after {bound:?}"
    );
    assert!(
        settled.tasks <= baseline_tasks,
        "tokio tasks: {} now, {baseline_tasks} before the churn",
        settled.tasks
    );
    assert!(client.leases().await.unwrap().is_empty());

    // No lock queue, attachment set, lease hash, key or index is left: only the revision
    // counter and the elections' logs, which expire an hour after their last candidate left.
    assert_eq!(
        namespace_keys(&raw, "soak").await.unwrap(),
        expected_keys("soak", &workload)
    );
    for e in workload.election_names() {
        let pttl: i64 = cmd(&raw, "PTTL", &[&format!("{{soak}}:election-log:{e}")])
            .await
            .unwrap();
        assert!(pttl > 0 && pttl <= 3_600_000, "{e}: PTTL {pttl}");
    }
}
