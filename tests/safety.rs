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
//! normally), each behind its own loopback proxy so one client can be partitioned alone.
//! Short schedules run in `cargo test`; the long run is
//! `cargo test --release --test safety -- --ignored long_run --nocapture`
//! (`LEASEHOLD_SAFETY_ACQUISITIONS`, default 100000; `LEASEHOLD_SAFETY_SEED`;
//! `LEASEHOLD_SAFETY_TASKS` contenders per process, default 8, so that lock calls batch).

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leasehold::{Client, SessionOptions};
use leasehold_testing::{Proxy, RedisServer};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const CHILD_ENV: &str = "LEASEHOLD_CHECKER_CHILD";
const NAMESPACE: &str = "safety";

/// Nanoseconds on CLOCK_MONOTONIC: the same clock in every process of the machine, so holds
/// reported by different processes compare.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An `Instant` on the monotonic clock, in [`mono_ns`] units.
fn instant_ns(t: Instant) -> u64 {
    let (now, now_ns) = (Instant::now(), mono_ns());
    if t >= now {
        now_ns + (t - now).as_nanos() as u64
    } else {
        now_ns.saturating_sub((now - t).as_nanos() as u64)
    }
}

// ---------------------------------------------------------------------------------------------
// The client process.

/// What a child is told, as `url ttl_ms hold_ms resource_port id max_secs careless tasks`.
struct ChildConfig {
    url: String,
    ttl: Duration,
    hold: Duration,
    resource: u16,
    id: usize,
    max: Duration,
    /// Report holds as lasting until release, ignoring the session's validity: what a client
    /// that does not check `is_valid()` believes. Only for the negative control.
    careless: bool,
    /// Contenders in this process, each with its own session, sharing one `Client`. With more
    /// than the client keeps in flight, their lock calls go out in batches.
    tasks: usize,
}

impl ChildConfig {
    fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {}",
            self.url,
            self.ttl.as_millis(),
            self.hold.as_millis(),
            self.resource,
            self.id,
            self.max.as_secs(),
            self.careless as u8,
            self.tasks
        )
    }

    fn decode(s: &str) -> Option<ChildConfig> {
        let f: Vec<&str> = s.split(' ').collect();
        Some(ChildConfig {
            url: f.first()?.to_string(),
            ttl: Duration::from_millis(f.get(1)?.parse().ok()?),
            hold: Duration::from_millis(f.get(2)?.parse().ok()?),
            resource: f.get(3)?.parse().ok()?,
            id: f.get(4)?.parse().ok()?,
            max: Duration::from_secs(f.get(5)?.parse().ok()?),
            careless: f.get(6)? == &"1",
            tasks: f.get(7)?.parse().ok()?,
        })
    }
}

/// Entry point of a client process (not a test of its own: the schedules run it).
#[test]
#[ignore = "run as a child process by the safety schedules"]
fn checker_child() {
    let Some(config) = std::env::var(CHILD_ENV)
        .ok()
        .and_then(|c| ChildConfig::decode(&c))
    else {
        return;
    };
    // Counts the lock batches this process sends, for the parent's report.
    let recorder = DebuggingRecorder::new();
    let batches = recorder.snapshotter();
    metrics::set_global_recorder(recorder).expect("the child's only recorder");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(child_loop(config, batches));
}

async fn child_loop(c: ChildConfig, batches: Snapshotter) {
    let stop_at = Instant::now() + c.max; // bounded even if the parent dies
    let client = loop {
        match Client::builder()
            .url(&c.url)
            .namespace(NAMESPACE)
            .command_timeout(c.ttl / 2)
            .connect_timeout(c.ttl)
            .build()
            .await
        {
            Ok(client) => break client,
            Err(_) if Instant::now() < stop_at => tokio::time::sleep(c.ttl / 10).await,
            Err(e) => panic!("child {} cannot connect: {e}", c.id),
        }
    };
    let c = Arc::new(c);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..c.tasks {
        tasks.spawn(contender(
            client.clone(),
            c.clone(),
            c.id * c.tasks + t,
            stop_at,
        ));
    }
    tasks.spawn(report_batches(c.clone(), batches, stop_at));
    while tasks.join_next().await.is_some() {}
}

/// Every 200 ms, tell the resource how many lock batches (and calls in them) this process has
/// sent so far: `B <process> <batches> <calls>`.
async fn report_batches(c: Arc<ChildConfig>, snapshotter: Snapshotter, stop_at: Instant) {
    let Ok(mut resource) = TcpStream::connect(("127.0.0.1", c.resource)).await else {
        return;
    };
    let (mut sent, mut calls) = (0u64, 0u64);
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            if let (leasehold::metrics::LOCK_BATCH, DebugValue::Histogram(sizes)) =
                (key.key().name(), value)
            {
                sent += sizes.len() as u64;
                calls += sizes.iter().map(|s| s.into_inner() as u64).sum::<u64>();
            }
        }
        let line = format!("B {} {sent} {calls}\n", c.id);
        if resource.write_all(line.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One contender: lock, write to the resource under the token, hold, report, unlock; a new
/// session whenever the last one is no longer valid.
async fn contender(client: Client, c: Arc<ChildConfig>, id: usize, stop_at: Instant) {
    let resource = TcpStream::connect(("127.0.0.1", c.resource))
        .await
        .expect("resource");
    let (read, mut write) = resource.into_split();
    let mut replies = BufReader::new(read).lines();
    let mut session = None;
    while Instant::now() < stop_at {
        if session
            .as_ref()
            .is_some_and(|s: &leasehold::Session| !s.is_valid())
        {
            session = None;
        }
        let s = match &session {
            Some(s) => s,
            None => match client
                .session_with(SessionOptions::default().ttl(c.ttl))
                .await
            {
                Ok(s) => session.insert(s),
                Err(_) => {
                    tokio::time::sleep(c.ttl / 20).await;
                    continue;
                }
            },
        };
        let Ok(mutex) = s.mutex("resource") else {
            return;
        };
        let guard = match tokio::time::timeout(c.ttl, mutex.lock()).await {
            Ok(Ok(guard)) => guard,
            _ => {
                tokio::time::sleep(c.ttl / 100).await;
                continue;
            }
        };
        let start = mono_ns();
        let token = guard.fencing_token();
        // Write to the resource only while the session is locally valid.
        let accepted = if c.careless || guard.is_valid() {
            let line = format!("W {token} {id}\n");
            if write.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            matches!(replies.next_line().await, Ok(Some(r)) if r == "OK")
        } else {
            false
        };
        tokio::time::sleep(c.hold).await;
        let end = if c.careless {
            mono_ns()
        } else {
            mono_ns().min(instant_ns(s.valid_until()))
        };
        let line = format!("H {id} {token} {start} {end} {}\n", accepted as u8);
        if write.write_all(line.as_bytes()).await.is_err() {
            return;
        }
        let _ = guard.unlock().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The resource and the checks.

#[derive(Debug, Clone, Copy)]
struct Hold {
    /// The contender: `process * tasks + task`.
    client: usize,
    token: u64,
    start: u64,
    end: u64,
}

#[derive(Debug, Default)]
struct Ledger {
    /// The contender that wrote last: most likely the one holding the lock now.
    last_writer: usize,
    /// Per client process: lock batches sent so far, and the calls in them.
    batches: BTreeMap<usize, (u64, u64)>,
    highest: u64,
    accepted: u64,
    rejected: u64,
    holds: Vec<Hold>,
}

/// A fencing-aware store: accepts a write only if its token is at least the highest accepted.
struct Resource {
    port: u16,
    ledger: Arc<Mutex<Ledger>>,
    task: tokio::task::JoinHandle<()>,
}

impl Resource {
    async fn start() -> Resource {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let l = ledger.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, l.clone()));
            }
        });
        Resource { port, ledger, task }
    }
}

impl Drop for Resource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(conn: TcpStream, ledger: Arc<Mutex<Ledger>>) {
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let f: Vec<u64> = line
            .split(' ')
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect();
        match (line.as_bytes().first(), f.as_slice()) {
            (Some(b'W'), [token, client]) => {
                let ok = {
                    let mut l = ledger.lock().unwrap();
                    l.last_writer = *client as usize;
                    let ok = *token >= l.highest;
                    if ok {
                        l.highest = *token;
                        l.accepted += 1;
                    } else {
                        l.rejected += 1;
                    }
                    ok
                };
                let reply: &[u8] = if ok { b"OK\n" } else { b"STALE\n" };
                if write.write_all(reply).await.is_err() {
                    return;
                }
            }
            (Some(b'B'), [process, sent, calls]) => {
                ledger
                    .lock()
                    .unwrap()
                    .batches
                    .insert(*process as usize, (*sent, *calls));
            }
            (Some(b'H'), [client, token, start, end, _accepted]) => {
                ledger.lock().unwrap().holds.push(Hold {
                    client: *client as usize,
                    token: *token,
                    start: *start,
                    end: *end,
                });
            }
            _ => return,
        }
    }
}

/// Properties 2 and 3 over every hold, and 4 for each heal instant.
fn violations(holds: &[Hold], heals: &[u64], ttl: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let mut holds = holds.to_vec();
    holds.sort_by_key(|h| h.start);
    let mut latest: Option<Hold> = None; // the hold whose belief ends last so far
    let mut prev: Option<Hold> = None;
    for h in &holds {
        if let Some(l) = latest {
            if h.start < l.end && l.client != h.client {
                out.push(format!("overlap: {l:?} and {h:?}"));
            }
        }
        if let Some(p) = prev {
            if h.token <= p.token {
                out.push(format!("token did not rise: {p:?} then {h:?}"));
            }
        }
        if latest.is_none_or(|l| h.end > l.end) {
            latest = Some(*h);
        }
        prev = Some(*h);
    }
    let bound = (ttl + ttl / 3 + Duration::from_secs(1)).as_nanos() as u64;
    for &heal in heals {
        if !holds
            .iter()
            .any(|h| h.start >= heal && h.start <= heal + bound)
        {
            out.push(format!(
                "no acquisition within {:?} of the heal",
                Duration::from_nanos(bound)
            ));
        }
    }
    out
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
        let max = Duration::from_secs(3600);
        let server = support::server();
        let resource = Resource::start().await;
        let mut proxies_ctl = Vec::new();
        let mut children = Vec::new();
        let exe = std::env::current_exe().unwrap();
        for id in 0..clients {
            let proxy = Arc::new(Proxy::start(server.port()).await.unwrap());
            let config = ChildConfig {
                url: proxy.url(),
                ttl,
                hold,
                resource: resource.port,
                id,
                max,
                careless,
                tasks,
            };
            let child = Command::new(&exe)
                .args(["--ignored", "--exact", "checker_child", "--quiet"])
                .env(CHILD_ENV, config.encode())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn a checker client");
            proxies_ctl.push(proxy);
            children.push(child);
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
        for c in &mut self.children {
            let _ = c.kill().await;
        }
        let ledger = self.resource.ledger.lock().unwrap();
        Outcome {
            acquisitions: ledger.holds.len(),
            rejected: ledger.rejected,
            batches: ledger.batches.values().map(|b| b.0).sum(),
            batched_calls: ledger.batches.values().map(|b| b.1).sum(),
            violations: violations(&ledger.holds, &self.heals, self.ttl),
        }
    }
}

/// What a run saw.
struct Outcome {
    acquisitions: usize,
    /// Stale writes the resource refused.
    rejected: u64,
    /// Lock batches the client processes sent, and the calls in them.
    batches: u64,
    batched_calls: u64,
    violations: Vec<String>,
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
        token,
        start,
        end,
    };
    assert!(violations(&[h(0, 1, 0, 10), h(1, 2, 10, 20)], &[], ttl).is_empty());
    assert_eq!(
        violations(&[h(0, 1, 0, 10), h(1, 2, 9, 20)], &[], ttl).len(),
        1
    );
    // A long hold overlapping a later, non-adjacent one is caught too.
    assert_eq!(
        violations(
            &[h(0, 1, 0, 100), h(1, 2, 10, 20), h(2, 3, 50, 60)],
            &[],
            ttl
        )
        .len(),
        2
    );
    assert_eq!(
        violations(&[h(0, 2, 0, 10), h(1, 1, 10, 20)], &[], ttl).len(),
        1
    );
    let heal = 1_000;
    let late = heal + ttl.as_nanos() as u64 * 2;
    assert_eq!(
        violations(&[h(0, 1, 0, 10), h(1, 2, late, late + 1)], &[heal], ttl).len(),
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
