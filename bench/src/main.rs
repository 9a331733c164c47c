//! leasehold's benchmark suite: leasehold side by side with a raw `SET NX PX` lock, rslock and
//! etcd, in one run, against servers it starts itself. Prints markdown.
//!
//! ```sh
//! cargo run --release --manifest-path bench/Cargo.toml            # full run, ~20 min
//! cargo run --release --manifest-path bench/Cargo.toml -- --quick # ~3 min, smaller numbers
//! ```
//!
//! Needs `redis-server` and `etcd` on `PATH` (or `LEASEHOLD_REDIS_SERVER`, `ETCD_BIN`); both
//! are started on free loopback ports in temporary directories and stopped at the end.
//!
//! Not in the default run: the Redis Cluster scenarios (`--only cluster,cluster-keepalive`,
//! about 6 min, `--quick` about 2 min), which start a local 3-primary cluster (needs
//! `redis-cli` too) and kill it at the end.
//! BENCHMARKS.md at the repository root has a full run and how to read it.

mod cluster;
mod handoff;
mod keepalive;
mod libs;
mod recorder;
mod redis_cpu;
mod rss;
mod scale;
mod servers;
mod stats;
mod sys;
mod uncontended;

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::libs::Lib;
use crate::stats::Table;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How much of everything to do.
pub struct Plan {
    pub quick: bool,
    /// Repetitions of each measurement; tables show the median.
    pub reps: usize,
    /// Uncontended: repetitions (more: its 1-task points are the most sensitive to other load
    /// on the machine, and cheap), time before counting, and time counted, per point.
    pub uncontended_reps: usize,
    pub warmup: Duration,
    pub point: Duration,
    /// Handoff: samples wanted per repetition, and the time limit of one repetition.
    pub handoffs: usize,
    pub handoff_time_cap: Duration,
    /// Redis CPU: calls of each operation per repetition.
    pub cpu_calls: usize,
    /// Client RSS: total lock+unlock cycles.
    pub rss_cycles: u64,
    /// Keepalive: sessions, locks per session, window, and the per-lock model's run time.
    pub ka_sessions: usize,
    pub ka_locks_per_session: usize,
    pub ka_window: Duration,
    pub model_time: Duration,
    /// Scale: entries per row (keys, index entries, readers, holders); the setup budget of
    /// the rows populated through the API (readers, holders: capped at what it allows); and
    /// the bound on one measured operation (a sweep's wait for the keys to go).
    pub scale_sizes: Vec<usize>,
    pub scale_setup_budget: Duration,
    pub scale_wait: Duration,
    /// Cluster: time before counting and time counted per throughput row, and the keepalive
    /// runs' sessions (their locks per session and window: the keepalive scenario's).
    pub cluster_warmup: Duration,
    pub cluster_window: Duration,
    pub cluster_ka_sessions: usize,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            quick: false,
            reps: 3,
            uncontended_reps: 5,
            warmup: Duration::from_millis(300),
            point: Duration::from_secs(2),
            handoffs: 200,
            handoff_time_cap: Duration::from_secs(25),
            cpu_calls: 5000,
            rss_cycles: 1_000_000,
            ka_sessions: 10_000,
            ka_locks_per_session: 10,
            ka_window: Duration::from_secs(60),
            model_time: Duration::from_secs(5),
            scale_sizes: vec![10_000, 100_000, 1_000_000],
            scale_setup_budget: Duration::from_secs(180),
            scale_wait: Duration::from_secs(120),
            cluster_warmup: Duration::from_secs(1),
            cluster_window: Duration::from_secs(10),
            cluster_ka_sessions: 10_000,
        }
    }

    /// About three minutes: one repetition, short points, a tenth of the keepalive load, scale
    /// at 10k and 100k entries. (The cluster's keepalive keeps its 10,000 sessions, with a
    /// shorter window: its figure per shard depends on the load.)
    fn quick() -> Plan {
        Plan {
            quick: true,
            reps: 1,
            uncontended_reps: 1,
            warmup: Duration::from_millis(100),
            point: Duration::from_millis(500),
            handoffs: 50,
            handoff_time_cap: Duration::from_secs(3),
            cpu_calls: 1000,
            rss_cycles: 50_000,
            ka_sessions: 1000,
            ka_locks_per_session: 10,
            ka_window: Duration::from_secs(10),
            model_time: Duration::from_secs(2),
            scale_sizes: vec![10_000, 100_000],
            scale_setup_budget: Duration::from_secs(30),
            scale_wait: Duration::from_secs(30),
            cluster_warmup: Duration::from_millis(300),
            cluster_window: Duration::from_secs(3),
            cluster_ka_sessions: 10_000,
        }
    }
}

/// What every scenario gets: the plan, the servers, the statistics.
pub struct Env {
    pub plan: Plan,
    pub redis_url: String,
    pub etcd_endpoint: String,
    pub admin: servers::Admin,
    pub totals: &'static recorder::Totals,
    server_pids: Vec<u32>,
}

impl Env {
    pub fn etcd_pid(&self) -> u32 {
        self.server_pids[1]
    }

    /// A leasehold client on the suite's Redis.
    pub async fn leasehold_client(
        &self,
        namespace: &str,
        pool: usize,
    ) -> Result<leasehold::Client> {
        self.leasehold_client_with(namespace, pool, true).await
    }

    /// A leasehold client with lock-call batching on or off.
    pub async fn leasehold_client_with(
        &self,
        namespace: &str,
        pool: usize,
        batch: bool,
    ) -> Result<leasehold::Client> {
        self.leasehold_client_at(&self.redis_url, namespace, pool, batch)
            .await
    }

    /// A leasehold client that calls scripts with EVALSHA: its Redis user may not `FCALL`.
    pub async fn leasehold_evalsha_client(
        &self,
        namespace: &str,
        pool: usize,
    ) -> Result<leasehold::Client> {
        let url = self.admin.user_without_functions(&self.redis_url).await?;
        let client = self
            .leasehold_client_at(&url, namespace, pool, true)
            .await?;
        if client.uses_functions() {
            return Err("the EVALSHA client calls functions".into());
        }
        Ok(client)
    }

    async fn leasehold_client_at(
        &self,
        url: &str,
        namespace: &str,
        pool: usize,
        batch: bool,
    ) -> Result<leasehold::Client> {
        Ok(leasehold::Client::builder()
            .url(url)
            .namespace(namespace)
            .pool_size(pool)
            .batch_lock_calls(batch)
            .build()
            .await?)
    }
}

/// Run `f(0..n)`, `concurrency` at a time, in the calling task; outputs in index order.
pub async fn run_all<T, E, F, Fut>(n: usize, concurrency: usize, f: F) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
    Error: From<E>,
{
    let mut out: Vec<(usize, T)> = stream::iter(0..n)
        .map(|i| {
            let fut = f(i);
            async move { fut.await.map(|v| (i, v)).map_err(Error::from) }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

const SCENARIOS: [&str; 8] = [
    "uncontended",
    "handoff",
    "cpu",
    "rss",
    "keepalive",
    "scale",
    "cluster",
    "cluster-keepalive",
];

/// Scenarios that run only when named with `--only`.
const OPT_IN: [&str; 2] = ["cluster", "cluster-keepalive"];

fn usage() -> String {
    format!(
        "usage: leasehold-bench [--quick] [--only SCENARIO[,SCENARIO…]]\n\
         scenarios: {}\n\
         default: all but {} (they add about 6 min, 2 min with --quick: name them with \
         --only).\n\
         scale: the slowest single script call of revoke, sweep, get_prefix, rwlock readers and\n\
         semaphore holders at 10k, 100k and 1M entries (--quick: 10k and 100k); target 5 ms.\n\
         cluster: on a local 3-primary Redis Cluster, 64 uncontended tasks on one plain \
         namespace, one spread\n\
         namespace (48) and raw SET NX PX: cycles/s, Redis CPU per shard and per cycle, and a \
         projection to\n\
         6 and 12 shards. cluster-keepalive: 10,000 sessions x 10 locks on that cluster, renewal \
         calls/s per\n\
         shard, plain and spread namespaces.\n\
         Starts its own redis-server and etcd (and the cluster's nodes) on free loopback ports; \
         prints markdown.",
        SCENARIOS.join(", "),
        OPT_IN.join(" and ")
    )
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let mut plan = Plan::full();
    let mut only: Vec<String> = SCENARIOS
        .iter()
        .filter(|s| !OPT_IN.contains(s))
        .map(|s| s.to_string())
        .collect();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => plan = Plan::quick(),
            "--only" => {
                let list = it.next().ok_or_else(usage)?;
                only = list.split(',').map(str::to_owned).collect();
                if let Some(bad) = only.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
                    return Err(format!("unknown scenario {bad:?}\n{}", usage()).into());
                }
            }
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{}", usage()).into()),
        }
    }
    let wants = |s: &str| only.iter().any(|o| o == s);

    // Before any client exists, so every metric handle lands in it.
    let totals = recorder::install();
    let started = Instant::now();
    let load_at_start = sys::loadavg();
    eprintln!("starting redis-server and etcd");
    let redis = leasehold_testing::RedisServer::start()?;
    let etcd = servers::Etcd::start().await?;
    let admin = servers::Admin::connect(&redis.url()).await?;
    let cluster = if OPT_IN.iter().any(|s| wants(s)) {
        eprintln!("starting a {}-primary Redis Cluster", cluster::SHARDS);
        Some(cluster::Cluster::start().await?)
    } else {
        None
    };
    let env = Env {
        redis_url: redis.url(),
        etcd_endpoint: etcd.endpoint.clone(),
        server_pids: vec![
            redis.pid().ok_or("redis-server is not running")?,
            etcd.pid(),
        ],
        admin,
        totals,
        plan,
    };

    let command = format!(
        "cargo run --release --manifest-path bench/Cargo.toml --{}",
        args.iter().map(|a| format!(" {a}")).collect::<String>()
    );
    println!("# leasehold benchmarks\n");
    let mut head = Table::new(&["", ""]);
    head.row(vec!["command".into(), format!("`{command}`")]);
    head.row(vec!["date".into(), sys::utc_now()]);
    head.row(vec![
        "machine".into(),
        format!(
            "{} cores, Linux {}, load average at start {load_at_start}",
            sys::cores(),
            sys::kernel()
        ),
    ]);
    head.row(vec![
        "Redis".into(),
        format!(
            "{} on loopback, no persistence (`--save '' --appendonly no`)",
            env.admin.version().await?
        ),
    ]);
    if let Some(c) = &cluster {
        head.row(vec![
            "Redis Cluster".into(),
            format!(
                "{} primaries, no replicas, {} on loopback, no persistence (scenarios 7 and 8)",
                cluster::SHARDS,
                c.version().await?
            ),
        ]);
    }
    head.row(vec![
        "etcd".into(),
        format!(
            "{} on loopback, one member, defaults (fsync per write, data in a temp dir)",
            etcd.version().await?
        ),
    ]);
    head.row(vec![
        "repetitions".into(),
        if env.plan.quick {
            "1 (`--quick`: indicative only)".into()
        } else {
            format!(
                "{} ({} for scenario 1); tables show the median",
                env.plan.reps, env.plan.uncontended_reps
            )
        },
    ]);
    println!("{head}");

    let mut targets = Targets::default();

    if wants("uncontended") {
        let meter = sys::LoadMeter::start(&env.server_pids);
        eprintln!("scenario 1: uncontended lock+unlock");
        let out = uncontended::run(&env).await?;
        section(
            "1. Uncontended lock + unlock on distinct locks",
            &format!(
                "Each task cycles lock + unlock on its own lock name for {:.1} s (after {:.1} s \
                 warm-up). raw and leasehold use pools of 8 connections, rslock its one \
                 multiplexed connection; leasehold and etcd use one session/lease per task, \
                 except the row where leasehold's tasks share one session (64 tasks only). \
                 leasehold calls its function library (FCALL) except in the EVALSHA row. \
                 Redis µs inside commands: `usec` of the commands the client sent (SET, \
                 EVALSHA, FCALL; a script's time includes the commands it calls) from `INFO \
                 commandstats`, reset before each point, over every cycle of the point \
                 (warm-up included); commands per cycle count those inside scripts too.",
                env.plan.point.as_secs_f64(),
                env.plan.warmup.as_secs_f64()
            ),
            &out.table,
            meter.finish(),
        );
        targets.uncontended = Some(out);
    }
    if wants("handoff") {
        let meter = sys::LoadMeter::start(&env.server_pids);
        eprintln!("scenario 2: handoff");
        let out = handoff::run(&env).await?;
        section(
            "2. Handoff latency and fairness (one lock, hold 10 ms, work 30 ms outside)",
            &format!(
                "Time from a holder starting its release to a different, already waiting \
                 contender holding the lock; up to {} handoffs per repetition (at most {} s), \
                 counts per repetition shown. Fairness: acquisitions per contender, max/min. \
                 rslock polls with its default retry (3 tries, random 0-200 ms apart).",
                env.plan.handoffs,
                env.plan.handoff_time_cap.as_secs()
            ),
            &out.table,
            meter.finish(),
        );
        targets.handoff = Some(out);
    }
    if wants("cpu") {
        let meter = sys::LoadMeter::start(&env.server_pids);
        eprintln!("scenario 3: Redis CPU per call");
        let table = redis_cpu::run(&env).await?;
        section(
            "3. Redis CPU per call, each operation alone",
            &format!(
                "`CONFIG RESETSTAT`, {} operations of one kind (16 in flight), then `INFO \
                 commandstats` and `INFO cpu`. usec_per_call is the time inside the command; \
                 process CPU per op also counts reading, replying, pub/sub and the event loop.",
                stats::thousands(env.plan.cpu_calls as f64)
            ),
            &table,
            meter.finish(),
        );
    }
    if wants("rss") {
        let meter = sys::LoadMeter::start(&env.server_pids);
        eprintln!("scenario 5b: client RSS over lock cycles");
        let out = rss::run(&env).await?;
        section(
            "5b. Client memory over lock cycles",
            "One client (pool of 8), 64 tasks with a session and a lock each; VmRSS of the \
             bench process sampled at every 5 % of the cycles.",
            &out.table,
            meter.finish(),
        );
        targets.rss = Some(out);
    }
    if wants("keepalive") {
        let meter = sys::LoadMeter::start(&env.server_pids);
        eprintln!("scenario 4 and 5a: keepalive scaling, Redis memory");
        let out = keepalive::run(&env).await?;
        let load = meter.finish();
        section(
            "4. Keepalive scaling",
            &format!(
                "One client, {} sessions with TTL 10 s, {} locks each, then a {} s window.",
                stats::thousands(env.plan.ka_sessions as f64),
                env.plan.ka_locks_per_session,
                env.plan.ka_window.as_secs()
            ),
            &out.keepalive,
            load,
        );
        eprintln!("scenario 4b: renewal cost by what a lease holds");
        let meter = sys::LoadMeter::start(&env.server_pids);
        let by_kind = keepalive::by_kind(env.plan.reps).await?;
        section(
            "4b. Renewal cost by what a lease holds",
            &format!(
                "One kind at a time, each on a fresh redis-server with one client (pool of 8) \
                 whose sessions (TTL {} s) hold that many locks, watched for {} s (a renewal \
                 round every TTL/3) and torn down before the next; the kinds alternate over {} \
                 repetitions, median by µs per lease. Script calls and their time from `INFO \
                 commandstats`; leases renewed = the `HMGET`s the renewals ran (one per lease). \
                 What `RenewAs::cost` prices. CPU: each kind's redis-server counts as another \
                 process.",
                keepalive::KIND_TTL.as_secs(),
                keepalive::KIND_WINDOW.as_secs(),
                env.plan.reps
            ),
            &by_kind,
            meter.finish(),
        );
        section(
            "5a. Redis memory per session and per lock",
            "From the keepalive scenario's setup: `INFO memory` used_memory before and after \
             opening the sessions and after taking the locks; `MEMORY USAGE … SAMPLES 0` of \
             single keys.",
            &out.memory,
            load,
        );
        targets.keepalive = Some(out);
    }
    if wants("scale") {
        let meter = sys::LoadMeter::start(&env.server_pids);
        eprintln!("scenario 6: script calls at scale");
        let out = scale::run(&env).await?;
        let sizes = env
            .plan
            .scale_sizes
            .iter()
            .map(|&n| stats::thousands(n as f64))
            .collect::<Vec<_>>()
            .join(", ");
        section(
            "6. Script calls at scale: the slowest single call",
            &format!(
                "For each workload at {sizes} entries: the Redis-side time of the slowest single \
                 script call the operation made, with the median and how many took over 5 ms \
                 (Redis's slow log: every command of 0.1 ms or more, from just before the \
                 operation to 0.3 s after it; setup not counted), how many script calls it made \
                 and their total time (`INFO commandstats`), and its wall time. Target: no call \
                 over 5 ms. Keys and dead index entries are written directly in kv_put's layout; \
                 readers and holders are taken through the API within a setup budget of {} s \
                 (fewer is said so); a sweep or an operation is waited for at most {} s. The \
                 control row, not leasehold's, calls one fixed script of about 2 ms again and \
                 again: its slowest call against its median is what this machine adds alone.",
                env.plan.scale_setup_budget.as_secs(),
                env.plan.scale_wait.as_secs()
            ),
            &out.table,
            meter.finish(),
        );
        for note in &out.notes {
            println!("- {note}");
        }
        if !out.notes.is_empty() {
            println!();
        }
        targets.scale = Some(out);
    }

    if let (true, Some(c)) = (wants("cluster"), &cluster) {
        let meter = sys::LoadMeter::start(&c.pids());
        eprintln!("scenario 7: Redis Cluster, throughput and CPU per shard");
        let out = cluster::throughput(&env, c).await?;
        section(
            "7. Redis Cluster: uncontended lock + unlock, Redis CPU per shard",
            &format!(
                "{} primaries on loopback, one leasehold client or fred cluster pool of 8. Each \
                 of 64 tasks cycles lock + unlock on its own lock name for {:.1} s (after {:.1} s \
                 warm-up), as in scenario 1's 64-task row (leasehold: one session per task). \
                 Plain: all of the namespace's keys in one slot; also with a third of the \
                 tasks, as many as each shard of the spread rows serves. Spread: \
                 `.spread({})` (also through a pool of 2), and `.spread({})` (two \
                 sub-namespaces per shard). Raw: 64 \
                 keys without a hash tag, over all slots. Redis CPU: each node's \
                 used_cpu_sys + used_cpu_user (`INFO cpu`) over the window; per cycle: all \
                 nodes' CPU ÷ cycles. Medians of {} repetition(s).",
                cluster::SHARDS,
                env.plan.cluster_window.as_secs_f64(),
                env.plan.cluster_warmup.as_secs_f64(),
                cluster::SPREAD,
                cluster::SPREAD_FEW,
                env.plan.reps
            ),
            &out.table,
            meter.finish().describe("cluster nodes"),
        );
        for note in &out.notes {
            println!("- {note}");
        }
        println!(
            "\n### 7b. Projection to more shards\n\n{}\n\n{}",
            cluster::projection_text(),
            out.projection
        );
        targets.cluster = Some(out);
    }
    if let (true, Some(c)) = (wants("cluster-keepalive"), &cluster) {
        let meter = sys::LoadMeter::start(&c.pids());
        eprintln!("scenario 8: Redis Cluster, keepalive per shard");
        let out = cluster::keepalive(&env, c).await?;
        section(
            "8. Redis Cluster: keepalive per shard",
            &format!(
                "{} primaries on loopback. One client (pool of 8), {} sessions with TTL 10 s, {} \
                 locks each (lock j of session i named as shown), then a {} s window in which \
                 only the keepalive runs. Script calls per shard: each node's `fcall` + \
                 `evalsha` calls (`INFO commandstats`, reset at the window's start) ÷ the \
                 window. Target: ≤ {} renewal calls/s per shard, no session lost.",
                cluster::SHARDS,
                stats::thousands(env.plan.cluster_ka_sessions as f64),
                env.plan.ka_locks_per_session,
                env.plan.ka_window.as_secs(),
                cluster::RENEWALS_PER_SHARD_TARGET
            ),
            &out.table,
            meter.finish().describe("cluster nodes"),
        );
        targets.cluster_keepalive = Some(out);
    }

    println!("## Targets\n");
    println!("{}", targets.table());
    let mut tail = Table::new(&["", ""]);
    tail.row(vec!["load average at end".into(), sys::loadavg()]);
    tail.row(vec![
        "total time".into(),
        format!("{:.0} s", started.elapsed().as_secs_f64()),
    ]);
    println!("{tail}");
    drop(env);
    drop(cluster);
    drop(etcd);
    drop(redis);
    Ok(())
}

fn section(title: &str, how: &str, table: &Table, load: impl std::fmt::Display) {
    println!("## {title}\n\n{how}\n\n{table}\n_{load}_\n");
}

/// Each scenario's figures that the targets are judged on.
#[derive(Default)]
struct Targets {
    uncontended: Option<uncontended::Outcome>,
    handoff: Option<handoff::Outcome>,
    rss: Option<rss::Outcome>,
    keepalive: Option<keepalive::Outcome>,
    scale: Option<scale::Outcome>,
    cluster: Option<cluster::Throughput>,
    cluster_keepalive: Option<cluster::Keepalive>,
}

impl Targets {
    fn table(&self) -> Table {
        let mut t = Table::new(&["target", "figure", "holds?"]);
        let mut add = |what: &str, figure: String, ok: bool| {
            t.row(vec![
                what.to_owned(),
                figure,
                if ok { "yes" } else { "**no**" }.to_owned(),
            ]);
        };
        if let Some(u) = &self.uncontended {
            let lh = |n| u.rate(Lib::Leasehold, n);
            let (raw1, rs64) = (
                lh(1) / u.rate(Lib::Raw, 1),
                lh(64) / u.rate(Lib::Rslock, 64),
            );
            let redis_us = u.redis_us(Lib::Leasehold, 1) / u.redis_us(Lib::Raw, 1);
            add(
                "uncontended, 1 task: Redis µs inside commands per cycle ≤ 3.5× raw",
                format!(
                    "{redis_us:.2}× ({:.1} vs {:.1} µs)",
                    u.redis_us(Lib::Leasehold, 1),
                    u.redis_us(Lib::Raw, 1)
                ),
                redis_us <= 3.5,
            );
            add(
                "uncontended, 1 task: leasehold cycles/s ≥ 0.9× raw",
                format!("{raw1:.2}×"),
                raw1 >= 0.9,
            );
            add(
                "uncontended, 64 tasks: leasehold cycles/s ≥ 0.6× rslock",
                format!("{rs64:.2}×"),
                rs64 >= 0.6,
            );
        }
        if let Some(h) = &self.handoff {
            for &(lib, c, p50, p99, fairness) in &h.results {
                if lib != Lib::Leasehold {
                    continue;
                }
                add(
                    &format!("handoff, {c} contenders: p50 ≤ 0.5 ms"),
                    stats::ms(p50),
                    p50 <= Duration::from_micros(500),
                );
                add(
                    &format!("handoff, {c} contenders: p99 ≤ 2 ms"),
                    stats::ms(p99),
                    p99 <= Duration::from_millis(2),
                );
                add(
                    &format!("fairness, {c} contenders: max/min ≤ 1.2"),
                    handoff::ratio(fairness),
                    fairness <= 1.2,
                );
            }
        }
        if let Some(k) = &self.keepalive {
            add(
                "keepalive: ≤ 10 renewal calls/s",
                format!("{:.2}/s", k.calls_per_sec),
                k.calls_per_sec <= 10.0,
            );
            add(
                "keepalive: client CPU ≤ 5 % of a core",
                format!("{:.2} %", k.client_cpu * 100.0),
                k.client_cpu <= 0.05,
            );
            add(
                "keepalive: 0 sessions lost",
                k.lost.to_string(),
                k.lost == 0,
            );
        }
        if let Some(r) = &self.rss {
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            add(
                "client RSS flat (end within 5 % / 2 MiB of the 5 % sample)",
                format!(
                    "{:.1} → {:.1} MiB (max {:.1})",
                    mib(r.first),
                    mib(r.last),
                    mib(r.max)
                ),
                r.flat(),
            );
        }
        if let Some(s) = &self.scale {
            let mut figure = match &s.worst {
                Some((d, row)) => format!("{} ({row})", stats::ms(*d)),
                None => "no script call measured".to_owned(),
            };
            if s.failures > 0 {
                figure.push_str(&format!(
                    "; {} rows missed it, failed their check or did not run",
                    s.failures
                ));
            }
            if s.capped > 0 {
                figure.push_str(&format!("; {} rows on fewer entries (capped)", s.capped));
            }
            add(
                "scale: slowest single script call ≤ 5 ms, every row",
                figure,
                s.failures == 0 && s.capped == 0,
            );
        }
        if let Some(c) = &self.cluster {
            add(
                &format!(
                    "cluster: spread shard balance (max/min CPU) ≤ {}",
                    cluster::BALANCE_TARGET
                ),
                format!("{:.2}", c.balance),
                c.balance <= cluster::BALANCE_TARGET,
            );
            add(
                &format!(
                    "cluster: spread Redis CPU per cycle ≤ {}× plain",
                    cluster::CPU_RATIO_TARGET
                ),
                format!("{:.2}×", c.cpu_ratio),
                c.cpu_ratio <= cluster::CPU_RATIO_TARGET,
            );
        }
        if let Some(k) = &self.cluster_keepalive {
            for r in k.runs.iter().filter(|r| r.spread) {
                add(
                    &format!(
                        "cluster keepalive, {}: ≤ {} renewal calls/s per shard",
                        r.label,
                        cluster::RENEWALS_PER_SHARD_TARGET
                    ),
                    if r.busiest.is_nan() {
                        "run failed".to_owned()
                    } else {
                        format!("{:.2}/s (busiest shard)", r.busiest)
                    },
                    r.busiest <= cluster::RENEWALS_PER_SHARD_TARGET,
                );
            }
            let lost: u64 = k.runs.iter().filter_map(|r| r.lost).sum();
            let failed = k.runs.iter().filter(|r| r.lost.is_none()).count();
            add(
                "cluster keepalive: 0 sessions lost (all runs)",
                if failed > 0 {
                    format!("{lost} ({failed} runs failed before their window)")
                } else {
                    lost.to_string()
                },
                lost == 0 && failed == 0,
            );
        }
        t
    }
}
