//! leasehold demo: two groups of workers, each group sharing one long-lived session, contend
//! for one lock; then one group's process "freezes" while holding it and the lock passes on
//! when that group's lease expires. Ends with a metrics summary and zero live sessions.
//!
//! ```sh
//! cargo run --example demo                      # starts a throwaway redis-server
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example demo
//! ```

use std::time::{Duration, Instant};

use leasehold::{Client, Session, SessionOptions};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

const TTL: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;

    // Keep the server (if we started one) alive until the end.
    let (server, url) = leasehold_testing::url_or_start()?;
    if server.is_some() {
        println!("started a throwaway redis-server at {url}");
    }
    let namespace = format!("demo-{}", std::process::id());
    let client = Client::builder()
        .url(&url)
        .namespace(&namespace)
        .build()
        .await?;
    println!("namespace {namespace:?}, client {}\n", client.id());

    let opts = |label: &str| SessionOptions::new().ttl(TTL).label(label);
    let group_a = client.session_with(opts("group-a")).await?;
    let group_b = client.session_with(opts("group-b")).await?;
    println!("group A session: lease {} (TTL {TTL:?})", group_a.lease());
    println!("group B session: lease {} (TTL {TTL:?})\n", group_b.lease());

    println!("-- phase 1: 6 workers (3 per group, one session per group) take turns --");
    let start = Instant::now();
    let mut workers = Vec::new();
    for (group, session) in [("A", &group_a), ("B", &group_b)] {
        for n in 1..=3 {
            let session = session.clone();
            let who = format!("{group}{n}");
            workers.push(tokio::spawn(work(session, who, start)));
        }
    }
    for w in workers {
        w.await??;
    }

    println!("\n-- phase 2: a group B worker takes the lock, then group B's process freezes --");
    let frozen = group_b.mutex("report")?.lock().await?;
    println!(
        "[B1] acquired, fencing token {}; group B stops renewing (orphaned, as if frozen)",
        frozen.fencing_token()
    );
    group_b.orphan();
    let froze_at = Instant::now();
    let guard = group_a.mutex("report")?.lock().await?;
    println!(
        "[A1] acquired after {:.2} s, when group B's lease expired on the server: fencing token {} > {}",
        froze_at.elapsed().as_secs_f64(),
        guard.fencing_token(),
        frozen.fencing_token()
    );
    // The frozen worker "wakes up": its stale guard can prove nothing.
    match frozen.unlock().await {
        Err(e) => println!("[B1] woke up and tried to unlock: {e}"),
        Ok(()) => println!("[B1] unexpectedly still held the lock"),
    }
    guard.unlock().await?;

    println!("\n-- phase 3: shut down --");
    group_a.close().await?;
    drop(group_a);
    drop(group_b);
    println!("live sessions in this process: {}", client.live_sessions());
    // The orphaned lease is gone from Redis too (expired and swept).
    let leases = client.leases().await?;
    println!("leases left in Redis for {namespace:?}: {}", leases.len());

    println!("\n-- metrics --");
    summary(&snapshotter);
    Ok(())
}

/// Three rounds of lock / work / unlock, printing each acquisition.
async fn work(session: Session, who: String, start: Instant) -> leasehold::Result<()> {
    let mutex = session.mutex("report")?;
    for _ in 0..ROUNDS {
        let asked = Instant::now();
        let guard = mutex.lock().await?;
        println!(
            "[{who}] t={:>5.0} ms  acquired  fencing token {}  (waited {:.1} ms)",
            start.elapsed().as_secs_f64() * 1e3,
            guard.fencing_token(),
            asked.elapsed().as_secs_f64() * 1e3
        );
        tokio::time::sleep(Duration::from_millis(15)).await;
        guard.unlock().await?;
    }
    Ok(())
}

fn summary(snapshotter: &Snapshotter) {
    let mut rows: Vec<(String, String)> = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let name = key.key().name().to_owned();
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = if labels.is_empty() {
            name
        } else {
            format!("{name}{{{}}}", labels.join(","))
        };
        let shown = match value {
            DebugValue::Counter(n) => n.to_string(),
            DebugValue::Gauge(g) => g.into_inner().to_string(),
            DebugValue::Histogram(mut samples) => {
                samples.sort();
                let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].into_inner();
                if name.contains("_seconds") {
                    format!(
                        "n={} p50={:.3} ms p99={:.3} ms",
                        samples.len(),
                        p(0.5) * 1e3,
                        p(0.99) * 1e3
                    )
                } else {
                    format!("n={} p50={} p99={}", samples.len(), p(0.5), p(0.99))
                }
            }
        };
        rows.push((name, shown));
    }
    rows.sort();
    for (name, value) in rows {
        println!("  {name:<50} {value}");
    }
}
