//! Scenario 3: Redis CPU per call of each script on leasehold's lock path, and of the raw
//! lock's commands for comparison.
//!
//! Redis adds up every script under one `cmdstat_evalsha` line, so each operation runs alone:
//! `CONFIG RESETSTAT`, N calls of that one operation (16 at a time), then `INFO commandstats`
//! and `INFO cpu`. Two figures per operation:
//! - `usec_per_call` from commandstats: time inside the command (the script and the commands it
//!   calls), what `SLOWLOG` and latency monitoring see;
//! - the server process's CPU (user + sys from `INFO cpu`) over the phase divided by the
//!   operations: also reading the request, writing the reply, pub/sub delivery and the event
//!   loop, i.e. what a core of Redis really pays per operation at this concurrency.

use std::future::Future;
use std::time::{Duration, Instant};

use fred::types::scripts::Script;

use crate::libs::RawShared;
use crate::stats::{self, Table};
use crate::{Env, Result};

/// leasehold's core Lua prelude, compiled into every one of its scripts (the lock hot path
/// carries only this one).
const PRELUDE: &str = include_str!("../../lua/prelude/core.lua");
/// The queue prelude, compiled in after the core one into every other script.
const PRELUDE_QUEUES: &str = include_str!("../../lua/prelude/queues.lua");

/// Calls in flight at once in each phase.
const CONCURRENCY: usize = 16;

#[derive(Clone)]
struct Measured {
    calls: u64,
    usec_per_call: f64,
    cpu_us_per_op: f64,
    ops_per_sec: f64,
    /// Commands the scripts called (Redis counts each under its own name), per operation:
    /// the total and the breakdown.
    inner_per_op: f64,
    inner: String,
}

struct Row {
    what: &'static str,
    command: &'static str,
    reps: Vec<Measured>,
}

pub async fn run(env: &Env) -> Result<Table> {
    let rows = [
        ("open a session (`lease_grant`)", "script"),
        ("lock a free mutex (`mutex_acquire` → held)", "script"),
        ("try_lock a held mutex (`mutex_acquire` → locked)", "script"),
        ("unlock, nobody waiting (`mutex_release`)", "script"),
        (
            "lock a free mutex, 64 in flight on one client, batched (`mutex_batch`; usec_per_call is per batch)",
            "script",
        ),
        (
            "unlock, nobody waiting, 64 in flight, batched (`mutex_batch`; usec_per_call is per batch)",
            "script",
        ),
        ("renew one lease (`lease_renew`, keep_alive_once)", "script"),
        (
            "handoff to a waiter (`mutex_release`; its `o` ring spares the waiter a re-check): per handoff",
            "script",
        ),
        ("close a session holding 1 lock (`lease_revoke`)", "script"),
        ("close a session, nothing attached (`lease_revoke`)", "script"),
        ("raw: acquire (`SET NX PX`)", "set"),
        ("raw: release (compare-and-delete `EVALSHA`)", "evalsha"),
        ("floor: an empty script (`return 0`)", "evalsha"),
        (
            "floor: the core prelude alone (define its helpers, `begin`: `TIME`; `return 0`)",
            "evalsha",
        ),
        (
            "floor: both preludes (what every script off the lock path runs first)",
            "evalsha",
        ),
        (
            "floor: a function of the library that returns a constant (`FCALL` of `version`)",
            "fcall",
        ),
    ];
    let mut table_rows: Vec<Row> = rows
        .iter()
        .map(|&(what, command)| Row {
            what,
            command,
            reps: Vec::new(),
        })
        .collect();
    // Each script alone: batching off, except for the rows that measure the batches.
    let client = env.leasehold_client_with("cpu", 8, false).await?;
    let batching = env.leasehold_client_with("cpu", 8, true).await?;
    // How leasehold's calls reach Redis on this server: `FCALL` of its library, or EVALSHA.
    let script = if client.uses_functions() {
        "fcall"
    } else {
        "evalsha"
    };
    let clients = (&client, &batching);
    let raw = RawShared::connect(&env.redis_url).await?;
    // Once unmeasured, so every script is loaded (the first calls answer NOSCRIPT) and no
    // reload is counted.
    one_rep(env, clients, &raw, script, 32).await?;
    for rep in 0..env.plan.reps {
        eprintln!("  redis cpu: rep {}/{}", rep + 1, env.plan.reps);
        let measured = one_rep(env, clients, &raw, script, env.plan.cpu_calls).await?;
        for (row, m) in table_rows.iter_mut().zip(measured) {
            row.reps.push(m);
        }
    }

    let mut table = Table::new(&[
        "operation",
        "Redis command",
        "calls per rep",
        "usec_per_call (commandstats)",
        "Redis process CPU per op",
        "ops/s at 16 in flight",
        "commands run inside, per op",
    ]);
    for row in &table_rows {
        let med = |f: fn(&Measured) -> f64| stats::median(row.reps.iter().map(f));
        table.row(vec![
            row.what.to_owned(),
            match row.command {
                "script" => script,
                other => other,
            }
            .to_uppercase(),
            stats::thousands(med(|m| m.calls as f64)),
            format!("{:.1} µs", med(|m| m.usec_per_call)),
            format!("{:.1} µs", med(|m| m.cpu_us_per_op)),
            stats::thousands(med(|m| m.ops_per_sec)),
            match row.reps.last() {
                Some(m) if m.inner_per_op > 0.05 => format!("{:.1}: {}", m.inner_per_op, m.inner),
                _ => "0".to_owned(),
            },
        ]);
    }
    Ok(table)
}

/// Every operation once, each in isolation, `n` times.
async fn one_rep(
    env: &Env,
    (client, batching): (&leasehold::Client, &leasehold::Client),
    raw: &RawShared,
    script: &str,
    n: usize,
) -> Result<Vec<Measured>> {
    let opts = leasehold::SessionOptions::new().ttl(crate::libs::TTL);
    let name = |i: usize| format!("cpu-{}", i);
    let mut out = Vec::new();

    let (a, m) = phase(env, script, n, async {
        all(n, |_| client.session_with(opts.clone())).await
    })
    .await?;
    out.push(m);
    let a = &a;

    let (held, m) = phase(env, script, n, async {
        all(n, |i| async move { a[i].mutex(&name(i))?.lock().await }).await
    })
    .await?;
    out.push(m);

    let ((), m) = phase(env, script, n, async {
        all(n, |i| async move {
            match a[i].mutex(&name((i + 1) % n))?.try_lock().await {
                Err(leasehold::Error::Locked { .. }) => Ok(()),
                Ok(_) => Err("try_lock took a held mutex".into()),
                Err(e) => Err(crate::Error::from(e)),
            }
        })
        .await
        .map(drop)
    })
    .await?;
    out.push(m);

    let ((), m) = phase(env, script, n, async {
        unlock_all(held, CONCURRENCY).await
    })
    .await?;
    out.push(m);

    // The same two operations from one client with 64 in flight, so that calls go in batches:
    // usec_per_call is per batch call (calls per rep shows how many), the rest per operation.
    let c = &all(n, |_| batching.session_with(opts.clone())).await?;
    let (held, m) = phase(env, script, n, async {
        crate::run_all(n, 64, |i| async move { c[i].mutex(&name(i))?.lock().await }).await
    })
    .await?;
    out.push(m);
    let ((), m) = phase(env, script, n, async { unlock_all(held, 64).await }).await?;
    out.push(m);
    all(n, |i| c[i].close()).await?;

    let ((), m) = phase(env, script, n, async {
        all(n, |i| client.keep_alive_once(a[i].lease()))
            .await
            .map(drop)
    })
    .await?;
    out.push(m);

    // Handoff: sessions `a` hold the locks, sessions `b` queue behind them; the measured phase
    // releases and waits until every waiter holds.
    let held = all(n, |i| async move { a[i].mutex(&name(i))?.lock().await }).await?;
    let b = &all(n, |_| client.session_with(opts.clone())).await?;
    env.admin.reset_stats().await?;
    let waiters: Vec<_> = (0..n)
        .map(|i| {
            let mutex = b[i].mutex(&name(i));
            tokio::spawn(async move { mutex?.lock().await })
        })
        .collect();
    // Every waiter has queued once its first `mutex_acquire` was answered.
    let queued_by = Instant::now() + Duration::from_secs(30);
    while env
        .admin
        .commandstats()
        .await?
        .get(script)
        .map_or(0, |s| s.calls)
        < n as u64
    {
        if Instant::now() > queued_by {
            return Err("waiters did not queue within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (b_held, mut m) = phase(env, script, n, async {
        let guards = std::sync::Mutex::new(held.into_iter().map(Some).collect::<Vec<_>>());
        all(n, |i| {
            let g = guards.lock().unwrap()[i].take();
            async move { Ok::<_, crate::Error>(g.ok_or("guard taken twice")?.unlock().await?) }
        })
        .await?;
        let mut b_held = Vec::with_capacity(n);
        for w in waiters {
            b_held.push(w.await??);
        }
        Ok(b_held)
    })
    .await?;
    // Scripts per handoff (one: the `o` ring spares the waiter its re-check; a waiter that was
    // woken otherwise re-checks): usec_per_call is per script, the rest per handoff.
    m.usec_per_call *= m.calls as f64 / n as f64;
    out.push(m);
    for g in b_held {
        g.unlock().await?;
    }

    let held = all(n, |i| async move { a[i].mutex(&name(i))?.lock().await }).await?;
    let ((), m) = phase(env, script, n, async {
        all(n, |i| a[i].close()).await.map(drop)
    })
    .await?;
    out.push(m);
    // Guards of closed sessions: release them now (they find nothing), not in the background
    // during the next phase, as dropping them would.
    let held = std::sync::Mutex::new(held.into_iter().map(Some).collect::<Vec<_>>());
    all(n, |i| {
        let g = held.lock().unwrap()[i].take();
        async move {
            match g.ok_or("guard taken twice")?.unlock().await {
                Ok(()) | Err(leasehold::Error::NotHeld { .. }) => Ok::<_, crate::Error>(()),
                Err(e) => Err(e.into()),
            }
        }
    })
    .await?;

    let ((), m) = phase(env, script, n, async {
        all(n, |i| b[i].close()).await.map(drop)
    })
    .await?;
    out.push(m);

    // The raw lock's two commands, each alone.
    let key = |i: usize| format!("bench:cpu-raw:{i}");
    let ((), m) = phase(env, "set", n, async {
        all(n, |i| async move {
            let ok: Option<String> = fred::prelude::KeysInterface::set(
                raw.pool(),
                key(i),
                "token",
                Some(fred::types::Expiration::PX(60_000)),
                Some(fred::types::SetOptions::NX),
                false,
            )
            .await?;
            ok.map(drop)
                .ok_or_else(|| crate::Error::from("raw key taken"))
        })
        .await
        .map(drop)
    })
    .await?;
    out.push(m);
    let ((), m) = phase(env, "evalsha", n, async {
        all(n, |i| async move {
            let deleted: i64 = fred::prelude::LuaInterface::evalsha(
                raw.pool(),
                raw.cad_sha(),
                vec![key(i)],
                vec!["token"],
            )
            .await?;
            if deleted == 1 {
                Ok(())
            } else {
                Err(crate::Error::from("raw key not deleted"))
            }
        })
        .await
        .map(drop)
    })
    .await?;
    out.push(m);

    // What every script pays before doing anything: EVALSHA itself, and leasehold's preludes
    // (prepended to the scripts) run to their end without calling anything.
    for body in [
        String::from("return 0"),
        format!("{PRELUDE}begin(KEYS)\nreturn 0"),
        format!("{PRELUDE}{PRELUDE_QUEUES}begin(KEYS) begin_queues()\nreturn 0"),
    ] {
        let script = Script::from_lua(body);
        script.load(raw.pool().next()).await?;
        let sha = script.sha1().to_string();
        let keys = vec!["{cpu}:rev".to_owned(), "{cpu}:leases".to_owned()];
        let (sha, keys) = (&sha, &keys);
        let ((), m) = phase(env, "evalsha", n, async {
            all(n, |_| async move {
                fred::prelude::LuaInterface::evalsha::<i64, _, _, _>(
                    raw.pool(),
                    sha.as_str(),
                    keys.clone(),
                    Vec::<String>::new(),
                )
                .await
            })
            .await
            .map(drop)
        })
        .await?;
        out.push(m);
    }
    // The same floor for a function: the call and the library's per-call nothing.
    let version = format!(
        "lh_{}_version",
        leasehold::function_library_name().trim_start_matches("leasehold_")
    );
    let version = &version;
    let ((), m) = phase(env, "fcall", n, async {
        all(n, |_| async move {
            fred::prelude::FunctionInterface::fcall::<String, _, _, _>(
                raw.pool(),
                version.as_str(),
                Vec::<String>::new(),
                Vec::<String>::new(),
            )
            .await
        })
        .await
        .map(drop)
    })
    .await?;
    out.push(m);
    Ok(out)
}

/// Unlock every guard, `concurrency` at a time.
async fn unlock_all(held: Vec<leasehold::MutexGuard>, concurrency: usize) -> Result<()> {
    let n = held.len();
    let guards = std::sync::Mutex::new(held.into_iter().map(Some).collect::<Vec<_>>());
    crate::run_all(n, concurrency, |i| {
        let g = guards.lock().unwrap()[i].take();
        async move { Ok::<_, crate::Error>(g.ok_or("guard taken twice")?.unlock().await?) }
    })
    .await
    .map(drop)
}

/// Run `f(0..n)`, `CONCURRENCY` at a time, in this task; outputs in index order.
async fn all<T, E, F, Fut>(n: usize, f: F) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
    crate::Error: From<E>,
{
    crate::run_all(n, CONCURRENCY, f).await
}

/// Reset the statistics, run `work` (`ops` operations), and read what `command` cost.
async fn phase<T>(
    env: &Env,
    command: &str,
    ops: usize,
    work: impl Future<Output = Result<T>>,
) -> Result<(T, Measured)> {
    env.admin.reset_stats().await?;
    let cpu0 = env.admin.cpu_seconds().await?;
    let t0 = Instant::now();
    let value = work.await?;
    let wall = t0.elapsed();
    let cpu1 = env.admin.cpu_seconds().await?;
    let all = env.admin.commandstats().await?;
    let stat = all.get(command).copied().unwrap_or_default();
    // Everything else is what the scripts called, except this function's own CONFIG RESETSTAT
    // and its two INFO cpu (INFO commandstats is not counted in its own reply).
    let mut inner: Vec<(String, f64)> = all
        .iter()
        .filter(|(k, _)| k.as_str() != command && k.as_str() != "config|resetstat")
        .map(|(k, s)| {
            let own = if k == "info" { 2 } else { 0 };
            (
                k.to_uppercase(),
                s.calls.saturating_sub(own) as f64 / ops as f64,
            )
        })
        .filter(|(_, n)| *n >= 0.05)
        .collect();
    inner.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let inner_per_op = inner.iter().map(|(_, n)| n).sum();
    let inner = inner
        .iter()
        .map(|(k, n)| format!("{k} {}", trim(*n)))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((
        value,
        Measured {
            calls: stat.calls,
            usec_per_call: stat.usec_per_call(),
            cpu_us_per_op: (cpu1 - cpu0) * 1e6 / ops as f64,
            ops_per_sec: ops as f64 / wall.as_secs_f64(),
            inner_per_op,
            inner,
        },
    ))
}

/// `2`, `1.5`: whole numbers without decimals.
fn trim(n: f64) -> String {
    if (n - n.round()).abs() < 0.05 {
        format!("{:.0}", n)
    } else {
        format!("{n:.1}")
    }
}
