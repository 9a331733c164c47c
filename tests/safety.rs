//! The safety suite: several client *processes* contend for one mutex under injected faults,
//! and a fencing-aware resource plus the holders' own reports are checked for:
//!
//! 1. the resource never accepts a write whose token is lower than one it already accepted
//!    (it rejects them, as a fencing-aware store does; rejections are counted);
//! 2. no two clients believe, by their local validity, that they hold the lock at the same
//!    instant (holds are intervals on the machine-wide monotonic clock, from `lock()` returning
//!    to the earlier of release and the session's validity);
//! 3. every acquisition's fencing token is greater than every earlier one;
//! 4. progress: after a fault heals, the lock is acquired again within TTL + the renewal
//!    interval (TTL/3), plus 1 s of slack for process scheduling.
//!
//! The client processes are this test binary re-run as `checker_child` (ignored when run
//! normally), each behind its own loopback proxy so one client can be partitioned alone; they,
//! the resource and the checks are `tests/support/checker.rs`, shared with
//! `tests/safety_spread.rs` (the same checks on the many locks of a spread namespace).
//! Short schedules run in `cargo test`; the long run is
//! `cargo test --release --test safety -- --ignored long_run --nocapture`
//! (`LEASEHOLD_SAFETY_ACQUISITIONS`, default 100000; `LEASEHOLD_SAFETY_SEED`;
//! `LEASEHOLD_SAFETY_TASKS` contenders per process, default 8, so that lock calls batch).

#[path = "support/checker.rs"]
mod checker;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use checker::{mono_ns, violations_of, ChildConfig, Hold, Outcome, Resource};
use leasehold_testing::{Proxy, RedisServer};
use tokio::process::Child;

const NAMESPACE: &str = "safety";

/// Entry point of a client process (not a test of its own: the schedules run it).
#[test]
#[ignore = "run as a child process by the safety schedules"]
fn checker_child() {
    checker::child_main();
}

// ---------------------------------------------------------------------------------------------
// Schedules.

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The current holder's connections (the last writer's) blackholed for this long.
    PartitionClient(Duration),
    /// The current holder's process SIGSTOPped for this long (a GC pause), then SIGCONT.
    PauseClient(Duration),
    /// redis-server SIGSTOPped for this long.
    PauseRedis(Duration),
    /// redis-server killed and restarted empty.
    RestartRedis,
    /// SCRIPT FLUSH and FUNCTION FLUSH.
    ScriptFlush,
    /// Every client's traffic delayed by 20 ms each way for this long.
    Latency(Duration),
    /// Every client's connections reset at once (they reconnect).
    CutConnections,
}

struct Run {
    server: RedisServer,
    resource: Resource,
    proxies_ctl: Vec<Arc<Proxy>>,
    children: Vec<Child>,
    /// Contenders per child process.
    tasks: usize,
    ttl: Duration,
    heals: Vec<u64>,
}

impl Run {
    /// `clients` processes of `tasks` contenders each.
    async fn start(
        clients: usize,
        tasks: usize,
        ttl: Duration,
        hold: Duration,
        careless: bool,
    ) -> Run {
        let server = support::server();
        let resource = Resource::start().await;
        let mut proxies_ctl = Vec::new();
        let mut children = Vec::new();
        for id in 0..clients {
            let proxy = Arc::new(Proxy::start(server.port()).await.unwrap());
            let config = ChildConfig {
                ttl,
                hold,
                careless,
                tasks,
                ..ChildConfig::single(proxy.url(), NAMESPACE, resource.port, id)
            };
            proxies_ctl.push(proxy);
            children.push(checker::spawn_child(&config));
        }
        Run {
            server,
            resource,
            proxies_ctl,
            children,
            tasks,
            ttl,
            heals: Vec::new(),
        }
    }

    fn signal_child(&self, i: usize, sig: i32) {
        if let Some(pid) = self.children[i].id() {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(pid as i32, sig) };
        }
    }

    async fn inject(&mut self, fault: Fault) {
        let holder = self.resource.ledger.lock().unwrap().last_writer / self.tasks;
        match fault {
            Fault::PartitionClient(d) => {
                self.proxies_ctl[holder].blackhole();
                tokio::time::sleep(d).await;
                self.proxies_ctl[holder].heal();
            }
            Fault::PauseClient(d) => {
                self.signal_child(holder, libc::SIGSTOP);
                tokio::time::sleep(d).await;
                self.signal_child(holder, libc::SIGCONT);
            }
            Fault::PauseRedis(d) => {
                self.server.pause().unwrap();
                tokio::time::sleep(d).await;
                self.server.resume().unwrap();
            }
            Fault::RestartRedis => self.server.restart().unwrap(),
            Fault::ScriptFlush => {
                self.server.command(&["SCRIPT", "FLUSH"]).unwrap();
                // Absent before Redis 7.
                let _ = self.server.command(&["FUNCTION", "FLUSH"]);
            }
            Fault::CutConnections => {
                for p in &self.proxies_ctl {
                    p.cut();
                }
            }
            Fault::Latency(d) => {
                for p in &self.proxies_ctl {
                    p.delay(Duration::from_millis(20));
                }
                tokio::time::sleep(d).await;
                for p in &self.proxies_ctl {
                    p.heal();
                }
            }
        }
        self.heals.push(mono_ns());
    }

    /// Stop the clients and check every property.
    async fn finish(mut self) -> Outcome {
        self.resource
            .finish(&mut self.children, &self.heals, self.ttl)
            .await
    }
}

/// Run `fault` once among 3 client processes of one contender each, and check everything.
async fn schedule(fault: Fault) {
    schedule_with(fault, 3, 1).await;
}

/// Run `fault` once among `clients` processes of `tasks` contenders each, holding for `hold`
/// each time, and check everything. Faults aimed at the holder use a long hold, so that they
/// land inside a hold.
async fn schedule_with(fault: Fault, clients: usize, tasks: usize) -> Outcome {
    let ttl = Duration::from_secs(2);
    let hold = match fault {
        Fault::PartitionClient(_) | Fault::PauseClient(_) => Duration::from_millis(300),
        _ => Duration::from_millis(5),
    };
    let mut run = Run::start(clients, tasks, ttl, hold, false).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // warm up: some acquisitions first
    run.inject(fault).await;
    tokio::time::sleep(ttl * 2 + Duration::from_secs(1)).await;
    let o = run.finish().await;
    println!(
        "{fault:?}, {clients}x{tasks} contenders: {} acquisitions, {} stale writes rejected, \
         {} lock batches ({} calls), {} violations",
        o.acquisitions,
        o.rejected,
        o.batches,
        o.batched_calls,
        o.violations.len()
    );
    assert!(o.acquisitions >= 5, "{fault:?}: the clients made progress");
    assert!(o.violations.is_empty(), "{fault:?}: {:#?}", o.violations);
    o
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_of_one_client_shorter_than_the_ttl() {
    schedule(Fault::PartitionClient(secs(1.0))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_of_one_client_longer_than_the_ttl() {
    schedule(Fault::PartitionClient(secs(3.0))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_paused_past_its_ttl() {
    schedule(Fault::PauseClient(secs(3.0))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_briefly() {
    schedule(Fault::PauseRedis(secs(0.6))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_past_the_ttl() {
    schedule(Fault::PauseRedis(secs(3.0))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty() {
    schedule(Fault::RestartRedis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_run() {
    schedule(Fault::ScriptFlush).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_cut() {
    schedule(Fault::CutConnections).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_latency() {
    schedule(Fault::Latency(secs(2.0))).await;
}

/// Eight contenders per process: more lock calls than a client keeps in flight, so some go out
/// in shared script calls (batches), and every connection is cut mid-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_contenders_with_every_connection_cut() {
    let o = schedule_with(Fault::CutConnections, 2, 8).await;
    assert!(o.batches > 0, "the contenders' lock calls formed batches");
}

/// Negative control: `client_paused_past_its_ttl` with clients that ignore their session's
/// validity must be caught overlapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_client_that_ignores_its_validity() {
    let ttl = Duration::from_secs(2);
    let mut run = Run::start(3, 1, ttl, Duration::from_millis(300), true).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.inject(Fault::PauseClient(secs(3.0))).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let violations = run.finish().await.violations;
    println!(
        "careless clients: {} violations, e.g. {:?}",
        violations.len(),
        violations.first()
    );
    assert!(
        violations.iter().any(|v| v.starts_with("overlap")),
        "a careless client paused inside its hold overlaps the next holder"
    );
}

#[test]
fn the_checker_catches_overlaps_falling_tokens_and_stalls() {
    let ttl = Duration::from_secs(2);
    let h = |client, token, start, end| Hold {
        client,
        name: 0,
        token,
        start,
        end,
    };
    assert!(violations_of(&[h(0, 1, 0, 10), h(1, 2, 10, 20)], &[], ttl).is_empty());
    assert_eq!(
        violations_of(&[h(0, 1, 0, 10), h(1, 2, 9, 20)], &[], ttl).len(),
        1
    );
    // A long hold overlapping a later, non-adjacent one is caught too.
    assert_eq!(
        violations_of(
            &[h(0, 1, 0, 100), h(1, 2, 10, 20), h(2, 3, 50, 60)],
            &[],
            ttl
        )
        .len(),
        2
    );
    assert_eq!(
        violations_of(&[h(0, 2, 0, 10), h(1, 1, 10, 20)], &[], ttl).len(),
        1
    );
    let heal = 1_000;
    let late = heal + ttl.as_nanos() as u64 * 2;
    assert_eq!(
        violations_of(&[h(0, 1, 0, 10), h(1, 2, late, late + 1)], &[heal], ttl).len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// The long run.

/// All schedules in a random order (seeded) until enough acquisitions, then a table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: cargo test --release --test safety -- --ignored long_run --nocapture"]
async fn long_run() {
    let want: usize = std::env::var("LEASEHOLD_SAFETY_ACQUISITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut seed: u64 = std::env::var("LEASEHOLD_SAFETY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| mono_ns() | 1);
    println!("seed {seed} (LEASEHOLD_SAFETY_SEED={seed} to repeat)");
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let tasks: usize = std::env::var("LEASEHOLD_SAFETY_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let ttl = Duration::from_secs(2);
    let mut run = Run::start(4, tasks, ttl, Duration::from_millis(2), false).await;
    let started = Instant::now();
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let acquired = run.resource.ledger.lock().unwrap().holds.len();
        if acquired >= want || started.elapsed() > Duration::from_secs(3000) {
            break;
        }
        tokio::time::sleep(secs(1.0 + rand(3000) as f64 / 1000.0)).await;
        let d = secs(0.2 + rand(3500) as f64 / 1000.0);
        let fault = match rand(7) {
            0 => Fault::PartitionClient(d),
            1 => Fault::PauseClient(d),
            2 => Fault::PauseRedis(d),
            3 => Fault::RestartRedis,
            4 => Fault::ScriptFlush,
            5 => Fault::CutConnections,
            _ => Fault::Latency(d),
        };
        let kind = format!("{fault:?}");
        let kind = kind.split('(').next().unwrap_or("").to_owned();
        *faults.entry(kind).or_default() += 1;
        run.inject(fault).await;
    }
    tokio::time::sleep(ttl * 2).await;
    let elapsed = started.elapsed();
    let o = run.finish().await;
    println!("\n| fault | injected |\n|---|---|");
    for (k, n) in &faults {
        println!("| {k} | {n} |");
    }
    println!(
        "\n| processes x contenders | TTL | run time | acquisitions | faults | lock batches (calls) | stale writes rejected | violations |\n\
         |---|---|---|---|---|---|---|---|\n| 4 x {tasks} | {ttl:?} | {:.0} s | {} | {} | {} ({}) | {} | {} |",
        elapsed.as_secs_f64(),
        o.acquisitions,
        faults.values().sum::<usize>(),
        o.batches,
        o.batched_calls,
        o.rejected,
        o.violations.len()
    );
    for v in o.violations.iter().take(20) {
        println!("VIOLATION {v}");
    }
    assert!(o.violations.is_empty());
}
