//! Scenario 6: script calls at scale. Redis runs one script at a time, so a script call that
//! walks a large set keeps every other client waiting for as long as it runs. For each workload
//! and size (10k, 100k, 1M entries; `--quick`: 10k, 100k) this measures the Redis-side time of
//! the slowest single script call (`EVALSHA`/`EVAL`/`FCALL`) the operation made, from Redis's
//! slow log: `SLOWLOG RESET` and `CONFIG RESETSTAT` right before the operation (after the
//! setup), every command of 0.1 ms or more logged, then `SLOWLOG GET -1` and
//! `INFO commandstats` (the number of script calls and their total time) 0.3 s after it
//! returned, so that calls it left to the background are counted. Target: at most 5 ms at
//! every size.
//!
//! Workloads:
//! - **revoke**: a session (TTL 1 h, so no renewal falls in the window) with N keys put with
//!   its lease, closed with `Session::close()`; then all N keys must be gone.
//! - **sweep**: a lease (granted with `Client::grant`, renewed by nobody) with N keys, made to
//!   expire by setting its registry score in the past; another client's session (TTL 3 s,
//!   renewed every second) sweeps it in its renewals. Measured from the expiry until every key
//!   is gone, or the wait bound.
//! - **get_prefix**: the key index with N entries whose key hashes are gone plus 3 live keys
//!   (first, middle, last); one `get_prefix` over the prefix must return the 3 live keys.
//! - **rwlock**: N readers hold one RwLock (taken through the API over 16 sessions); then one
//!   more `read()`, one `try_write()` (refused), and the release of the first reader.
//! - **semaphore**: a Semaphore of size N with N - 1 holders of one permit (through the API);
//!   then one more `acquire()`, one `try_acquire_many` of one permit more than is free
//!   (refused), and the release of the first holder.
//! - **control** (not leasehold's, not judged): 200 calls of one fixed script of about 2 ms.
//!   Its slowest call against its median shows what the machine alone does to "the slowest
//!   call" (Redis measures wall time: a script interrupted by the scheduler counts the pause).
//!
//! The keys of revoke and sweep, and the dead index entries, are written directly (pipelined
//! commands), in the layout `lua/kv/kv_put.lua` writes; a key put through the API next to them
//! checks that layout first. Readers and holders go through the public API only, as many as
//! the setup budget allows: a row that could not take all N says so, and larger sizes of that
//! workload are not run (they would stop at the same count). Every row runs in its own
//! namespace after a `FLUSHALL`.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use fred::clients::Pool;
use fred::prelude::{
    ClientLike, Config, HashesInterface, KeysInterface, SetsInterface, SortedSetsInterface,
};
use fred::types::Value;
use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::servers::{ScriptCalls, SCRIPT_COMMANDS};
use crate::stats::{self, Table};
use crate::{Env, Result};

/// The target: no single script call keeps Redis busy longer than this.
pub const TARGET: Duration = Duration::from_millis(5);
/// Commands that run this long or longer are logged while measuring. Not 0: Redis 7 logs the
/// commands a script runs as well, so at 0 a large revoke logs millions of entries (the log
/// overflows and loses script calls), and logging each one made the scripts measured about a
/// third slower. Script calls are counted from `INFO commandstats` instead.
const SLOWLOG_FLOOR_US: u64 = 100;
/// Slow log entries kept while measuring (a full log is reported).
const SLOWLOG_LEN: u64 = 100_000;
/// How long a window stays open after its operation returned, for the calls it left to the
/// background (a released guard, a withdrawal).
const SETTLE: Duration = Duration::from_millis(300);
/// TTL of the sessions and leases whose renewals must not fall in a measured window.
const LONG_TTL: Duration = Duration::from_secs(3600);
/// TTL of the sweeping client's session: renewed (and so sweeping) every second.
const SWEEPER_TTL: Duration = Duration::from_secs(3);
/// Command timeout of the bench's leasehold clients: long, so that a slow script is waited
/// for and measured rather than abandoned by the client.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a revoke's keys may take to go after `close()` returned (a background finish).
const REVOKE_SETTLE: Duration = Duration::from_secs(10);
/// Limit of a setup that writes directly (it takes seconds; this only bounds a stall).
const DIRECT_SETUP_LIMIT: Duration = Duration::from_secs(300);
/// Directly written keys per pipeline.
const CHUNK: usize = 1000;
/// Sessions the readers and holders are spread over, and API calls in flight while taking them.
const SESSIONS: usize = 16;
const IN_FLIGHT: usize = 32;
const PREFIX: &str = "scale/";
/// How often a wait for keys to go looks.
const POLL: Duration = Duration::from_millis(100);
/// Between rows: no script call for this long means the last row's background work is over;
/// it is waited for at most `QUIESCE_LIMIT`.
const QUIET: Duration = Duration::from_millis(500);
const QUIESCE_LIMIT: Duration = Duration::from_secs(120);

/// The workloads' names in the table (rwlock and semaphore: `Shared::steps`).
const REVOKE: &str = "revoke: `Session::close()`";
const SWEEP: &str = "sweep: expired lease, another client's renewals";
const GET_PREFIX: &str = "get_prefix: dead index entries + 3 live keys";

pub struct Outcome {
    pub table: Table,
    /// The slowest script call of any row, and its row.
    pub worst: Option<(Duration, String)>,
    /// Rows that missed the target, failed their check, timed out or could not run.
    pub failures: usize,
    /// Rows that ran on fewer entries than their size.
    pub capped: usize,
    /// What else was seen (background work between rows).
    pub notes: Vec<String>,
}

/// One measured operation.
struct Measured {
    calls: ScriptCalls,
    wall: Duration,
    /// The operation did not finish within its bound.
    timed_out: Option<Duration>,
    /// What was checked afterwards: `Ok(note)`, or `Err(what is wrong)`.
    check: std::result::Result<String, String>,
}

enum RowOutcome {
    Measured(Measured),
    /// Not measured, and why.
    NotRun(String),
}

struct Row {
    workload: String,
    size: usize,
    setup: String,
    /// Ran on fewer entries than `size`.
    capped: bool,
    outcome: RowOutcome,
}

impl Row {
    /// The control row (size 0): not leasehold's, not judged.
    fn is_control(&self) -> bool {
        self.size == 0
    }
}

fn size_label(n: usize) -> String {
    match n {
        0 => "–".to_owned(),
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => stats::thousands(n as f64),
    }
}

pub async fn run(env: &Env) -> Result<Outcome> {
    let raw = raw_pool(&env.redis_url).await?;
    let mut rows: Vec<Row> = Vec::new();
    let mut notes = Vec::new();
    let sizes = env.plan.scale_sizes.clone();

    for &n in &sizes {
        eprintln!("  scale: revoke, {} keys", size_label(n));
        rows.push(revoke(env, &raw, n).await?);
        reset(env, &format!("revoke {}", size_label(n)), &mut notes).await?;
    }
    let mut short: Option<String> = None;
    for &n in &sizes {
        if let Some(why) = &short {
            rows.push(not_run(SWEEP, n, why));
            continue;
        }
        eprintln!("  scale: sweep, {} keys", size_label(n));
        let row = sweep(env, &raw, n).await?;
        if matches!(&row.outcome, RowOutcome::Measured(m) if m.timed_out.is_some()) {
            short = Some(format!(
                "not run: the {} row did not finish within {} s",
                size_label(n),
                env.plan.scale_wait.as_secs()
            ));
        }
        rows.push(row);
        reset(env, &format!("sweep {}", size_label(n)), &mut notes).await?;
    }
    for &n in &sizes {
        eprintln!("  scale: get_prefix, {} dead index entries", size_label(n));
        rows.push(get_prefix(env, &raw, n).await?);
        reset(env, &format!("get_prefix {}", size_label(n)), &mut notes).await?;
    }
    for kind in [Shared::RwLock, Shared::Semaphore] {
        let mut short: Option<String> = None;
        for &n in &sizes {
            if let Some(why) = &short {
                for step in kind.steps() {
                    rows.push(not_run(step, n, why));
                }
                continue;
            }
            eprintln!(
                "  scale: {}, {} {}",
                kind.name(),
                size_label(n),
                kind.holders()
            );
            let (got, mut r) = shared(env, kind, n).await?;
            if got < kind.wanted(n) {
                short = Some(format!(
                    "not run: the {} row was capped at {} {}",
                    size_label(n),
                    stats::thousands(got as f64),
                    kind.holders()
                ));
            }
            rows.append(&mut r);
            let after = format!("{} {}", kind.name(), size_label(n));
            reset(env, &after, &mut notes).await?;
        }
    }
    eprintln!("  scale: control, a fixed script without leasehold");
    rows.push(control(env, &raw).await?);
    reset(env, "control", &mut notes).await?;
    env.admin.slowlog_defaults().await?;
    raw.quit().await?;
    let mut out = outcome(rows);
    out.notes = notes;
    Ok(out)
}

fn outcome(rows: Vec<Row>) -> Outcome {
    let mut table = Table::new(&[
        "workload",
        "size",
        "setup",
        "script calls",
        "slowest script call (Redis)",
        "all script calls (Redis)",
        "total wall time",
        "≤ 5 ms?",
        "check",
    ]);
    let mut worst: Option<(Duration, String)> = None;
    let (mut failures, mut capped) = (0, 0);
    for r in rows {
        let size = size_label(r.size);
        capped += usize::from(r.capped);
        let judged = !r.is_control();
        let cells = match &r.outcome {
            RowOutcome::NotRun(why) => {
                failures += usize::from(judged);
                vec![
                    "–".into(),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                    why.clone(),
                ]
            }
            RowOutcome::Measured(m) => {
                let slowest = m.calls.max();
                if let Some(d) = slowest.filter(|_| judged) {
                    if worst.as_ref().is_none_or(|(w, _)| d > *w) {
                        worst = Some((d, format!("{}, {size}", r.workload)));
                    }
                }
                // Below the slow log's floor counts as within (the floor is far below it).
                let within = m.calls.calls > 0 && slowest.is_none_or(|d| d <= TARGET);
                if judged && (!within || m.timed_out.is_some() || m.check.is_err()) {
                    failures += 1;
                }
                let mut calls = stats::thousands(m.calls.calls as f64);
                let noscript = m.calls.noscript.min(m.calls.failed);
                if noscript > 0 {
                    calls.push_str(&format!(" ({noscript} NOSCRIPT: first use, then loaded)"));
                }
                if m.calls.failed > noscript {
                    calls.push_str(&format!(
                        " (**{} answered an error**)",
                        m.calls.failed - noscript
                    ));
                }
                let floor = Duration::from_micros(m.calls.floor_us);
                let mut slowest_cell = match (m.calls.calls, slowest) {
                    (0, _) => "– (no script call)".to_owned(),
                    (_, None) => format!("< {}", stats::ms(floor)),
                    (_, Some(d)) if m.calls.logged > 2 => format!(
                        "{} (median {}; {} over 5 ms)",
                        stats::ms(d),
                        stats::ms(Duration::from_micros(m.calls.median_us)),
                        stats::thousands(m.calls.over as f64)
                    ),
                    (_, Some(d)) => stats::ms(d),
                };
                if m.calls.full {
                    slowest_cell.push_str(" (slow log full: the earliest calls may be missing)");
                }
                if m.timed_out.is_some() && slowest.is_some() {
                    slowest_cell.push_str(" (until the timeout)");
                }
                let total = stats::ms(Duration::from_micros(m.calls.total_us));
                let wall = match m.timed_out {
                    Some(limit) => format!("timed out after {:.0} s", limit.as_secs_f64()),
                    None => stats::ms(m.wall),
                };
                let ok = match (m.calls.calls, m.timed_out, within) {
                    (0, _, _) => "–".to_owned(),
                    (_, Some(_), _) => "**no** (timed out)".to_owned(),
                    (_, None, true) => "yes".to_owned(),
                    (_, None, false) => "**no**".to_owned(),
                };
                let check = match &m.check {
                    Ok(note) => note.clone(),
                    Err(problem) => format!("**{problem}**"),
                };
                vec![calls, slowest_cell, total, wall, ok, check]
            }
        };
        let mut row = vec![r.workload, size, r.setup];
        row.extend(cells);
        table.row(row);
    }
    Outcome {
        table,
        worst,
        failures,
        capped,
        notes: Vec::new(),
    }
}

fn not_run(workload: &str, n: usize, why: &str) -> Row {
    Row {
        workload: workload.to_owned(),
        size: n,
        setup: "–".into(),
        capped: false,
        outcome: RowOutcome::NotRun(why.to_owned()),
    }
}

/// Between rows: nothing left in Redis, logging off, and no script call for `QUIET` (the
/// background work of the row's dropped clients: releases of dropped guards, revokes of
/// dropped sessions), so that none of it falls in the next row. When that work went on for a
/// while, a note says so.
async fn reset(env: &Env, after: &str, notes: &mut Vec<String>) -> Result<()> {
    env.admin.slowlog_stop().await?;
    env.admin.flushall().await?;
    let t = Instant::now();
    let mut last = script_calls_so_far(env).await?;
    loop {
        tokio::time::sleep(QUIET).await;
        let now = script_calls_so_far(env).await?;
        let busy = t.elapsed().saturating_sub(QUIET);
        if now == last {
            if busy >= Duration::from_secs(2) {
                notes.push(format!(
                    "After the {after} row, its dropped client kept making script calls in the \
                     background (releases of dropped guards, revokes of dropped sessions) for \
                     {:.0} s.",
                    busy.as_secs_f64()
                ));
            }
            return Ok(());
        }
        if busy >= QUIESCE_LIMIT {
            notes.push(format!(
                "After the {after} row, its dropped client was still making script calls in \
                 the background {} s later; the next rows ran alongside.",
                QUIESCE_LIMIT.as_secs()
            ));
            return Ok(());
        }
        last = now;
    }
}

/// Script calls Redis has run since its statistics were last reset.
async fn script_calls_so_far(env: &Env) -> Result<u64> {
    let stats = env.admin.commandstats().await?;
    Ok(SCRIPT_COMMANDS
        .iter()
        .filter_map(|c| stats.get(&c.to_ascii_lowercase()))
        .map(|c| c.calls)
        .sum())
}

/// Run `op` (at most `limit`) in a window of script calls, which stays open for `SETTLE`
/// after it so that calls it left to the background are counted. The wall time is the
/// operation's own.
async fn measure<T>(
    env: &Env,
    limit: Duration,
    op: impl Future<Output = T>,
) -> Result<(Option<T>, ScriptCalls, Duration)> {
    env.admin
        .script_window_start(SLOWLOG_FLOOR_US, SLOWLOG_LEN)
        .await?;
    let t = Instant::now();
    let out = tokio::time::timeout(limit, op).await.ok();
    let wall = t.elapsed();
    tokio::time::sleep(SETTLE).await;
    let calls = env
        .admin
        .script_window_end(SLOWLOG_FLOOR_US, SLOWLOG_LEN, TARGET.as_micros() as u64)
        .await?;
    Ok((out, calls, wall))
}

async fn client(env: &Env, namespace: &str) -> Result<leasehold::Client> {
    Ok(leasehold::Client::builder()
        .url(&env.redis_url)
        .namespace(namespace)
        .pool_size(8)
        .command_timeout(COMMAND_TIMEOUT)
        .build()
        .await?)
}

fn long_session() -> leasehold::SessionOptions {
    leasehold::SessionOptions::new().ttl(LONG_TTL)
}

fn mib(bytes: i64) -> String {
    stats::bytes(bytes as f64)
}

// ---- direct writes -----------------------------------------------------------------------

async fn raw_pool(url: &str) -> Result<Pool> {
    let pool = fred::types::Builder::from_config(Config::from_url(url)?).build_pool(8)?;
    pool.init().await?;
    Ok(pool)
}

/// The names of the N keys of a row: `scale/0000000` … (byte order = index order).
fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{PREFIX}{i:07}")).collect()
}

fn key_of(ns: &str, name: &str) -> String {
    format!("{{{ns}}}:key:{name}")
}

/// Write `names` as keys put with `lease`, as `lua/kv/kv_put.lua` writes them: the key hash
/// `{ns}:key:<name>` (v, lease, crev, mrev, ver), the index `{ns}:keys` (score 0) and the
/// lease's attachment set (`k <key>`), with revisions from the counter `{ns}:rev`, which is
/// left at the last one.
async fn put_attached(raw: &Pool, ns: &str, lease: &str, names: &[String]) -> Result<()> {
    let rev_key = format!("{{{ns}}}:rev");
    let index = format!("{{{ns}}}:keys");
    let attached = format!("{{{ns}}}:attached:{lease}");
    let cur: Option<String> = raw.get(&rev_key).await?;
    let base: u64 = cur.as_deref().unwrap_or("0").parse()?;
    stream::iter(names.chunks(CHUNK).enumerate())
        .map(|(c, chunk)| {
            let (index, attached) = (&index, &attached);
            async move {
                let p = raw.next().pipeline();
                for (j, name) in chunk.iter().enumerate() {
                    let rev = (base + 1 + (c * CHUNK + j) as u64).to_string();
                    let fields = vec![
                        ("v", "value".to_owned()),
                        ("lease", lease.to_owned()),
                        ("crev", rev.clone()),
                        ("mrev", rev),
                        ("ver", "1".to_owned()),
                    ];
                    let () = p.hset(key_of(ns, name), fields).await?;
                }
                let members: Vec<(f64, String)> = chunk.iter().map(|n| (0.0, n.clone())).collect();
                let () = p.zadd(index, None, None, false, false, members).await?;
                let entries: Vec<String> = chunk
                    .iter()
                    .map(|n| format!("k {}", key_of(ns, n)))
                    .collect();
                let () = p.sadd(attached, entries).await?;
                let _: Vec<Value> = p.all().await?;
                Ok::<_, crate::Error>(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    let last = base + names.len() as u64;
    let () = raw
        .set(&rev_key, last.to_string(), None, None, false)
        .await?;
    Ok(())
}

/// Put one key through the API with `lease` and compare what it wrote with the direct writes
/// (`sample`): the same hash fields, an index entry, an attachment entry. Deleted again after.
async fn check_layout(
    raw: &Pool,
    client: &leasehold::Client,
    lease: leasehold::LeaseId,
    sample: &str,
) -> std::result::Result<(), String> {
    let ns = client.namespace();
    let reference = "scale-layout-check";
    let e = |e: &dyn std::fmt::Display| e.to_string();
    client
        .put(reference, "value", Some(lease))
        .await
        .map_err(|x| e(&x))?;
    let api: HashMap<String, String> = raw
        .hgetall(key_of(ns, reference))
        .await
        .map_err(|x| e(&x))?;
    let direct: HashMap<String, String> =
        raw.hgetall(key_of(ns, sample)).await.map_err(|x| e(&x))?;
    let mut api_fields: Vec<&String> = api.keys().collect();
    let mut direct_fields: Vec<&String> = direct.keys().collect();
    api_fields.sort();
    direct_fields.sort();
    let attached: bool = raw
        .sismember(
            format!("{{{ns}}}:attached:{lease}"),
            format!("k {}", key_of(ns, reference)),
        )
        .await
        .map_err(|x| e(&x))?;
    let indexed: Option<f64> = raw
        .zscore(format!("{{{ns}}}:keys"), reference)
        .await
        .map_err(|x| e(&x))?;
    // The library reads a directly written key as its own.
    let read = client.get(sample).await.map_err(|x| e(&x))?;
    client.delete(reference).await.map_err(|x| e(&x))?;
    if api_fields != direct_fields {
        return Err(format!(
            "direct writes do not match kv_put's layout: fields {api_fields:?} against \
             {direct_fields:?}"
        ));
    }
    if !attached || indexed != Some(0.0) {
        return Err(format!(
            "kv_put's layout changed: attachment entry {attached}, index score {indexed:?}"
        ));
    }
    match read {
        Some(kv) if kv.lease == Some(lease) && kv.value == "value" && kv.version == 1 => Ok(()),
        other => Err(format!("a directly written key reads back as {other:?}")),
    }
}

/// How many of the keys `names` exist.
async fn count_keys(raw: &Pool, ns: &str, names: &[String]) -> Result<u64> {
    let counts: Vec<i64> = stream::iter(names.chunks(CHUNK))
        .map(|chunk| {
            let keys: Vec<String> = chunk.iter().map(|n| key_of(ns, n)).collect();
            raw.exists::<i64, _>(keys)
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    Ok(counts.iter().sum::<i64>() as u64)
}

/// Whether the lease still has an attachment set or a registry entry (a revoke or sweep not
/// finished yet). Errors (say `BUSY` while a long script runs) count as not finished.
async fn lease_remains(raw: &Pool, ns: &str, lease: &str) -> bool {
    let set: std::result::Result<i64, _> = raw.exists(format!("{{{ns}}}:attached:{lease}")).await;
    let reg: std::result::Result<Option<f64>, _> =
        raw.zscore(format!("{{{ns}}}:leases"), lease).await;
    !matches!((set, reg), (Ok(0), Ok(None)))
}

/// Poll until the lease is gone or `until`; returns when it was seen gone.
async fn wait_gone(raw: &Pool, ns: &str, lease: &str, until: Instant) -> Option<Instant> {
    loop {
        if !lease_remains(raw, ns, lease).await {
            return Some(Instant::now());
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What is left of the N keys, the index and the attachment set, as a check result.
async fn keys_left(
    raw: &Pool,
    ns: &str,
    lease: &str,
    names: &[String],
) -> Result<std::result::Result<String, String>> {
    let left = count_keys(raw, ns, names).await?;
    let index: i64 = raw.zcard(format!("{{{ns}}}:keys")).await?;
    let attached: i64 = raw.scard(format!("{{{ns}}}:attached:{lease}")).await?;
    let registered: Option<f64> = raw.zscore(format!("{{{ns}}}:leases"), lease).await?;
    let n = stats::thousands(names.len() as f64);
    if left == 0 && index == 0 && attached == 0 && registered.is_none() {
        Ok(Ok(format!("all {n} keys gone")))
    } else {
        Ok(Err(format!(
            "{} of {n} keys left (index {}, attachment set {}, lease {} the registry)",
            stats::thousands(left as f64),
            stats::thousands(index as f64),
            stats::thousands(attached as f64),
            if registered.is_some() {
                "still in"
            } else {
                "gone from"
            }
        )))
    }
}

/// Write N attached keys for `lease`, check the layout; the setup cell, or why not.
async fn populate(
    env: &Env,
    raw: &Pool,
    client: &leasehold::Client,
    lease: leasehold::LeaseId,
    names: &[String],
) -> Result<std::result::Result<String, String>> {
    let ns = client.namespace();
    let mem0 = env.admin.used_memory().await?;
    let t = Instant::now();
    let id = lease.to_string();
    match tokio::time::timeout(DIRECT_SETUP_LIMIT, put_attached(raw, ns, &id, names)).await {
        Err(_) => {
            return Ok(Err(format!(
                "setup timed out after {} s",
                DIRECT_SETUP_LIMIT.as_secs()
            )))
        }
        Ok(r) => r?,
    }
    let took = t.elapsed();
    let mem = env.admin.used_memory().await? - mem0;
    if let Err(problem) = check_layout(raw, client, lease, &names[0]).await {
        return Ok(Err(problem));
    }
    eprintln!(
        "    {} keys written in {:.1} s ({})",
        names.len(),
        took.as_secs_f64(),
        mib(mem)
    );
    Ok(Ok(format!(
        "{} keys written directly in {:.1} s; Redis +{}",
        stats::thousands(names.len() as f64),
        took.as_secs_f64(),
        mib(mem)
    )))
}

// ---- control -----------------------------------------------------------------------------

/// Calls of the control script.
const CONTROL_CALLS: usize = 200;
/// A fixed amount of work, about what one bounded leasehold call does (1024 lookups of a key
/// and a sorted-set member), changing nothing.
const CONTROL_SCRIPT: &str = "local n = 0 \
    for i = 1, 1024 do \
      if redis.call('TYPE', KEYS[1] .. ':' .. i)['ok'] == 'none' then n = n + 1 end \
      redis.call('ZSCORE', KEYS[2], string.format('scale/%07d', i * 7)) \
    end \
    return n";

/// The same script called again and again: how far the slowest call strays from the median
/// on this machine when nothing about the work changes (other processes, scheduling). Not
/// leasehold's, and not judged.
async fn control(env: &Env, raw: &Pool) -> Result<Row> {
    use fred::prelude::LuaInterface;
    env.admin.flushall().await?;
    let (prefix, zset) = ("{scale-control}:k", "{scale-control}:z");
    let members: Vec<(f64, String)> = names(10_000).into_iter().map(|n| (0.0, n)).collect();
    let () = raw.zadd(zset, None, None, false, false, members).await?;
    let keys = vec![prefix.to_owned(), zset.to_owned()];
    let (out, calls, wall) = measure(env, env.plan.scale_wait, async {
        let mut wrong = 0;
        for _ in 0..CONTROL_CALLS {
            let n: i64 = raw
                .next()
                .eval(CONTROL_SCRIPT, keys.clone(), Vec::<String>::new())
                .await?;
            wrong += usize::from(n != 1024);
        }
        Ok::<_, crate::Error>(wrong)
    })
    .await?;
    let check = match out {
        None => Err("timed out".to_owned()),
        Some(Ok(0)) => Ok(
            "not leasehold: the same fixed script each time, so the spread is the machine's"
                .to_owned(),
        ),
        Some(Ok(wrong)) => Err(format!("{wrong} calls answered something else")),
        Some(Err(e)) => Err(format!("failed: {e}")),
    };
    Ok(Row {
        workload: format!(
            "control: {CONTROL_CALLS} calls of a fixed script (1,024 TYPE + ZSCORE), no leasehold"
        ),
        size: 0,
        setup: "a sorted set of 10,000 members".into(),
        capped: false,
        outcome: RowOutcome::Measured(measured(
            calls,
            wall,
            out_timed_out(&check, env.plan.scale_wait),
            check,
        )),
    })
}

// ---- revoke ------------------------------------------------------------------------------

async fn revoke(env: &Env, raw: &Pool, n: usize) -> Result<Row> {
    env.admin.flushall().await?;
    let ns = format!("scale-revoke-{}", size_label(n));
    let client = client(env, &ns).await?;
    let session = client.session_with(long_session()).await?;
    let lease = session.lease();
    let names = names(n);
    let setup = match populate(env, raw, &client, lease, &names).await? {
        Ok(s) => s,
        Err(problem) => return Ok(not_run_setup(REVOKE, n, problem)),
    };
    let id = lease.to_string();
    let limit = env.plan.scale_wait;
    // The window runs until the keys are gone (close() should leave none), at most
    // REVOKE_SETTLE after close() returned.
    let (out, calls, wall) = measure(env, limit + REVOKE_SETTLE + Duration::from_secs(5), async {
        let t = Instant::now();
        let closed = tokio::time::timeout(limit, session.close()).await;
        let returned = t.elapsed();
        let left_then = lease_remains(raw, &ns, &id).await;
        let gone = wait_gone(raw, &ns, &id, Instant::now() + REVOKE_SETTLE).await;
        (closed, returned, left_then, gone.map(|g| g - t))
    })
    .await?;
    let measured = match out {
        None => Measured {
            calls,
            wall,
            timed_out: Some(wall),
            check: Err("timed out".into()),
        },
        Some((Err(_), _, _, _)) => Measured {
            calls,
            wall,
            timed_out: Some(limit),
            check: Err(format!(
                "close() did not return within {} s",
                limit.as_secs()
            )),
        },
        Some((Ok(closed), returned, left_then, gone)) => {
            let mut check = keys_left(raw, &ns, &id, &names).await?;
            if let Err(e) = closed {
                check = Err(format!(
                    "close() failed: {e}; {}",
                    check.unwrap_or_else(|e| e)
                ));
            } else if left_then && check.is_ok() {
                check = Err(format!(
                    "close() returned after {} with keys left; all gone {} later",
                    stats::ms(returned),
                    stats::ms(gone.unwrap_or_default().saturating_sub(returned))
                ));
            } else if let Err(e) = check {
                check = Err(format!(
                    "{e}, {} s after close() returned",
                    REVOKE_SETTLE.as_secs()
                ));
            }
            Measured {
                calls,
                // Until the keys were gone: when close() returned, or later.
                wall: if left_then {
                    gone.unwrap_or(wall)
                } else {
                    returned
                },
                timed_out: None,
                check,
            }
        }
    };
    drop(session);
    drop(client);
    Ok(Row {
        workload: REVOKE.into(),
        size: n,
        setup,
        capped: false,
        outcome: RowOutcome::Measured(measured),
    })
}

fn not_run_setup(workload: &str, n: usize, problem: String) -> Row {
    Row {
        workload: workload.to_owned(),
        size: n,
        setup: format!("**{problem}**"),
        capped: false,
        outcome: RowOutcome::NotRun("not run: setup failed".into()),
    }
}

// ---- sweep -------------------------------------------------------------------------------

async fn sweep(env: &Env, raw: &Pool, n: usize) -> Result<Row> {
    env.admin.flushall().await?;
    let ns = format!("scale-sweep-{}", size_label(n));
    let owner = client(env, &ns).await?;
    // Granted, never renewed: nobody but the sweep will touch it.
    let lease = owner.grant(LONG_TTL).await?.id;
    let names = names(n);
    let setup = match populate(env, raw, &owner, lease, &names).await? {
        Ok(s) => s,
        Err(problem) => return Ok(not_run_setup(SWEEP, n, problem)),
    };
    let sweeper = client(env, &ns).await?;
    let session = sweeper
        .session_with(leasehold::SessionOptions::new().ttl(SWEEPER_TTL))
        .await?;
    let id = lease.to_string();
    let limit = env.plan.scale_wait;
    let (out, calls, wall) = measure(env, limit + Duration::from_secs(5), async {
        // Expire it now: its registry score in the past, as if its TTL had run out.
        let () = raw
            .zadd(
                format!("{{{ns}}}:leases"),
                Some(fred::types::SetOptions::XX),
                None,
                false,
                false,
                (1.0, id.clone()),
            )
            .await?;
        let t = Instant::now();
        let gone = wait_gone(raw, &ns, &id, t + limit).await;
        Ok::<_, crate::Error>(gone.map(|g| g - t))
    })
    .await?;
    let sweeper_ok = session.is_valid();
    let measured = match out {
        None => Measured {
            calls,
            wall,
            timed_out: Some(limit),
            check: Err("timed out".into()),
        },
        Some(gone) => {
            let gone = gone?;
            let mut check = keys_left(raw, &ns, &id, &names).await?;
            if gone.is_none() {
                check = Err(format!(
                    "incomplete after {} s: {}",
                    limit.as_secs(),
                    check.unwrap_or_else(|e| e)
                ));
            }
            if !sweeper_ok {
                check = Err(format!(
                    "the sweeping session was lost ({:?}); {}",
                    session.state(),
                    check.unwrap_or_else(|e| e)
                ));
            }
            Measured {
                calls,
                wall: gone.unwrap_or(wall),
                timed_out: gone.is_none().then_some(limit),
                check,
            }
        }
    };
    drop(session);
    drop(sweeper);
    drop(owner);
    Ok(Row {
        workload: SWEEP.into(),
        size: n,
        setup,
        capped: false,
        outcome: RowOutcome::Measured(measured),
    })
}

// ---- get_prefix --------------------------------------------------------------------------

async fn get_prefix(env: &Env, raw: &Pool, n: usize) -> Result<Row> {
    env.admin.flushall().await?;
    let ns = format!("scale-prefix-{}", size_label(n));
    let client = client(env, &ns).await?;
    let index = format!("{{{ns}}}:keys");
    let dead = names(n);
    let mem0 = env.admin.used_memory().await?;
    let t = Instant::now();
    let write = stream::iter(dead.chunks(CHUNK))
        .map(|chunk| {
            let members: Vec<(f64, String)> = chunk.iter().map(|n| (0.0, n.clone())).collect();
            raw.zadd::<(), _, _>(&index, None, None, false, false, members)
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>();
    match tokio::time::timeout(DIRECT_SETUP_LIMIT, write).await {
        Err(_) => {
            return Ok(not_run_setup(
                GET_PREFIX,
                n,
                format!("setup timed out after {} s", DIRECT_SETUP_LIMIT.as_secs()),
            ))
        }
        Ok(r) => r?,
    };
    // Live keys right after the first, middle and last dead entry, through the API.
    let live: Vec<String> = [0, n / 2, n - 1]
        .iter()
        .map(|&i| format!("{}/live", dead[i]))
        .collect();
    for k in &live {
        client.put(k, "live", None).await?;
    }
    let took = t.elapsed();
    let mem = env.admin.used_memory().await? - mem0;
    let setup = format!(
        "{} index entries written directly, 3 keys put, in {:.1} s; Redis +{}",
        stats::thousands(n as f64 + 3.0),
        took.as_secs_f64(),
        mib(mem)
    );
    let limit = env.plan.scale_wait;
    let (out, calls, wall) = measure(env, limit, client.get_prefix(PREFIX, 100, None)).await?;
    let measured = match out {
        None => Measured {
            calls,
            wall,
            timed_out: Some(limit),
            check: Err("timed out".into()),
        },
        Some(Err(e)) => Measured {
            calls,
            wall,
            timed_out: None,
            check: Err(format!("get_prefix failed: {e}")),
        },
        Some(Ok(page)) => {
            let got: Vec<&str> = page.kvs.iter().map(|kv| kv.key.as_str()).collect();
            let left: i64 = raw.zcard(&index).await?;
            let check = if got == live.iter().map(String::as_str).collect::<Vec<_>>() && !page.more
            {
                Ok(format!(
                    "returned the 3 live keys; index left with {}",
                    stats::thousands(left as f64)
                ))
            } else {
                Err(format!(
                    "returned {} keys (more: {}) instead of the 3 live keys: {:?}",
                    got.len(),
                    page.more,
                    got.iter().take(5).collect::<Vec<_>>()
                ))
            };
            Measured {
                calls,
                wall,
                timed_out: None,
                check,
            }
        }
    };
    drop(client);
    Ok(Row {
        workload: GET_PREFIX.into(),
        size: n,
        setup,
        capped: false,
        outcome: RowOutcome::Measured(measured),
    })
}

// ---- rwlock readers, semaphore holders ---------------------------------------------------

#[derive(Clone, Copy)]
enum Shared {
    RwLock,
    Semaphore,
}

impl Shared {
    fn name(self) -> &'static str {
        match self {
            Shared::RwLock => "rwlock",
            Shared::Semaphore => "semaphore",
        }
    }

    fn holders(self) -> &'static str {
        match self {
            Shared::RwLock => "readers",
            Shared::Semaphore => "holders",
        }
    }

    /// Entries taken in the setup for size `n`.
    fn wanted(self, n: usize) -> usize {
        match self {
            Shared::RwLock => n,
            Shared::Semaphore => n - 1,
        }
    }

    fn steps(self) -> [&'static str; 3] {
        match self {
            Shared::RwLock => [
                "rwlock readers: one more `read()`",
                "rwlock readers: `try_write()` (refused)",
                "rwlock readers: release one reader",
            ],
            Shared::Semaphore => [
                "semaphore holders: one more `acquire()`",
                "semaphore holders: `try_acquire_many` (refused)",
                "semaphore holders: release one holder",
            ],
        }
    }
}

/// A held reader or permit.
enum Held {
    Read(leasehold::RwLockGuard),
    Permit(leasehold::SemaphorePermit),
}

impl Held {
    async fn release(self) -> leasehold::Result<()> {
        match self {
            Held::Read(g) => g.unlock().await,
            Held::Permit(p) => p.release().await,
        }
    }
}

/// The handles of one row: a rwlock or a semaphore per session.
struct Handles {
    rwlocks: Vec<leasehold::RwLock>,
    semaphores: Vec<leasehold::Semaphore>,
}

impl Handles {
    async fn take(&self, kind: Shared, i: usize) -> leasehold::Result<Held> {
        match kind {
            Shared::RwLock => Ok(Held::Read(self.rwlocks[i % SESSIONS].read().await?)),
            Shared::Semaphore => Ok(Held::Permit(self.semaphores[i % SESSIONS].acquire().await?)),
        }
    }
}

/// N readers (or N - 1 holders of a semaphore of size N) through the API, as many as the
/// setup budget allows; then the three steps, each measured. Returns the entries taken.
async fn shared(env: &Env, kind: Shared, n: usize) -> Result<(usize, Vec<Row>)> {
    env.admin.flushall().await?;
    let ns = format!("scale-{}-{}", kind.name(), size_label(n));
    let client = client(env, &ns).await?;
    let mut sessions = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        sessions.push(client.session_with(long_session()).await?);
    }
    let size = u32::try_from(n)?;
    let handles = Handles {
        rwlocks: sessions
            .iter()
            .map(|s| s.rwlock("scale"))
            .collect::<leasehold::Result<_>>()?,
        semaphores: sessions
            .iter()
            .map(|s| s.semaphore("scale", size))
            .collect::<leasehold::Result<_>>()?,
    };
    let wanted = kind.wanted(n);
    let budget = env.plan.scale_setup_budget;
    let mem0 = env.admin.used_memory().await?;
    let t = Instant::now();
    let deadline = t + budget;
    let handles_ref = &handles;
    let results: Vec<leasehold::Result<Held>> = stream::iter(0..wanted)
        .take_while(|_| std::future::ready(Instant::now() < deadline))
        .map(|i| handles_ref.take(kind, i))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let took = t.elapsed();
    let mem = env.admin.used_memory().await? - mem0;
    let mut held = Vec::with_capacity(results.len());
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(h) => held.push(h),
            Err(e) => errors.push(e),
        }
    }
    let got = held.len();
    eprintln!(
        "    {got} {} taken in {:.1} s ({} errors)",
        kind.holders(),
        took.as_secs_f64(),
        errors.len()
    );
    let capped = got < wanted;
    let mut setup = format!(
        "{} {} taken through the API in {:.1} s ({SESSIONS} sessions, {IN_FLIGHT} in flight); \
         Redis +{}",
        stats::thousands(got as f64),
        kind.holders(),
        took.as_secs_f64(),
        mib(mem)
    );
    if capped && errors.is_empty() {
        setup = format!(
            "**capped: {} of {} {} within the setup budget of {} s**; {setup}",
            stats::thousands(got as f64),
            stats::thousands(wanted as f64),
            kind.holders(),
            budget.as_secs()
        );
    }
    if let Some(e) = errors.first() {
        setup = format!(
            "**{} of {} calls failed (first: {e})**; {setup}",
            errors.len(),
            got + errors.len()
        );
    }
    if got == 0 {
        let rows = kind
            .steps()
            .iter()
            .map(|s| not_run_setup(s, n, setup.clone()))
            .collect();
        return Ok((0, rows));
    }
    let limit = env.plan.scale_wait;
    let [step_a, step_b, step_c] = kind.steps();
    let mut rows = Vec::new();
    let row = |workload: &str, setup: String, measured: Measured| Row {
        workload: workload.to_owned(),
        size: n,
        setup,
        capped,
        outcome: RowOutcome::Measured(measured),
    };

    // One more reader / holder: it fits.
    let (out, calls, wall) = measure(env, limit, handles.take(kind, 0)).await?;
    let check = match out {
        None => Err("timed out".to_owned()),
        Some(Ok(h)) => {
            held.push(h);
            Ok("granted".to_owned())
        }
        Some(Err(e)) => Err(format!("failed: {e}")),
    };
    rows.push(row(
        step_a,
        setup,
        measured(calls, wall, out_timed_out(&check, limit), check),
    ));
    let as_above = format!(
        "as above ({} {})",
        stats::thousands(got as f64),
        kind.holders()
    );

    // A writer / more permits than are free: refused without queueing.
    let free = match kind {
        Shared::RwLock => 0,
        Shared::Semaphore => n.saturating_sub(held.len()),
    };
    let refused = async {
        match kind {
            Shared::RwLock => handles.rwlocks[1 % SESSIONS].try_write().await.map(drop),
            Shared::Semaphore => handles.semaphores[1 % SESSIONS]
                .try_acquire_many(u32::try_from(free + 1).unwrap_or(u32::MAX))
                .await
                .map(drop),
        }
    };
    let (out, calls, wall) = measure(env, limit, refused).await?;
    let check = match out {
        None => Err("timed out".to_owned()),
        Some(Err(leasehold::Error::Locked { .. })) => Ok("refused (`Error::Locked`)".to_owned()),
        Some(Ok(())) => Err("granted, but it should have been refused".to_owned()),
        Some(Err(e)) => Err(format!("failed: {e}")),
    };
    rows.push(row(
        step_b,
        as_above.clone(),
        measured(calls, wall, out_timed_out(&check, limit), check),
    ));

    // Release the first reader / holder taken.
    let first = held.swap_remove(0);
    let (out, calls, wall) = measure(env, limit, first.release()).await?;
    let check = match out {
        None => Err("timed out".to_owned()),
        Some(Ok(())) => Ok("released".to_owned()),
        Some(Err(e)) => Err(format!("failed: {e}")),
    };
    rows.push(row(
        step_c,
        as_above,
        measured(calls, wall, out_timed_out(&check, limit), check),
    ));

    // Empty Redis before the guards go: their background releases then find nothing to walk.
    env.admin.flushall().await?;
    drop(held);
    drop(handles);
    drop(sessions);
    drop(client);
    Ok((got, rows))
}

fn out_timed_out(check: &std::result::Result<String, String>, limit: Duration) -> Option<Duration> {
    matches!(check, Err(e) if e == "timed out").then_some(limit)
}

fn measured(
    calls: ScriptCalls,
    wall: Duration,
    timed_out: Option<Duration>,
    check: std::result::Result<String, String>,
) -> Measured {
    Measured {
        calls,
        wall,
        timed_out,
        check,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_in_the_table() {
        assert_eq!(size_label(10_000), "10k");
        assert_eq!(size_label(100_000), "100k");
        assert_eq!(size_label(1_000_000), "1M");
        assert_eq!(size_label(1234), "1,234");
        assert_eq!(names(2), vec!["scale/0000000", "scale/0000001"]);
    }
}
