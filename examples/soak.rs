//! Soak: churn sessions the way a leaky service would, for minutes, and show that nothing
//! grows: not the process (memory, tokio tasks, live sessions) and not Redis (the lease
//! registry, memory, keys).
//!
//! ```sh
//! cargo run --release --example soak -- --minutes 5                  # throwaway redis-server
//! cargo run --release --example soak -- --minutes 60 --sessions 1000 --report-every 30s
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example soak -- --minutes 5
//! ```
//!
//! A pool of workers (`--sessions`, default 1000) keeps that many sessions in flight. Each
//! cycle opens a session with a short TTL, takes a mutex (a few hot names everyone contends
//! for, or a name of its own; `try_lock` or `lock` with a timeout), sometimes puts a key with
//! the lease or campaigns in an election, and then **drops the session without closing it**
//! (the session-per-request leak). About one cycle in fourteen instead orphans its session, as
//! a frozen process would: its lease, lock entry and key stay in Redis until the lease expires
//! and a sweep removes them.
//!
//! Every `--report-every` it prints one row of a markdown table: cycles (total and per second),
//! the process RSS and live heap (bytes allocated and not freed: RSS alone cannot tell a leak
//! from the allocator keeping freed pages), tokio's alive tasks, `Client::live_sessions()`, the
//! size of the lease registry (`ZCARD {ns}:leases`: live leases plus expired ones not yet
//! swept), Redis `used_memory`, and the lock-acquire p50/p99 of the interval. At the end it
//! stops the churn, waits (at most TTL + four renewal intervals) for everything to settle,
//! prints the final row and a verdict, and exits non-zero if it failed: live sessions 0,
//! registry 0, tokio tasks back to the count before the churn, only the keys that outlive
//! sessions by design left in Redis, and heap growth from the first to the last quarter of the
//! run (largest value in each) under 10 %; RSS growth too, unless the heap did not grow (then
//! it is memory the allocator kept after a burst, not a leak).
//!
//! `tests/soak.rs` runs the same churn ([`Churn`], included from this file) short and small,
//! and asserts the same things.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, SortedSetsInterface};
use fred::types::{ClusterHash, CustomCommand, InfoKind};
use leasehold::{Client, Error, SessionOptions};
use tokio::task::JoinHandle;

/// The system allocator, counting the bytes allocated and not freed yet (the live heap).
struct Counting;

static HEAP: AtomicUsize = AtomicUsize::new(0);

#[global_allocator]
static ALLOCATOR: Counting = Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HEAP.fetch_add(new_size, Ordering::Relaxed);
            HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

/// What the workers do.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Workers, each with one session in flight at a time.
    pub sessions: usize,
    /// Session TTL: orphaned leases expire this long after their last renewal.
    pub ttl: Duration,
    /// Mutex names every worker contends for (`hot-0`, `hot-1`, ...).
    pub hot_locks: usize,
    /// How long `lock()` waits before the cycle gives up (dropping the wait withdraws it).
    pub lock_timeout: Duration,
    /// Elections campaigned in (`e-0`, ...), each with a timeout of `lock_timeout`.
    pub elections: usize,
}

impl Workload {
    pub fn new(sessions: usize) -> Workload {
        Workload {
            sessions,
            ttl: Duration::from_secs(6),
            hot_locks: 4,
            lock_timeout: Duration::from_secs(1),
            elections: 2,
        }
    }

    /// Election names, for the keys they leave behind by design (see [`expected_keys`]).
    pub fn election_names(&self) -> Vec<String> {
        (0..self.elections).map(|e| format!("e-{e}")).collect()
    }

    /// How long the end of a run may take to settle: every orphaned lease has expired (TTL
    /// after its last renewal) and been swept (a few renewal intervals, TTL/3 each).
    pub fn settle_bound(&self) -> Duration {
        self.ttl + 4 * (self.ttl / 3)
    }
}

/// Counters shared by the workers. Lock-acquire times are kept per report interval.
#[derive(Debug, Default)]
pub struct Stats {
    pub cycles: AtomicU64,
    /// Mutexes acquired (by `try_lock` or `lock`).
    pub acquired: AtomicU64,
    /// `try_lock` found the mutex taken.
    pub refused: AtomicU64,
    /// `lock()` or `campaign()` gave up after the timeout.
    pub timed_out: AtomicU64,
    /// Sessions orphaned instead of dropped.
    pub orphaned: AtomicU64,
    /// Keys put with a session's lease.
    pub puts: AtomicU64,
    /// Campaigns that led.
    pub led: AtomicU64,
    /// Anything else that failed (there should be none).
    pub errors: AtomicU64,
    first_error: StdMutex<Option<String>>,
    acquire_times: StdMutex<Vec<Duration>>,
}

impl Stats {
    fn error(&self, e: Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap();
        first.get_or_insert_with(|| e.to_string());
    }

    /// The first error a cycle failed with, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().unwrap().clone()
    }

    /// Lock-acquire times recorded since the last call.
    pub fn take_acquire_times(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.acquire_times.lock().unwrap())
    }
}

/// The running workers.
pub struct Churn {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    pub stats: Arc<Stats>,
}

impl Churn {
    /// Start `workload.sessions` workers on `client`.
    pub fn start(client: &Client, workload: &Workload) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let workers = (0..workload.sessions)
            .map(|n| {
                let (client, workload) = (client.clone(), workload.clone());
                let (stop, stats) = (stop.clone(), stats.clone());
                tokio::spawn(async move {
                    let mut rng = Rng::new(n as u64);
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if let Err(e) = cycle(&client, &workload, n, i, &mut rng, &stats).await {
                            stats.error(e);
                        }
                        stats.cycles.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                })
            })
            .collect();
        Churn {
            stop,
            workers,
            stats,
        }
    }

    /// Let every worker finish its cycle, and wait for them.
    pub async fn stop(self) -> Arc<Stats> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.expect("worker panicked");
        }
        self.stats
    }
}

/// One request of the leaky service: a session opened, used, and dropped without `close()`.
async fn cycle(
    client: &Client,
    w: &Workload,
    worker: usize,
    i: u64,
    rng: &mut Rng,
    stats: &Stats,
) -> leasehold::Result<()> {
    let session = client
        .session_with(SessionOptions::new().ttl(w.ttl).label("soak"))
        .await?;
    // A frozen process: it keeps to a lock and key of its own (a frozen holder of a hot lock
    // or an election would stall everyone for a TTL; the demo shows that case).
    let orphan = rng.below(100) < 7;
    let hot = !orphan && rng.below(100) < 30;
    let name = if hot {
        format!("hot-{}", rng.below(w.hot_locks as u64))
    } else {
        format!("w{worker}-{i}")
    };
    let mutex = session.mutex(&name)?;
    let asked = Instant::now();
    let guard = if rng.below(2) == 0 {
        match mutex.try_lock().await {
            Ok(g) => Some(g),
            Err(Error::Locked { .. }) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        match tokio::time::timeout(w.lock_timeout, mutex.lock()).await {
            Ok(g) => Some(g?),
            Err(_) => {
                stats.timed_out.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    };
    if guard.is_some() {
        stats.acquired.fetch_add(1, Ordering::Relaxed);
        stats.acquire_times.lock().unwrap().push(asked.elapsed());
    }
    match rng.below(100) {
        // Register this worker under a key that lives as long as the session.
        0..10 => {
            session.put(&format!("soak/w{worker}"), "up").await?;
            stats.puts.fetch_add(1, Ordering::Relaxed);
        }
        10..15 if !orphan && w.elections > 0 => {
            let e = session.election(&format!("e-{}", rng.below(w.elections as u64)))?;
            match tokio::time::timeout(w.lock_timeout, e.campaign(&format!("w{worker}"))).await {
                Ok(led) => {
                    led?;
                    stats.led.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        _ => {}
    }
    // "Work" while holding.
    tokio::task::yield_now().await;
    if orphan {
        session.orphan();
        stats.orphaned.fetch_add(1, Ordering::Relaxed);
    }
    // The leak: guard and session dropped, never unlocked or closed. leasehold releases and
    // revokes in the background (orphaned: leaves the lease to expire).
    drop(guard);
    drop(session);
    Ok(())
}

/// xorshift64*: enough randomness for a workload, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
        Rng((seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ nanos | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// A plain fred client to look at Redis from outside leasehold.
pub async fn raw_client(url: &str) -> Result<fred::clients::Client, fred::error::Error> {
    let config = fred::types::config::Config::from_url(url)?;
    let raw = fred::clients::Client::new(config, None, None, None);
    raw.init().await?;
    Ok(raw)
}

/// What Redis holds for the namespace.
#[derive(Debug, Clone, Copy)]
pub struct RedisSide {
    /// `ZCARD {ns}:leases`: live leases plus expired ones not swept yet.
    pub registry: u64,
    /// `INFO memory` `used_memory`, bytes.
    pub used_memory: u64,
}

pub async fn redis_side(
    raw: &fred::clients::Client,
    namespace: &str,
) -> Result<RedisSide, fred::error::Error> {
    let registry: u64 = raw.zcard(format!("{{{namespace}}}:leases")).await?;
    let info: String = raw.info(Some(InfoKind::Memory)).await?;
    let used_memory = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok(RedisSide {
        registry,
        used_memory,
    })
}

/// Every key of the namespace, sorted.
pub async fn namespace_keys(
    raw: &fred::clients::Client,
    namespace: &str,
) -> Result<Vec<String>, fred::error::Error> {
    let cmd = CustomCommand::new_static("KEYS", ClusterHash::FirstKey, false);
    let mut keys: Vec<String> = raw.custom(cmd, vec![format!("{{{namespace}}}:*")]).await?;
    keys.sort();
    Ok(keys)
}

/// The keys that legitimately outlive every session, sorted: the revision counter (fencing
/// tokens must keep rising), each election's log of leader changes, kept an hour after its
/// last candidate left for late observers (it expires then), and the key event log that
/// watches read (bounded, kept like the revision counter).
pub fn expected_keys(namespace: &str, workload: &Workload) -> Vec<String> {
    let mut keys = vec![
        format!("{{{namespace}}}:rev"),
        format!("{{{namespace}}}:kv-events"),
    ];
    for e in workload.election_names() {
        keys.push(format!("{{{namespace}}}:election-log:{e}"));
    }
    keys.sort();
    keys
}

/// Where things stood once the churn stopped and settled (or the bound ran out).
#[derive(Debug, Clone, Copy)]
pub struct Settled {
    pub live_sessions: usize,
    pub registry: u64,
    pub tasks: usize,
    /// How long it took to settle (the bound, if it did not).
    pub waited: Duration,
}

/// After the churn: wait at most `bound` until no session is live, the registry is empty and
/// tokio's alive tasks are back to `baseline_tasks`.
pub async fn settle(
    client: &Client,
    raw: &fred::clients::Client,
    baseline_tasks: usize,
    bound: Duration,
) -> Result<Settled, fred::error::Error> {
    let metrics = tokio::runtime::Handle::current().metrics();
    let start = Instant::now();
    loop {
        let s = Settled {
            live_sessions: client.live_sessions(),
            registry: redis_side(raw, client.namespace()).await?.registry,
            tasks: metrics.num_alive_tasks(),
            waited: start.elapsed(),
        };
        let settled = s.live_sessions == 0 && s.registry == 0 && s.tasks <= baseline_tasks;
        if settled || s.waited >= bound {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Median and 99th percentile.
pub fn p50_p99(mut samples: Vec<Duration>) -> Option<(Duration, Duration)> {
    if samples.is_empty() {
        return None;
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Some((at(0.50), at(0.99)))
}

/// This process's resident set size (Linux), bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

struct Args {
    minutes: f64,
    sessions: usize,
    report_every: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        minutes: 5.0,
        sessions: 1000,
        report_every: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = || format!("bad value {value:?} for {flag}");
        match flag.as_str() {
            "--minutes" => args.minutes = value.parse().map_err(|_| bad())?,
            "--sessions" => args.sessions = value.parse().map_err(|_| bad())?,
            "--report-every" => {
                let secs = value.strip_suffix('s').unwrap_or(&value);
                args.report_every = Duration::from_secs_f64(secs.parse().map_err(|_| bad())?);
            }
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if args.minutes <= 0.0 || args.sessions == 0 || args.report_every.is_zero() {
        return Err("--minutes, --sessions and --report-every must be positive".into());
    }
    Ok(args)
}

/// One table row.
struct Row {
    elapsed: Duration,
    cycles: u64,
    rate: f64,
    rss: u64,
    heap: u64,
    tasks: usize,
    live: usize,
    redis: RedisSide,
    acquire: Option<(Duration, Duration)>,
    errors: u64,
}

const HEADER: &str = "| elapsed | cycles | cycles/s | RSS MiB | heap MiB | tokio tasks | live sessions | registry | Redis used_memory MiB | acquire p50 ms | acquire p99 ms | errors |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

impl Row {
    fn print(&self, label: Option<&str>) {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
        let (p50, p99) = match self.acquire {
            Some((a, b)) => (ms(a), ms(b)),
            None => ("-".into(), "-".into()),
        };
        let elapsed = match label {
            Some(l) => l.to_owned(),
            None => format!("{:.0} s", self.elapsed.as_secs_f64()),
        };
        println!(
            "| {elapsed} | {} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {:.1} | {p50} | {p99} | {} |",
            self.cycles,
            self.rate,
            mib(self.rss),
            mib(self.heap),
            self.tasks,
            self.live,
            self.redis.registry,
            mib(self.redis.used_memory),
            self.errors
        );
    }
}

/// Largest value among the rows of the first and of the last quarter of the run.
fn quarters(rows: &[Row], total: Duration, f: impl Fn(&Row) -> u64) -> (u64, u64) {
    let first = rows.iter().filter(|r| r.elapsed <= total / 4).map(&f).max();
    let last = rows
        .iter()
        .filter(|r| r.elapsed >= total * 3 / 4)
        .map(&f)
        .max();
    let any = rows.first().map(&f).unwrap_or(0);
    (first.unwrap_or(any), last.unwrap_or(any))
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\nusage: soak --minutes N [--sessions 1000] [--report-every 10s]");
            return Ok(ExitCode::from(2));
        }
    };
    // Keep the server (if we started one) alive until the end.
    let (server, url) = leasehold_testing::url_or_start()?;
    let namespace = format!("soak-{}", std::process::id());
    let client = Client::builder()
        .url(&url)
        .namespace(&namespace)
        .build()
        .await?;
    let raw = raw_client(&url).await?;
    let workload = Workload::new(args.sessions);
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    println!(
        "soak: {} sessions in flight for {:.1} min, TTL {:?}, namespace {namespace:?}{}\n",
        workload.sessions,
        args.minutes,
        workload.ttl,
        if server.is_some() {
            " (throwaway redis-server)"
        } else {
            ""
        }
    );

    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline_tasks = metrics.num_alive_tasks();
    let churn = Churn::start(&client, &workload);
    let stats = churn.stats.clone();
    println!("{HEADER}");
    let start = Instant::now();
    let mut rows = Vec::new();
    let mut last = (start, 0);
    let mut ticker =
        tokio::time::interval_at((start + args.report_every).into(), args.report_every);
    while start.elapsed() < total {
        ticker.tick().await;
        let now = Instant::now();
        let cycles = stats.cycles.load(Ordering::Relaxed);
        let row = Row {
            elapsed: now - start,
            cycles,
            rate: (cycles - last.1) as f64 / (now - last.0).as_secs_f64(),
            rss: rss(),
            heap: HEAP.load(Ordering::Relaxed) as u64,
            tasks: metrics.num_alive_tasks(),
            live: client.live_sessions(),
            redis: redis_side(&raw, &namespace).await?,
            acquire: p50_p99(stats.take_acquire_times()),
            errors: stats.errors.load(Ordering::Relaxed),
        };
        row.print(None);
        rows.push(row);
        last = (now, cycles);
    }

    let stats = churn.stop().await;
    let ran = start.elapsed();
    let bound = workload.settle_bound();
    let settled = settle(&client, &raw, baseline_tasks, bound).await?;
    let cycles = stats.cycles.load(Ordering::Relaxed);
    let redis = redis_side(&raw, &namespace).await?;
    Row {
        elapsed: start.elapsed(),
        cycles,
        rate: cycles as f64 / ran.as_secs_f64(),
        rss: rss(),
        heap: HEAP.load(Ordering::Relaxed) as u64,
        tasks: settled.tasks,
        live: settled.live_sessions,
        redis,
        // Only the waits in flight at the stop are left: the slow ones, not a fair sample.
        acquire: None,
        errors: stats.errors.load(Ordering::Relaxed),
    }
    .print(Some(&format!(
        "final, {:.1} s after stop",
        settled.waited.as_secs_f64()
    )));

    let keys = namespace_keys(&raw, &namespace).await?;
    let expected = expected_keys(&namespace, &workload);
    let leases = client.leases().await?.len();
    let growth = |f: fn(&Row) -> u64| {
        let (first, last) = quarters(&rows, total, f);
        (first, last, last as f64 / first.max(1) as f64 - 1.0)
    };
    let (rss_first, rss_last, rss_growth) = growth(|r| r.rss);
    let (heap_first, heap_last, heap_growth) = growth(|r| r.heap);
    let (_, _, mem_growth) = growth(|r| r.redis.used_memory);
    let checks = [
        (
            settled.live_sessions == 0,
            format!("live sessions {}", settled.live_sessions),
        ),
        (
            settled.registry == 0 && leases == 0,
            format!(
                "lease registry {} (`Client::leases()`: {leases}) within {bound:?} of the stop",
                settled.registry
            ),
        ),
        (
            settled.tasks <= baseline_tasks,
            format!(
                "tokio tasks {} (before the churn: {baseline_tasks})",
                settled.tasks
            ),
        ),
        (
            keys == expected,
            format!("keys left: {keys:?} (by design: {expected:?})"),
        ),
        (
            heap_growth < 0.10,
            format!(
                "heap growth first→last quarter {:+.1} % (max {:.1} → {:.1} MiB)",
                heap_growth * 100.0,
                heap_first as f64 / 1048576.0,
                heap_last as f64 / 1048576.0
            ),
        ),
        // RSS also holds what the allocator keeps after a burst: its growth is a leak only if
        // the live heap grew too.
        (
            rss_growth < 0.10 || heap_growth < 0.10,
            format!(
                "RSS growth first→last quarter {:+.1} % (max {:.1} → {:.1} MiB){}",
                rss_growth * 100.0,
                rss_first as f64 / 1048576.0,
                rss_last as f64 / 1048576.0,
                if rss_growth >= 0.10 && heap_growth < 0.10 {
                    ": kept by the allocator, the live heap did not grow"
                } else {
                    ""
                }
            ),
        ),
        (
            stats.errors.load(Ordering::Relaxed) == 0,
            format!(
                "errors {}{}",
                stats.errors.load(Ordering::Relaxed),
                stats
                    .first_error()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            ),
        ),
    ];
    let mut verdict = String::new();
    for (ok, what) in &checks {
        let _ = writeln!(verdict, "- {} {what}", if *ok { "ok" } else { "FAIL" });
    }
    let _ = writeln!(
        verdict,
        "- (info) Redis used_memory first→last quarter {:+.1} %; cycles: {cycles} ({} mutexes acquired, {} try_lock refused, {} waits timed out, {} keys put, {} campaigns led, {} sessions orphaned)",
        mem_growth * 100.0,
        stats.acquired.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.timed_out.load(Ordering::Relaxed),
        stats.puts.load(Ordering::Relaxed),
        stats.led.load(Ordering::Relaxed),
        stats.orphaned.load(Ordering::Relaxed),
    );
    let passed = checks.iter().all(|(ok, _)| *ok);
    println!(
        "\nverdict: {}\n{verdict}",
        if passed { "PASS" } else { "FAIL" }
    );
    // Returned, not exited: the throwaway server (if any) is stopped on the way out.
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
