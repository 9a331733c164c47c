//! Scenario 4 (keepalive scaling) and 5a (Redis memory per session and per lock).
//!
//! One client opens 10,000 sessions (TTL 10 s) and takes 10 locks in each (100,000 locks), then
//! sits for 60 s while its one supervisor keeps every lease alive. Measured over that window:
//! renewal script calls per second (leasehold's own counter, and Redis's `fcall`/`evalsha`
//! count, which nothing else calls meanwhile), leases renewed per call, the client's CPU
//! (getrusage) and Redis's, and sessions lost (must be none).
//!
//! For comparison, the per-lock model (Redisson's watchdog: one `PEXPIRE` per lock every
//! TTL/3) is computed, and simulated for a few seconds with raw `PEXPIRE`s on as many raw lock
//! keys, to show what that rate costs Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::metrics as m;

use crate::stats::{self, Table};
use crate::{sys, Env, Result};

const TTL: Duration = Duration::from_secs(10);
/// Setup calls in flight at once.
const CONCURRENCY: usize = 64;

pub struct Outcome {
    pub keepalive: Table,
    pub memory: Table,
    pub calls_per_sec: f64,
    pub client_cpu: f64,
    pub lost: u64,
}

pub async fn run(env: &Env) -> Result<Outcome> {
    let sessions_n = env.plan.ka_sessions;
    let per = env.plan.ka_locks_per_session;
    let locks_n = sessions_n * per;
    env.admin.flushall().await?;
    // A bigger pool than the default 4, as a process with this many sessions would use; the
    // command timeout stays at its default (5 s).
    let client = env.leasehold_client("keepalive", 8).await?;
    let opts = leasehold::SessionOptions::new().ttl(TTL);

    let mem0 = env.admin.used_memory().await?;
    eprintln!("  keepalive: opening {sessions_n} sessions");
    let t = Instant::now();
    let sessions: Vec<leasehold::Session> =
        concurrently(sessions_n, |_| client.session_with(opts.clone())).await?;
    let open_time = t.elapsed();
    let mem1 = env.admin.used_memory().await?;

    eprintln!("  keepalive: taking {locks_n} locks");
    let t = Instant::now();
    let sessions_ref = &sessions;
    let guards: Vec<leasehold::MutexGuard> = concurrently(locks_n, |i| async move {
        let s = &sessions_ref[i / per];
        s.mutex(&format!("k{}-{}", i / per, i % per))?.lock().await
    })
    .await?;
    let lock_time = t.elapsed();
    let mem2 = env.admin.used_memory().await?;

    // What single keys cost (all elements counted).
    let ns = "{keepalive}";
    let lease_hash = env
        .admin
        .memory_usage(&format!("{ns}:lease:{}", sessions[0].lease()))
        .await?;
    let attached = env
        .admin
        .memory_usage(&format!("{ns}:attached:{}", sessions[0].lease()))
        .await?;
    let mutex_zset = env.admin.memory_usage(guards[0].key()).await?;
    let registry = env.admin.memory_usage(&format!("{ns}:leases")).await?;

    // The window.
    eprintln!(
        "  keepalive: watching for {} s",
        env.plan.ka_window.as_secs()
    );
    let totals = env.totals;
    let calls0 = totals.counter(m::RENEW_CALLS);
    let lost0 = totals.counter(m::SESSION_LOST);
    let jeopardy0 = totals.counter(m::SESSION_JEOPARDY);
    let batch0 = totals.histogram(m::RENEW_BATCH);
    let latency0 = totals.histogram(m::RENEW_LATENCY);
    env.admin.reset_stats().await?;
    let redis_cpu0 = env.admin.cpu_seconds().await?;
    let cpu0 = sys::cpu_time_self();
    let t0 = Instant::now();
    tokio::time::sleep(env.plan.ka_window).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (sys::cpu_time_self() - cpu0).as_secs_f64() / wall;
    let redis_cpu = (env.admin.cpu_seconds().await? - redis_cpu0) / wall;
    let cmd = env.admin.commandstats().await?;
    let calls = totals.counter(m::RENEW_CALLS) - calls0;
    let lost_counted = totals.counter(m::SESSION_LOST) - lost0;
    let jeopardy = totals.counter(m::SESSION_JEOPARDY) - jeopardy0;
    let batch = totals.histogram(m::RENEW_BATCH);
    let latency = totals.histogram(m::RENEW_LATENCY);
    let headroom = totals.histogram(m::RENEW_HEADROOM);
    let batch_calls = batch.count - batch0.count;
    let leases_renewed = batch.sum - batch0.sum;
    let latency_mean = (latency.sum - latency0.sum) / (latency.count - latency0.count) as f64;
    // Renewal calls: FCALL where leasehold calls its function library, else EVALSHA.
    let mut evalsha = crate::servers::CmdStat::default();
    for c in ["fcall", "evalsha"] {
        let s = cmd.get(c).copied().unwrap_or_default();
        evalsha.calls += s.calls;
        evalsha.usec += s.usec;
        evalsha.failed += s.failed;
    }
    // Redis also counts the commands a script calls, each under its own name.
    let mut others: Vec<(String, u64)> = cmd
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "evalsha" | "fcall"))
        .map(|(k, s)| (k.to_uppercase(), s.calls))
        .collect();
    others.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let others = others
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let not_valid = sessions.iter().filter(|s| !s.is_valid()).count() as u64;
    let guards_not_valid = guards.iter().filter(|g| !g.is_valid()).count();
    let lost = lost_counted.max(not_valid);

    eprintln!("  keepalive: releasing {locks_n} locks, closing {sessions_n} sessions");
    let t = Instant::now();
    let guards = Arc::new(std::sync::Mutex::new(
        guards.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    concurrently(locks_n, |i| {
        let g = guards.lock().unwrap()[i].take();
        async move { Ok::<_, crate::Error>(g.ok_or("guard taken twice")?.unlock().await?) }
    })
    .await?;
    concurrently(sessions_n, |i| sessions_ref[i].close()).await?;
    let teardown = t.elapsed();
    drop(sessions);
    drop(client);

    // The per-lock model, and raw lock keys' memory.
    let model_rate = locks_n as f64 / (TTL.as_secs_f64() / 3.0);
    eprintln!(
        "  keepalive: per-lock model, {} PEXPIRE/s for {} s",
        model_rate as u64,
        env.plan.model_time.as_secs()
    );
    let raw = crate::libs::RawShared::connect(&env.redis_url).await?;
    let mem_raw0 = env.admin.used_memory().await?;
    let key = |i: usize| format!("bench:watchdog:{i}");
    let pool = raw.pool();
    concurrently(locks_n, |i| async move {
        fred::prelude::KeysInterface::set::<(), _, _>(
            pool,
            key(i),
            "0123456789abcdef0123",
            Some(fred::types::Expiration::PX(TTL.as_millis() as i64)),
            Some(fred::types::SetOptions::NX),
            false,
        )
        .await
    })
    .await?;
    let mem_raw1 = env.admin.used_memory().await?;
    let raw_key = env.admin.memory_usage(&key(0)).await?;
    let model = simulate_watchdog(env, &raw, locks_n, model_rate).await?;
    env.admin.flushall().await?;

    let mut ka = Table::new(&["measure", "value"]);
    let row = |t: &mut Table, k: &str, v: String| t.row(vec![k.to_owned(), v]);
    row(
        &mut ka,
        "setup",
        format!(
            "{} sessions (TTL {} s) opened in {:.1} s; {} locks taken in {:.1} s; \
             one client, pool of 8",
            stats::thousands(sessions_n as f64),
            TTL.as_secs(),
            open_time.as_secs_f64(),
            stats::thousands(locks_n as f64),
            lock_time.as_secs_f64()
        ),
    );
    row(&mut ka, "window", format!("{wall:.0} s after setup"));
    row(
        &mut ka,
        "**renewal calls/s** (leasehold_renew_calls_total)",
        format!("**{:.2}**", calls as f64 / wall),
    );
    row(
        &mut ka,
        "Redis script calls/s in the window (FCALL or EVALSHA)",
        format!("{:.2}", evalsha.calls as f64 / wall),
    );
    row(
        &mut ka,
        "other commands in the window (those the scripts call, and this bench's INFO)",
        others,
    );
    row(
        &mut ka,
        "leases per renewal call (mean)",
        format!("{:.0}", leases_renewed / batch_calls.max(1) as f64),
    );
    row(
        &mut ka,
        "leases renewed per second",
        stats::thousands(leases_renewed / wall),
    );
    row(
        &mut ka,
        "renewal call: round trip (mean in window) / Redis usec_per_call",
        format!(
            "{} / {:.0} µs ({:.1} µs per lease)",
            stats::ms(Duration::from_secs_f64(latency_mean.max(0.0))),
            evalsha.usec_per_call(),
            evalsha.usec as f64 / leases_renewed.max(1.0)
        ),
    );
    row(
        &mut ka,
        "renewal round trip max / headroom min (whole run)",
        format!(
            "{} / {:.2} s",
            stats::ms(Duration::from_secs_f64(latency.max.max(0.0))),
            headroom.min
        ),
    );
    row(
        &mut ka,
        "**client CPU** (getrusage, whole process)",
        format!("**{:.2} % of a core**", cpu * 100.0),
    );
    row(
        &mut ka,
        "Redis CPU (INFO cpu)",
        format!("{:.2} % of a core", redis_cpu * 100.0),
    );
    row(
        &mut ka,
        "**sessions lost** (counter / not valid at the end) · guards not valid · jeopardy",
        format!("**{lost_counted} / {not_valid}** · {guards_not_valid} · {jeopardy}"),
    );
    row(
        &mut ka,
        "teardown: unlock every lock, close every session",
        format!("{:.1} s", teardown.as_secs_f64()),
    );
    row(
        &mut ka,
        "per-lock model (a PEXPIRE per lock every TTL/3, as Redisson's watchdog)",
        format!(
            "{} locks / {:.2} s = **{} calls/s**",
            stats::thousands(locks_n as f64),
            TTL.as_secs_f64() / 3.0,
            stats::thousands(model_rate)
        ),
    );
    row(
        &mut ka,
        "per-lock model simulated with raw PEXPIREs",
        format!(
            "{} calls/s achieved for {:.0} s: Redis CPU {:.1} % of a core, \
             {:.2} µs/call (commandstats); client CPU {:.1} %",
            stats::thousands(model.rate),
            model.wall,
            model.redis_cpu * 100.0,
            model.usec_per_call,
            model.client_cpu * 100.0
        ),
    );

    let mut mem = Table::new(&["measure", "value"]);
    row(
        &mut mem,
        "Redis per session (used_memory delta / sessions)",
        stats::bytes((mem1 - mem0) as f64 / sessions_n as f64),
    );
    row(
        &mut mem,
        "Redis per held lock (used_memory delta / locks)",
        stats::bytes((mem2 - mem1) as f64 / locks_n as f64),
    );
    row(
        &mut mem,
        "Redis for the whole setup",
        format!(
            "{} for {} sessions and {} locks",
            stats::bytes((mem2 - mem0) as f64),
            stats::thousands(sessions_n as f64),
            stats::thousands(locks_n as f64)
        ),
    );
    row(
        &mut mem,
        "MEMORY USAGE: lease hash / attachment set (10 locks) / one mutex queue",
        format!(
            "{} / {} / {}",
            stats::bytes(lease_hash as f64),
            stats::bytes(attached as f64),
            stats::bytes(mutex_zset as f64)
        ),
    );
    row(
        &mut mem,
        "MEMORY USAGE: lease registry zset, per session",
        stats::bytes(registry as f64 / sessions_n as f64),
    );
    row(
        &mut mem,
        "raw SET NX PX lock (20-byte token, as rslock's): per lock / MEMORY USAGE",
        format!(
            "{} / {}",
            stats::bytes((mem_raw1 - mem_raw0) as f64 / locks_n as f64),
            stats::bytes(raw_key as f64)
        ),
    );

    Ok(Outcome {
        keepalive: ka,
        memory: mem,
        calls_per_sec: calls as f64 / wall,
        client_cpu: cpu,
        lost,
    })
}

struct Model {
    rate: f64,
    wall: f64,
    redis_cpu: f64,
    client_cpu: f64,
    usec_per_call: f64,
}

/// `PEXPIRE` every raw key in turn at `rate` calls/s for the model's time: 64 paced tasks over
/// the pool of 8, each owning every 64th key.
async fn simulate_watchdog(
    env: &Env,
    raw: &crate::libs::RawShared,
    keys: usize,
    rate: f64,
) -> Result<Model> {
    const TASKS: usize = 64;
    let period = Duration::from_secs_f64(TASKS as f64 / rate);
    let until = Instant::now() + env.plan.model_time;
    env.admin.reset_stats().await?;
    let redis_cpu0 = env.admin.cpu_seconds().await?;
    let cpu0 = sys::cpu_time_self();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..TASKS)
        .map(|k| {
            let pool = raw.pool().clone();
            tokio::spawn(async move {
                // Burst (the default) catches up missed ticks, so the mean rate is kept.
                let mut tick = tokio::time::interval(period);
                let mut i = k;
                let mut calls = 0u64;
                while Instant::now() < until {
                    tick.tick().await;
                    let _: i64 = fred::prelude::KeysInterface::pexpire(
                        &pool,
                        format!("bench:watchdog:{i}"),
                        TTL.as_millis() as i64,
                        None,
                    )
                    .await?;
                    calls += 1;
                    i = (i + TASKS) % keys;
                }
                Ok::<_, crate::Error>(calls)
            })
        })
        .collect();
    let mut calls = 0;
    for h in handles {
        calls += h.await??;
    }
    let wall = t0.elapsed().as_secs_f64();
    let client_cpu = (sys::cpu_time_self() - cpu0).as_secs_f64() / wall;
    let redis_cpu = (env.admin.cpu_seconds().await? - redis_cpu0) / wall;
    let stat = env
        .admin
        .commandstats()
        .await?
        .get("pexpire")
        .copied()
        .unwrap_or_default();
    Ok(Model {
        rate: calls as f64 / wall,
        wall,
        redis_cpu,
        client_cpu,
        usec_per_call: stat.usec_per_call(),
    })
}

/// What a lease holds, per row of the by-kind table: locks per session, sessions.
const KINDS: [(usize, usize); 4] = [(0, 2000), (1, 2000), (4, 1000), (10, 1000)];
/// The by-kind sessions' TTL (a renewal round every second) and each kind's window.
pub const KIND_TTL: Duration = Duration::from_secs(3);
pub const KIND_WINDOW: Duration = Duration::from_secs(4);

/// One kind's window: renewal calls, their time inside Redis, and the leases they renewed.
#[derive(Default, Clone, Copy)]
struct KindRun {
    calls: u64,
    usec: u64,
    /// Of `usec`, the time inside the commands the scripts called.
    inner_usec: u64,
    leases: u64,
}

/// Renewal cost by what a lease holds: for each kind in turn, a fresh `redis-server` and client
/// whose sessions hold 0, 1, 4 or 10 locks, watched for a few renewal rounds, then torn down
/// before the next kind starts (so no kind's renewals run during another's window); the kinds
/// alternate over `reps` repetitions and each row is the median. Per window: script calls and
/// their time inside Redis (`INFO commandstats`), and leases renewed (its `HMGET`s: one per
/// lease renewed).
pub async fn by_kind(reps: usize) -> Result<Table> {
    let mut runs = vec![Vec::new(); KINDS.len()];
    for _ in 0..reps {
        for (k, (held, sessions_n)) in KINDS.into_iter().enumerate() {
            runs[k].push(kind_window(held, sessions_n).await?);
        }
    }
    let mut table = Table::new(&[
        "locks per session",
        "sessions",
        "renewal calls per window (median)",
        "leases per call",
        "Redis µs per call",
        "Redis µs per lease",
        "of which inside commands",
        "÷ a lease without locks",
    ]);
    let per_lease = |r: &KindRun| r.usec as f64 / r.leases.max(1) as f64;
    let median = |k: usize| {
        let mut v = runs[k].clone();
        v.sort_by(|a, b| per_lease(a).total_cmp(&per_lease(b)));
        v[v.len() / 2]
    };
    let base = per_lease(&median(0));
    for (k, (held, sessions_n)) in KINDS.into_iter().enumerate() {
        let r = median(k);
        table.row(vec![
            held.to_string(),
            stats::thousands(sessions_n as f64),
            r.calls.to_string(),
            format!("{:.0}", r.leases as f64 / r.calls.max(1) as f64),
            format!("{:.0}", r.usec as f64 / r.calls.max(1) as f64),
            format!("{:.1}", per_lease(&r)),
            format!("{:.1}", r.inner_usec as f64 / r.leases.max(1) as f64),
            format!("{:.2}×", per_lease(&r) / base),
        ]);
    }
    Ok(table)
}

async fn kind_window(held: usize, sessions_n: usize) -> Result<KindRun> {
    let server = leasehold_testing::RedisServer::start()?;
    let admin = crate::servers::Admin::connect(&server.url()).await?;
    let client = leasehold::Client::builder()
        .url(server.url())
        .namespace("kind")
        .pool_size(8)
        .build()
        .await?;
    let opts = leasehold::SessionOptions::new().ttl(KIND_TTL);
    let sessions: Vec<leasehold::Session> =
        concurrently(sessions_n, |_| client.session_with(opts.clone())).await?;
    let sessions_ref = &sessions;
    let _guards: Vec<leasehold::MutexGuard> = concurrently(sessions_n * held, |i| async move {
        sessions_ref[i / held].mutex(&format!("k{i}"))?.lock().await
    })
    .await?;
    admin.reset_stats().await?;
    tokio::time::sleep(KIND_WINDOW).await;
    let cmd = admin.commandstats().await?;
    if sessions.iter().any(|s| !s.is_valid()) {
        return Err(format!("a session holding {held} locks was lost").into());
    }
    let mut run = KindRun {
        leases: cmd.get("hmget").map_or(0, |s| s.calls),
        ..KindRun::default()
    };
    for (name, s) in &cmd {
        match name.as_str() {
            "fcall" | "evalsha" => {
                run.calls += s.calls;
                run.usec += s.usec;
            }
            // The reset that began the window (the INFO that reads it is not in its own count).
            "config|resetstat" => {}
            _ => run.inner_usec += s.usec,
        }
    }
    Ok(run)
}

/// Run `f(0..n)`, `CONCURRENCY` at a time, in this task; outputs in index order.
async fn concurrently<T, E, F, Fut>(n: usize, f: F) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
    crate::Error: From<E>,
{
    crate::run_all(n, CONCURRENCY, f).await
}
