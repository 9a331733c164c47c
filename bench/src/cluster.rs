//! Scenarios 7 and 8 (`--only cluster`, `--only cluster-keepalive`; not in the default run):
//! leasehold on a local Redis Cluster of 3 primaries (loopback, no replicas, started by
//! `leasehold_testing::RedisCluster` and killed at the end).
//!
//! **7. Throughput and Redis CPU per shard.** Six rows, each 64 uncontended tasks (unless
//! named) cycling lock + unlock on their own lock name (scenario 1's 64-task shape: one client
//! with a pool of 8, one session per task) for a fixed window after a warm-up:
//! - one plain namespace: all its keys share its hash tag, so one slot, so one shard does all
//!   the work;
//! - the same with a third of the tasks, as many as each shard of the spread rows serves, but
//!   on one batcher: it splits the spread row's extra CPU per cycle into what fewer tasks per
//!   shard cost any namespace and what spreading them over sub-namespaces adds;
//! - one spread namespace (`.spread(48)`): 48 sub-namespaces whose hash tags fall evenly over
//!   the slot space, each lock name mapped to one of them by hash;
//! - the same through a pool of 2 connections instead of 8: on a cluster each connection of
//!   the pool goes to every node, so with 8 a node's calls are divided over 8 connections and
//!   seldom arrive together;
//! - the same over `2 × SHARDS` sub-namespaces (`.spread(6)`): more tasks per sub-namespace,
//!   so lock calls share batched script calls again, at the price of a layout that cannot
//!   spread over more than 6 shards;
//! - the raw lock (`SET NX PX` + compare-and-delete `EVALSHA`) through a fred cluster pool of 8,
//!   on 64 keys without a hash tag, so spread over all slots: the floor.
//!
//! For each: the cycles started in the window per second, each node's CPU over the window
//! (`used_cpu_sys + used_cpu_user` from `INFO cpu`, sampled at both ends) as % of a core, the
//! script calls and reads from client connections per cycle (`INFO commandstats`, `INFO
//! stats`), and the Redis CPU per cycle (all nodes' CPU ÷ cycles). Medians over the
//! repetitions. From the CPU per cycle, a projection of cycles/s on 3, 6 and 12 shards, its
//! assumptions printed with it.
//!
//! **8. Keepalive per shard.** Scenario 4's load (10,000 sessions with TTL 10 s, 10 locks each,
//! one client with a pool of 8) on the cluster, then a window in which nothing but the
//! keepalive runs: renewal script calls per second on each shard, from each node's `INFO
//! commandstats` (`fcall` + `evalsha`), and leasehold's own counter of renewal calls; sessions
//! lost must be none. Three runs: a plain namespace; a spread namespace with lock names
//! `k{i}-{j}` (a session's 10 locks fall in about 9 of the 48 sub-namespaces); the same with
//! `{k{i}}-{j}` (a hash tag puts a session's locks in one sub-namespace).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leasehold::metrics as m;
use leasehold_testing::RedisCluster;

use crate::libs::{self, Locker, RawShared};
use crate::servers::{Admin, CmdStat};
use crate::stats::{self, Table};
use crate::{sys, Env, Result};

/// Primaries of the local cluster.
pub const SHARDS: usize = 3;
/// Sub-namespaces of the spread namespace.
pub const SPREAD: u16 = 48;
/// Sub-namespaces of the second spread row: two per shard.
pub const SPREAD_FEW: u16 = 2 * SHARDS as u16;
/// Tasks of the throughput rows, each on its own lock.
const TASKS: usize = 64;
/// Connections of each client's pool (leasehold's and the raw lock's).
const POOL: usize = 8;
/// Connections of the pool in the spread row that shows what a smaller pool changes.
const SMALL_POOL: usize = 2;
/// Keepalive: session TTL, and setup calls in flight at once.
const KA_TTL: Duration = Duration::from_secs(10);
const KA_CONCURRENCY: usize = 64;

/// Projection: shard counts, the share of its core each Redis is run to, and the spread
/// namespace's balance (its busiest shard saturates first).
const PROJECT_SHARDS: [usize; 3] = [3, 6, 12];
const CORE_SHARE: f64 = 0.85;
const SPREAD_BALANCE: f64 = 0.95;

/// Targets: the spread namespace's busiest/least busy shard CPU, its Redis CPU per cycle
/// against the plain namespace's, and renewal calls per second per shard.
pub const BALANCE_TARGET: f64 = 1.2;
pub const CPU_RATIO_TARGET: f64 = 1.3;
pub const RENEWALS_PER_SHARD_TARGET: f64 = 10.0;

/// The local cluster and a statistics connection to each of its nodes.
pub struct Cluster {
    // Dropped after the statistics connections (fields drop in order): kills every node.
    admins: Vec<Admin>,
    nodes: RedisCluster,
    url: String,
}

impl Cluster {
    /// Start the nodes, join them, and connect to each.
    pub async fn start() -> Result<Cluster> {
        let nodes = RedisCluster::start(SHARDS)?;
        let mut admins = Vec::with_capacity(SHARDS);
        for n in nodes.nodes() {
            admins.push(Admin::connect(&n.url()).await?);
        }
        Ok(Cluster {
            url: nodes.url(),
            nodes,
            admins,
        })
    }

    /// The nodes' process ids (for the load line under each section).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.nodes().iter().filter_map(|n| n.pid()).collect()
    }

    pub async fn version(&self) -> Result<String> {
        self.admins[0].version().await
    }

    /// CPU seconds each node has used so far, in node order.
    async fn cpu_seconds(&self) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(self.admins.len());
        for a in &self.admins {
            out.push(a.cpu_seconds().await?);
        }
        Ok(out)
    }

    /// `CONFIG RESETSTAT` on every node.
    async fn reset_stats(&self) -> Result<()> {
        for a in &self.admins {
            a.reset_stats().await?;
        }
        Ok(())
    }

    /// Each node's `INFO commandstats`, in node order.
    async fn commandstats(&self) -> Result<Vec<HashMap<String, CmdStat>>> {
        let mut out = Vec::with_capacity(self.admins.len());
        for a in &self.admins {
            out.push(a.commandstats().await?);
        }
        Ok(out)
    }

    /// Reads from client connections, all nodes, since the last `reset_stats`.
    async fn reads(&self) -> Result<u64> {
        let mut all = 0;
        for a in &self.admins {
            all += a.reads().await?;
        }
        Ok(all)
    }

    /// `FLUSHALL` on every node (each flushes the slots it serves; functions and scripts stay).
    async fn flushall(&self) -> Result<()> {
        for a in &self.admins {
            a.flushall().await?;
        }
        Ok(())
    }

    /// How many of `keys` each node serves (by their hash tags), in node order; asks the
    /// cluster once per distinct tag.
    fn keys_per_shard<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Result<Vec<usize>> {
        let mut owner: HashMap<&str, usize> = HashMap::new();
        let mut out = vec![0; SHARDS];
        for key in keys {
            let tag = hash_tag(key);
            let node = match owner.get(tag) {
                Some(&n) => n,
                None => *owner.entry(tag).or_insert(self.nodes.node_of(tag)?),
            };
            out[node] += 1;
        }
        Ok(out)
    }

    /// A leasehold client on the cluster with a pool of `pool`, on namespace `ns`, spread over
    /// `spread` sub-namespaces (1: not spread).
    async fn leasehold_client(
        &self,
        ns: &str,
        spread: u16,
        pool: usize,
    ) -> Result<leasehold::Client> {
        let builder = leasehold::Client::builder()
            .url(&self.url)
            .namespace(ns)
            .pool_size(pool);
        let builder = if spread > 1 {
            builder.spread(spread)
        } else {
            builder
        };
        Ok(builder.build().await?)
    }
}

/// What Redis Cluster hashes of `key`: the text between its first `{` and the first `}` after
/// it when that is not empty, else the whole key.
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        let rest = &key[open + 1..];
        if let Some(len) = rest.find('}').filter(|&l| l > 0) {
            return &rest[..len];
        }
    }
    key
}

/// `22 / 20 / 22`, in node order.
fn counts(per_shard: &[usize]) -> String {
    let each: Vec<String> = per_shard.iter().map(usize::to_string).collect();
    each.join(" / ")
}

/// Each node's CPU between two samples, in cores (1.0 = one core busy the whole time).
fn cores(before: &[f64], after: &[f64], wall: f64) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| (a - b).max(0.0) / wall)
        .collect()
}

/// Busiest over least busy; infinite when one did nothing measurable.
fn max_over_min(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(0.0, f64::max);
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    if min > 0.0 {
        max / min
    } else {
        f64::INFINITY
    }
}

fn ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "∞".to_owned()
    }
}

/// `41.2 / 0.3 / 0.3 %`, in node order.
fn percents(cores: &[f64]) -> String {
    let each: Vec<String> = cores.iter().map(|c| format!("{:.1}", c * 100.0)).collect();
    format!("{} %", each.join(" / "))
}

/// The commands with their calls added up over the nodes.
fn merged(per_node: &[HashMap<String, CmdStat>]) -> HashMap<String, CmdStat> {
    let mut out: HashMap<String, CmdStat> = HashMap::new();
    for stats in per_node {
        for (k, s) in stats {
            let e = out.entry(k.clone()).or_default();
            e.calls += s.calls;
            e.usec += s.usec;
            e.failed += s.failed;
        }
    }
    out
}

/// Script calls (`fcall` + `evalsha`) a node ran.
fn script_calls(stats: &HashMap<String, CmdStat>) -> u64 {
    ["fcall", "evalsha"]
        .iter()
        .map(|c| stats.get(*c).map_or(0, |s| s.calls))
        .sum()
}

// ---- 7. throughput and CPU per shard -----------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    Plain,
    /// The plain namespace at one shard's share of the tasks: the load each shard of the
    /// spread rows gets, on one batcher instead of 16.
    PlainShare,
    Spread,
    /// The spread namespace through a pool of `SMALL_POOL`: each node's connections carry more
    /// calls each, so more of them arrive together.
    SpreadSmallPool,
    SpreadFew,
    Raw,
}

impl Row {
    const ALL: [Row; 6] = [
        Row::Plain,
        Row::PlainShare,
        Row::Spread,
        Row::SpreadSmallPool,
        Row::SpreadFew,
        Row::Raw,
    ];

    /// Whether all its lock keys share one slot (so one shard does all the work).
    fn one_slot(self) -> bool {
        matches!(self.leasehold(), Some((_, 1)))
    }

    /// Its leasehold namespace and how many sub-namespaces it is spread over (1: not
    /// spread); `None` for the raw lock.
    fn leasehold(self) -> Option<(&'static str, u16)> {
        match self {
            Row::Plain | Row::PlainShare => Some(("plain", 1)),
            Row::Spread => Some(("spread", SPREAD)),
            Row::SpreadSmallPool => Some(("spread-pool", SPREAD)),
            Row::SpreadFew => Some(("spread-few", SPREAD_FEW)),
            Row::Raw => None,
        }
    }

    fn pool(self) -> usize {
        match self {
            Row::SpreadSmallPool => SMALL_POOL,
            _ => POOL,
        }
    }

    fn tasks(self) -> usize {
        match self {
            Row::PlainShare => TASKS / SHARDS,
            _ => TASKS,
        }
    }

    fn name(self) -> String {
        match self {
            Row::Plain => "leasehold, one plain namespace (one slot)".to_owned(),
            Row::PlainShare => format!(
                "leasehold, one plain namespace, {} tasks (as many as each shard of the spread \
                 rows serves)",
                TASKS / SHARDS
            ),
            Row::Spread => format!("leasehold, one spread namespace (`.spread({SPREAD})`)"),
            Row::SpreadSmallPool => format!(
                "leasehold, one spread namespace (`.spread({SPREAD})`), pool of {SMALL_POOL}"
            ),
            Row::SpreadFew => {
                format!("leasehold, one spread namespace (`.spread({SPREAD_FEW})`)")
            }
            Row::Raw => "raw SET NX PX + CAD, keys over all slots".to_owned(),
        }
    }
}

/// One row, one repetition.
struct Point {
    rate: f64,
    /// Each node's CPU over the window, in cores, in node order.
    shard_cpu: Vec<f64>,
    /// All nodes' CPU over the window ÷ the cycles started in it, seconds.
    cpu_per_cycle: f64,
    /// Script calls (`FCALL`, `EVALSHA`) per cycle, over the whole run: below 2 when lock
    /// calls share batched script calls.
    calls_per_cycle: f64,
    /// Reads from client connections per cycle, all nodes, over the whole run: fewer when
    /// requests arrive together (Redis then serves several per wake-up).
    reads_per_cycle: f64,
    /// This process's CPU over the window, in cores.
    client_cpu: f64,
    /// The tasks' lock keys each node serves.
    locks_per_shard: Vec<usize>,
}

pub struct Throughput {
    pub table: Table,
    /// What the table does not say: the nodes' CPU when idle, and the two ratios.
    pub notes: Vec<String>,
    pub projection: Table,
    /// The spread row's busiest/least busy shard CPU, median over the repetitions.
    pub balance: f64,
    /// The spread row's Redis CPU per cycle over the plain row's.
    pub cpu_ratio: f64,
}

pub async fn throughput(env: &Env, c: &Cluster) -> Result<Throughput> {
    let plan = &env.plan;
    c.flushall().await?;
    // What the nodes burn doing nothing (cluster bus, cron): in every row's figures.
    let idle_time = plan.cluster_warmup.max(Duration::from_secs(1));
    let before = c.cpu_seconds().await?;
    let t = Instant::now();
    tokio::time::sleep(idle_time).await;
    let idle = cores(&before, &c.cpu_seconds().await?, t.elapsed().as_secs_f64());

    let mut points: Vec<(Row, Vec<Point>)> = Row::ALL.iter().map(|&r| (r, Vec::new())).collect();
    // Repetitions outermost, so a burst of load from elsewhere hits every row alike.
    for rep in 0..plan.reps {
        for (row, reps) in &mut points {
            eprintln!("  cluster: rep {}/{}, {}", rep + 1, plan.reps, row.name());
            reps.push(point(env, c, *row).await?);
            c.flushall().await?;
        }
    }

    let mut table = Table::new(&[
        "row (64 tasks unless named)",
        "lock keys per shard",
        "cycles/s (median)",
        "min–max of reps",
        "Redis CPU per shard (% of a core, shard 1 / 2 / 3)",
        "busiest / least busy shard",
        "script calls per cycle",
        "reads per cycle",
        "Redis CPU per cycle (all shards)",
        "÷ plain",
        "bench client CPU (% of a core)",
    ]);
    let median = |reps: &[Point], f: &dyn Fn(&Point) -> f64| stats::median(reps.iter().map(f));
    let find = |row: Row| &points.iter().find(|(r, _)| *r == row).expect("measured").1;
    let per_cycle = |row: Row| median(find(row), &|p| p.cpu_per_cycle);
    let balance_of = |row: Row| median(find(row), &|p| max_over_min(&p.shard_cpu));
    for (row, reps) in &points {
        let rate = median(reps, &|p| p.rate);
        let lo = reps.iter().map(|p| p.rate).fold(f64::INFINITY, f64::min);
        let hi = reps.iter().map(|p| p.rate).fold(0.0, f64::max);
        let shard_cpu: Vec<f64> = (0..SHARDS)
            .map(|s| median(reps, &|p| p.shard_cpu[s]))
            .collect();
        table.row(vec![
            row.name(),
            counts(&reps.last().map_or(vec![], |p| p.locks_per_shard.clone())),
            stats::thousands(rate),
            format!("{}–{}", stats::thousands(lo), stats::thousands(hi)),
            percents(&shard_cpu),
            if row.one_slot() {
                "–".to_owned()
            } else {
                ratio(balance_of(*row))
            },
            format!("{:.2}", median(reps, &|p| p.calls_per_cycle)),
            format!("{:.2}", median(reps, &|p| p.reads_per_cycle)),
            format!("{:.1} µs", per_cycle(*row) * 1e6),
            format!("{:.2}×", per_cycle(*row) / per_cycle(Row::Plain)),
            format!("{:.0} %", median(reps, &|p| p.client_cpu) * 100.0),
        ]);
    }

    let balance = balance_of(Row::Spread);
    let cpu_ratio = per_cycle(Row::Spread) / per_cycle(Row::Plain);
    let calls = |row: Row| median(find(row), &|p| p.calls_per_cycle);
    let reads = |row: Row| median(find(row), &|p| p.reads_per_cycle);
    let verdict = |ok: bool| if ok { "holds" } else { "**does not hold**" };
    let notes = vec![
        format!(
            "Nodes idle (before the rows, {:.0} s): {} (cluster bus and cron; inside every \
             figure above).",
            idle_time.as_secs_f64(),
            percents(&idle)
        ),
        format!(
            "**Spread shard balance (max/min CPU): {}** (target ≤ {BALANCE_TARGET}: {}); \
             **spread CPU per cycle / plain CPU per cycle: {cpu_ratio:.2}** (target ≤ \
             {CPU_RATIO_TARGET}: {}).",
            ratio(balance),
            verdict(balance <= BALANCE_TARGET),
            verdict(cpu_ratio <= CPU_RATIO_TARGET),
        ),
        format!(
            "Where the spread row's extra CPU per cycle comes from: {:.2}× with a third of the \
             tasks on the plain namespace (as many as each shard of the spread row serves: \
             {:.2} script calls and {:.2} reads per cycle, against {:.2} and {:.2} with all \
             of them), then {:.2}× from spreading those tasks over a shard's sub-namespaces \
             ({:.2} script calls and {:.2} reads per cycle: a batch is one script, so one \
             slot).",
            per_cycle(Row::PlainShare) / per_cycle(Row::Plain),
            calls(Row::PlainShare),
            reads(Row::PlainShare),
            calls(Row::Plain),
            reads(Row::Plain),
            per_cycle(Row::Spread) / per_cycle(Row::PlainShare),
            calls(Row::Spread),
            reads(Row::Spread),
        ),
        format!(
            "Through a pool of {SMALL_POOL} instead of {POOL}, the spread namespace's Redis CPU \
             per cycle is {:.2}× (÷ plain: {:.2}×): {:.2} reads per cycle instead of {:.2}, \
             as more calls arrive together on fewer connections.",
            per_cycle(Row::SpreadSmallPool) / per_cycle(Row::Spread),
            per_cycle(Row::SpreadSmallPool) / per_cycle(Row::Plain),
            reads(Row::SpreadSmallPool),
            reads(Row::Spread),
        ),
    ];

    let mut projection = Table::new(&[
        "shards",
        "plain namespace (cycles/s)",
        "spread namespace",
        "raw SET NX PX + CAD",
    ]);
    let capacity = |shards: usize, balance: f64, row: Row| {
        stats::thousands(shards as f64 * CORE_SHARE * balance / per_cycle(row))
    };
    for s in PROJECT_SHARDS {
        projection.row(vec![
            s.to_string(),
            capacity(1, 1.0, Row::Plain),
            capacity(s, SPREAD_BALANCE, Row::Spread),
            capacity(s, 1.0, Row::Raw),
        ]);
    }
    Ok(Throughput {
        table,
        notes,
        projection,
        balance,
        cpu_ratio,
    })
}

/// The projection's assumptions, printed above it.
pub fn projection_text() -> String {
    format!(
        "Projected cycles/s = S × {CORE_SHARE} core ÷ (Redis CPU per cycle, all shards, as \
         measured above). Assumes one core per shard, each Redis run to {:.0} % of its core, \
         clients never the bottleneck, and the CPU per cycle measured on {SHARDS} shards at this \
         load unchanged on more. Spread × {SPREAD_BALANCE} for balance (its busiest shard \
         saturates first); raw × 1 (its keys hash over all 16,384 slots); plain is flat: all \
         of a namespace's keys share one slot, so one shard's core whatever S.",
        CORE_SHARE * 100.0
    )
}

async fn point(env: &Env, c: &Cluster, row: Row) -> Result<Point> {
    match row.leasehold() {
        None => {
            let shared = RawShared::connect(&c.url).await?;
            let keys: Vec<String> = (0..row.tasks()).map(|i| format!("bench:raw:{i}")).collect();
            let per_shard = c.keys_per_shard(keys.iter().map(String::as_str))?;
            let lockers = keys
                .into_iter()
                .enumerate()
                .map(|(i, key)| shared.locker(key, format!("token-{i}")))
                .collect();
            measure(env, c, row, lockers, per_shard).await
        }
        Some((ns, spread)) => {
            let client = c.leasehold_client(ns, spread, row.pool()).await?;
            let mut lockers = Vec::with_capacity(row.tasks());
            for i in 0..row.tasks() {
                lockers.push(libs::Leasehold::new(&client, &format!("u{i}")).await?);
            }
            let per_shard = c.keys_per_shard(lockers.iter().map(libs::Leasehold::key))?;
            measure(env, c, row, lockers, per_shard).await
        }
    }
}

/// Run every locker in its own task for the warm-up plus the window; count the cycles started
/// in the window, and the nodes' and this process's CPU over it.
async fn measure<L: Locker>(
    env: &Env,
    c: &Cluster,
    row: Row,
    lockers: Vec<L>,
    locks_per_shard: Vec<usize>,
) -> Result<Point> {
    c.reset_stats().await?;
    let from = Instant::now() + env.plan.cluster_warmup;
    let until = from + env.plan.cluster_window;
    let handles: Vec<_> = lockers
        .into_iter()
        .map(|mut l| {
            tokio::spawn(async move {
                let (mut counted, mut all) = (0u64, 0u64);
                loop {
                    let s = Instant::now();
                    if s >= until {
                        break;
                    }
                    l.lock().await?;
                    l.unlock().await?;
                    all += 1;
                    if s >= from {
                        counted += 1;
                    }
                }
                Ok::<_, crate::Error>((l, counted, all))
            })
        })
        .collect();
    tokio::time::sleep_until(from.into()).await;
    let cpu0 = c.cpu_seconds().await?;
    let client0 = sys::cpu_time_self();
    let t0 = Instant::now();
    tokio::time::sleep_until(until.into()).await;
    let cpu1 = c.cpu_seconds().await?;
    let client = (sys::cpu_time_self() - client0).as_secs_f64();
    let wall = t0.elapsed().as_secs_f64();

    let (mut counted, mut all) = (0, 0);
    for h in handles {
        let (l, n, a) = h.await??;
        l.close().await?;
        counted += n;
        all += a;
    }
    let stats = merged(&c.commandstats().await?);
    let reads = c.reads().await?;
    check_work(&stats, row, all)?;
    let shard_cpu = cores(&cpu0, &cpu1, wall);
    Ok(Point {
        rate: counted as f64 / env.plan.cluster_window.as_secs_f64(),
        cpu_per_cycle: shard_cpu.iter().sum::<f64>() * wall / counted.max(1) as f64,
        calls_per_cycle: script_calls(&stats) as f64 / all.max(1) as f64,
        reads_per_cycle: reads as f64 / all.max(1) as f64,
        shard_cpu,
        client_cpu: client / wall,
        locks_per_shard,
    })
}

/// Make sure every cycle reached Redis (a path that silently did nothing would look fast):
/// the raw lock sends a SET and an EVALSHA per cycle; leasehold's scripts run a ZADD (lock)
/// and a ZREM (unlock) per cycle, however the calls were batched. Counted over all nodes.
fn check_work(stats: &HashMap<String, CmdStat>, row: Row, cycles: u64) -> Result<()> {
    let calls = |cmd: &str| stats.get(cmd).map_or(0, |s| s.calls);
    let ok = match row.leasehold() {
        None => calls("set") >= cycles && calls("evalsha") >= cycles,
        Some(_) => calls("zadd") >= cycles && calls("zrem") >= cycles,
    };
    if ok {
        return Ok(());
    }
    Err(format!(
        "{}: {cycles} cycles counted but the nodes saw only {} SET, {} EVALSHA, {} FCALL, {} \
         ZADD, {} ZREM",
        row.name(),
        calls("set"),
        calls("evalsha"),
        calls("fcall"),
        calls("zadd"),
        calls("zrem")
    )
    .into())
}

// ---- 8. keepalive per shard ----------------------------------------------------------------

/// One keepalive run: the namespace, and whether a session's locks share a hash tag.
#[derive(Debug, Clone, Copy)]
struct KaRun {
    spread: bool,
    tagged: bool,
}

impl KaRun {
    const ALL: [KaRun; 3] = [
        KaRun {
            spread: false,
            tagged: false,
        },
        KaRun {
            spread: true,
            tagged: false,
        },
        KaRun {
            spread: true,
            tagged: true,
        },
    ];

    fn label(self) -> String {
        let names = if self.tagged {
            "`{k{i}}-{j}`"
        } else {
            "`k{i}-{j}`"
        };
        if self.spread {
            format!("spread ({SPREAD}), {names}")
        } else {
            format!("plain, {names}")
        }
    }

    /// Its own namespace: a namespace records whether it is spread, and over how many.
    fn namespace(self) -> &'static str {
        match (self.spread, self.tagged) {
            (false, _) => "ka-plain",
            (true, false) => "ka-spread",
            (true, true) => "ka-spread-tagged",
        }
    }

    /// Lock `j` of session `i`.
    fn lock_name(self, i: usize, j: usize) -> String {
        if self.tagged {
            format!("{{k{i}}}-{j}")
        } else {
            format!("k{i}-{j}")
        }
    }
}

/// What one run's window showed, for the targets.
pub struct KaFigure {
    pub label: String,
    pub spread: bool,
    /// Script calls per second on the busiest shard.
    pub busiest: f64,
    /// Sessions lost: the larger of leasehold's counter and the sessions not valid at the end;
    /// `None` when the run failed before its window.
    pub lost: Option<u64>,
}

pub struct Keepalive {
    pub table: Table,
    pub runs: Vec<KaFigure>,
}

pub async fn keepalive(env: &Env, c: &Cluster) -> Result<Keepalive> {
    let head = [
        "namespace, lock names",
        "setup: sessions opened / locks taken",
        "locks per shard",
        "hash tags per session (mean)",
        "renewal calls/s (leasehold_renew_calls_total)",
        "script calls/s per shard (FCALL + EVALSHA, shard 1 / 2 / 3)",
        "busiest shard",
        "leases per renewal call (mean)",
        "leases renewed/s (sub-leases included)",
        "Redis µs per script call (mean)",
        "Redis CPU per shard (% of a core)",
        "client CPU (% of a core)",
        "sessions lost (counter / not valid) · guards not valid · jeopardy",
        "teardown: unlock all, close all",
    ];
    let table_width = head.len();
    let mut table = Table::new(&head);
    let mut runs = Vec::new();
    for run in KaRun::ALL {
        c.flushall().await?;
        let f = match keepalive_run(env, c, run).await {
            Ok(f) => f,
            Err(e) => {
                // Reported in the table and the targets; the next run still goes.
                eprintln!("  cluster keepalive, {}: failed: {e}", run.label());
                // What the failed run dropped (sessions revoked in the background) settles
                // before the keys go.
                tokio::time::sleep(Duration::from_secs(2)).await;
                c.flushall().await?;
                let mut cells = vec![run.label(), format!("**failed**: {e}")];
                cells.resize(table_width, "–".to_owned());
                table.row(cells);
                runs.push(KaFigure {
                    label: run.label(),
                    spread: run.spread,
                    busiest: f64::NAN,
                    lost: None,
                });
                continue;
            }
        };
        c.flushall().await?;
        let per_shard: Vec<f64> = f.calls.iter().map(|&n| n as f64 / f.wall).collect();
        let busiest = per_shard.iter().copied().fold(0.0, f64::max);
        let lost = f.lost_counted.max(f.not_valid);
        table.row(vec![
            run.label(),
            format!(
                "{:.1} s / {:.1} s",
                f.open_time.as_secs_f64(),
                f.lock_time.as_secs_f64()
            ),
            counts(&f.locks_per_shard),
            format!("{:.1}", f.tags_per_session),
            format!("{:.2}", f.renew_calls as f64 / f.wall),
            per_shard
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" / "),
            format!("**{busiest:.2}/s**"),
            format!("{:.0}", f.leases_per_call),
            stats::thousands(f.leases_renewed / f.wall),
            format!("{:.0}", f.usec_per_call),
            percents(&f.redis_cpu),
            format!("{:.2} %", f.client_cpu * 100.0),
            format!(
                "**{} / {}** · {} · {}",
                f.lost_counted, f.not_valid, f.guards_not_valid, f.jeopardy
            ),
            match &f.teardown {
                Ok(d) => format!("{:.1} s", d.as_secs_f64()),
                Err(e) => format!("**failed**: {e}"),
            },
        ]);
        runs.push(KaFigure {
            label: run.label(),
            spread: run.spread,
            busiest,
            lost: Some(lost),
        });
    }
    Ok(Keepalive { table, runs })
}

/// A setup or teardown step's error, saying how far it got.
fn stuck(
    step: &str,
    done: &AtomicUsize,
    of: usize,
    since: Instant,
    e: crate::Error,
) -> crate::Error {
    format!(
        "{step}: {e} (after {} of {} in {:.1} s)",
        stats::thousands(done.load(Ordering::Relaxed) as f64),
        stats::thousands(of as f64),
        since.elapsed().as_secs_f64()
    )
    .into()
}

/// One run's raw figures.
struct KaPoint {
    open_time: Duration,
    lock_time: Duration,
    /// Where the locks are: how many each node serves, and the distinct hash tags of a
    /// session's lock keys (sub-namespaces touched), mean over the sessions.
    locks_per_shard: Vec<usize>,
    tags_per_session: f64,
    wall: f64,
    renew_calls: u64,
    /// Script calls each node ran in the window, in node order, and their mean time inside
    /// Redis.
    calls: Vec<u64>,
    usec_per_call: f64,
    leases_per_call: f64,
    leases_renewed: f64,
    redis_cpu: Vec<f64>,
    client_cpu: f64,
    lost_counted: u64,
    not_valid: u64,
    guards_not_valid: usize,
    jeopardy: u64,
    /// Unlocking every lock and closing every session: the time, or how it failed.
    teardown: std::result::Result<Duration, String>,
}

async fn keepalive_run(env: &Env, c: &Cluster, run: KaRun) -> Result<KaPoint> {
    let sessions_n = env.plan.cluster_ka_sessions;
    let per = env.plan.ka_locks_per_session;
    let locks_n = sessions_n * per;
    let spread = if run.spread { SPREAD } else { 1 };
    let client = c.leasehold_client(run.namespace(), spread, POOL).await?;
    let opts = leasehold::SessionOptions::new().ttl(KA_TTL);

    eprintln!(
        "  cluster keepalive, {}: opening {sessions_n} sessions",
        run.label()
    );
    let t = Instant::now();
    let opened = AtomicUsize::new(0);
    let sessions: Vec<leasehold::Session> = crate::run_all(sessions_n, KA_CONCURRENCY, |_| {
        let session = client.session_with(opts.clone());
        let opened = &opened;
        async move {
            let s = session.await?;
            opened.fetch_add(1, Ordering::Relaxed);
            Ok::<_, crate::Error>(s)
        }
    })
    .await
    .map_err(|e| stuck("opening sessions", &opened, sessions_n, t, e))?;
    let open_time = t.elapsed();

    eprintln!("  cluster keepalive: taking {locks_n} locks");
    let t = Instant::now();
    let sessions_ref = &sessions;
    let taken = AtomicUsize::new(0);
    let taken_ref = &taken;
    let guards: Vec<leasehold::MutexGuard> =
        crate::run_all(locks_n, KA_CONCURRENCY, |i| async move {
            let s = &sessions_ref[i / per];
            let guard = s.mutex(&run.lock_name(i / per, i % per))?.lock().await?;
            taken_ref.fetch_add(1, Ordering::Relaxed);
            Ok::<_, crate::Error>(guard)
        })
        .await
        .map_err(|e| stuck("taking locks", &taken, locks_n, t, e))?;
    let lock_time = t.elapsed();
    let locks_per_shard = c.keys_per_shard(guards.iter().map(leasehold::MutexGuard::key))?;
    let tags: usize = guards
        .chunks(per)
        .map(|g| {
            let mut t: Vec<&str> = g.iter().map(|g| hash_tag(g.key())).collect();
            t.sort_unstable();
            t.dedup();
            t.len()
        })
        .sum();
    let tags_per_session = tags as f64 / sessions_n.max(1) as f64;

    eprintln!(
        "  cluster keepalive: watching for {} s",
        env.plan.ka_window.as_secs()
    );
    let totals = env.totals;
    let calls0 = totals.counter(m::RENEW_CALLS);
    let lost0 = totals.counter(m::SESSION_LOST);
    let jeopardy0 = totals.counter(m::SESSION_JEOPARDY);
    let batch0 = totals.histogram(m::RENEW_BATCH);
    c.reset_stats().await?;
    let redis0 = c.cpu_seconds().await?;
    let cpu0 = sys::cpu_time_self();
    let t0 = Instant::now();
    tokio::time::sleep(env.plan.ka_window).await;
    let wall = t0.elapsed().as_secs_f64();
    let client_cpu = (sys::cpu_time_self() - cpu0).as_secs_f64() / wall;
    let redis_cpu = cores(&redis0, &c.cpu_seconds().await?, wall);
    let stats = c.commandstats().await?;
    let calls: Vec<u64> = stats.iter().map(script_calls).collect();
    let all = merged(&stats);
    let usec: u64 = ["fcall", "evalsha"]
        .iter()
        .map(|k| all.get(*k).map_or(0, |s| s.usec))
        .sum();
    let usec_per_call = usec as f64 / calls.iter().sum::<u64>().max(1) as f64;
    let renew_calls = totals.counter(m::RENEW_CALLS) - calls0;
    let lost_counted = totals.counter(m::SESSION_LOST) - lost0;
    let jeopardy = totals.counter(m::SESSION_JEOPARDY) - jeopardy0;
    let batch = totals.histogram(m::RENEW_BATCH);
    let leases_renewed = batch.sum - batch0.sum;
    let leases_per_call = leases_renewed / (batch.count - batch0.count).max(1) as f64;
    let not_valid = sessions.iter().filter(|s| !s.is_valid()).count() as u64;
    let guards_not_valid = guards.iter().filter(|g| !g.is_valid()).count();

    eprintln!("  cluster keepalive: releasing {locks_n} locks, closing {sessions_n} sessions");
    let teardown = teardown(guards, &sessions).await;
    drop(sessions);
    drop(client);

    Ok(KaPoint {
        open_time,
        lock_time,
        locks_per_shard,
        tags_per_session,
        wall,
        renew_calls,
        calls,
        usec_per_call,
        leases_per_call,
        leases_renewed,
        redis_cpu,
        client_cpu,
        lost_counted,
        not_valid,
        guards_not_valid,
        jeopardy,
        teardown: teardown.map_err(|e| e.to_string()),
    })
}

/// Unlock every lock, then close every session; how long that took.
async fn teardown(
    guards: Vec<leasehold::MutexGuard>,
    sessions: &[leasehold::Session],
) -> Result<Duration> {
    let t = Instant::now();
    let locks_n = guards.len();
    let guards = Arc::new(Mutex::new(guards.into_iter().map(Some).collect::<Vec<_>>()));
    let released = AtomicUsize::new(0);
    crate::run_all(locks_n, KA_CONCURRENCY, |i| {
        let g = guards.lock().unwrap()[i].take();
        let released = &released;
        async move {
            g.ok_or("guard taken twice")?.unlock().await?;
            released.fetch_add(1, Ordering::Relaxed);
            Ok::<_, crate::Error>(())
        }
    })
    .await
    .map_err(|e| stuck("releasing locks", &released, locks_n, t, e))?;
    let closed = AtomicUsize::new(0);
    crate::run_all(sessions.len(), KA_CONCURRENCY, |i| {
        let closed = &closed;
        async move {
            sessions[i].close().await?;
            closed.fetch_add(1, Ordering::Relaxed);
            Ok::<_, crate::Error>(())
        }
    })
    .await
    .map_err(|e| stuck("closing sessions", &closed, sessions.len(), t, e))?;
    Ok(t.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_merging() {
        assert_eq!(max_over_min(&[0.5, 0.25, 0.4]), 2.0);
        assert!(max_over_min(&[0.5, 0.0]).is_infinite());
        assert_eq!(ratio(f64::INFINITY), "∞");
        assert_eq!(percents(&[0.412, 0.003]), "41.2 / 0.3 %");
        let node = |calls| {
            HashMap::from([(
                "fcall".to_owned(),
                CmdStat {
                    calls,
                    usec: 10,
                    failed: 0,
                },
            )])
        };
        let all = merged(&[node(3), node(4)]);
        assert_eq!((all["fcall"].calls, all["fcall"].usec), (7, 20));
        assert_eq!(script_calls(&node(5)), 5);
        assert_eq!(KaRun::ALL[2].lock_name(7, 3), "{k7}-3");
        assert_eq!(KaRun::ALL[1].lock_name(7, 3), "k7-3");
        assert_eq!(hash_tag("{ns}:mutex:{k1}-2"), "ns");
        assert_eq!(hash_tag("bench:raw:5"), "bench:raw:5");
        assert_eq!(hash_tag("a{}b{c}"), "a{}b{c}");
        assert_eq!(hash_tag("a{b"), "a{b");
        assert_eq!(counts(&[22, 20, 22]), "22 / 20 / 22");
    }
}
