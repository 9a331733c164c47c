//! Scenario 1: uncontended lock + unlock cycles per second on distinct locks, at 1 task and at
//! 64 tasks, each task cycling on its own lock name for a fixed time.

use std::time::{Duration, Instant};

use crate::libs::{self, Lib, Locker};
use crate::stats::{self, Table};
use crate::{sys, Env, Result};

pub const TASKS: [usize; 2] = [1, 64];

/// One measured point: one library, one task count, one repetition.
struct Point {
    rate: f64,
    p50: Duration,
    p99: Duration,
    /// CPU seconds per cycle of the server (Redis, or etcd for etcd) and of this process.
    server_cpu: f64,
    client_cpu: f64,
    /// What Redis did per cycle (`INFO commandstats`), when the server is Redis.
    redis: Option<RedisWork>,
}

/// Per cycle, from `INFO commandstats`.
#[derive(Clone, Copy)]
struct RedisWork {
    /// Commands the client sent (a script call counts once).
    sent: f64,
    /// Every command Redis ran, those called inside scripts included.
    commands: f64,
    /// Time inside the commands the client sent (a script's includes what it called), µs.
    us: f64,
}

pub struct Outcome {
    pub table: Table,
    /// Median cycles/s and median Redis µs inside commands per cycle by (library, tasks), for
    /// the targets.
    pub rates: Vec<(Lib, usize, f64, f64)>,
}

impl Outcome {
    pub fn rate(&self, lib: Lib, tasks: usize) -> f64 {
        self.find(lib, tasks).map_or(f64::NAN, |r| r.2)
    }

    pub fn redis_us(&self, lib: Lib, tasks: usize) -> f64 {
        self.find(lib, tasks).map_or(f64::NAN, |r| r.3)
    }

    fn find(&self, lib: Lib, tasks: usize) -> Option<&(Lib, usize, f64, f64)> {
        self.rates
            .iter()
            .find(|(l, t, _, _)| *l == lib && *t == tasks)
    }
}

pub async fn run(env: &Env) -> Result<Outcome> {
    let libs = [
        Lib::Raw,
        Lib::Rslock,
        Lib::Leasehold,
        Lib::LeaseholdEvalsha,
        Lib::LeaseholdUnbatched,
        Lib::LeaseholdOneSession,
        Lib::Etcd,
    ];
    let mut points: Vec<(Lib, usize, Vec<Point>)> = Vec::new();
    for lib in libs {
        for tasks in TASKS {
            // At 1 task a shared session is the task's own: nothing to compare.
            if lib == Lib::LeaseholdOneSession && tasks == 1 {
                continue;
            }
            points.push((lib, tasks, Vec::new()));
        }
    }
    // Repetitions outermost, so a burst of load from elsewhere hits every library alike.
    for rep in 0..env.plan.uncontended_reps {
        for (lib, tasks, reps) in &mut points {
            eprintln!(
                "  uncontended: rep {}/{}, {} at {tasks} task(s)",
                rep + 1,
                env.plan.uncontended_reps,
                lib.name()
            );
            reps.push(point(env, *lib, *tasks).await?);
        }
    }

    let median_rate = |lib: Lib, tasks: usize| {
        let (_, _, reps) = points
            .iter()
            .find(|(l, t, _)| *l == lib && *t == tasks)
            .expect("measured");
        stats::median(reps.iter().map(|p| p.rate))
    };
    let mut table = Table::new(&[
        "library",
        "tasks",
        "cycles/s (median)",
        "min–max of reps",
        "p50 cycle",
        "p99 cycle",
        "server CPU per cycle",
        "client CPU per cycle",
        "Redis µs inside commands per cycle",
        "÷ raw",
        "commands sent per cycle",
        "commands run per cycle (in scripts too)",
        "cycles/s ÷ raw",
        "cycles/s ÷ rslock",
    ]);
    let median_work = |lib: Lib, tasks: usize, f: fn(&RedisWork) -> f64| {
        let (_, _, reps) = points
            .iter()
            .find(|(l, t, _)| *l == lib && *t == tasks)
            .expect("measured");
        if reps.iter().any(|p| p.redis.is_none()) {
            return f64::NAN;
        }
        stats::median(reps.iter().filter_map(|p| p.redis.as_ref().map(f)))
    };
    let work = |v: f64, digits: usize| {
        if v.is_nan() {
            "–".to_owned()
        } else {
            format!("{v:.digits$}")
        }
    };
    let mut rates = Vec::new();
    for (lib, tasks, reps) in &points {
        let rate = median_rate(*lib, *tasks);
        let us = median_work(*lib, *tasks, |w| w.us);
        rates.push((*lib, *tasks, rate, us));
        let lo = reps.iter().map(|p| p.rate).fold(f64::INFINITY, f64::min);
        let hi = reps.iter().map(|p| p.rate).fold(0.0, f64::max);
        table.row(vec![
            lib.name().to_owned(),
            tasks.to_string(),
            stats::thousands(rate),
            format!("{}–{}", stats::thousands(lo), stats::thousands(hi)),
            stats::ms(stats::median_duration(reps.iter().map(|p| p.p50))),
            stats::ms(stats::median_duration(reps.iter().map(|p| p.p99))),
            format!(
                "{:.1} µs",
                stats::median(reps.iter().map(|p| p.server_cpu)) * 1e6
            ),
            format!(
                "{:.1} µs",
                stats::median(reps.iter().map(|p| p.client_cpu)) * 1e6
            ),
            work(us, 1),
            match us / median_work(Lib::Raw, *tasks, |w| w.us) {
                r if r.is_nan() => "–".to_owned(),
                r => format!("{r:.2}×"),
            },
            work(median_work(*lib, *tasks, |w| w.sent), 2),
            work(median_work(*lib, *tasks, |w| w.commands), 1),
            format!("{:.2}×", rate / median_rate(Lib::Raw, *tasks)),
            format!("{:.2}×", rate / median_rate(Lib::Rslock, *tasks)),
        ]);
    }
    Ok(Outcome { table, rates })
}

async fn point(env: &Env, lib: Lib, tasks: usize) -> Result<Point> {
    match lib {
        Lib::Raw => {
            let shared = libs::RawShared::connect(&env.redis_url).await?;
            let lockers = (0..tasks)
                .map(|i| shared.locker(format!("bench:raw:{i}"), format!("token-{i}")))
                .collect();
            measure(env, lib, lockers).await
        }
        Lib::Rslock => {
            // One manager for all tasks, as an application would share one.
            let manager = libs::Rslock::manager(&env.redis_url);
            let lockers = (0..tasks)
                .map(|i| libs::Rslock::new(manager.clone(), format!("bench:rslock:{i}")))
                .collect();
            measure(env, lib, lockers).await
        }
        Lib::Leasehold | Lib::LeaseholdUnbatched => {
            // One client (pool of 8, like the raw baseline), one session per task.
            let batch = lib == Lib::Leasehold;
            let client = env.leasehold_client_with("bench", 8, batch).await?;
            let mut lockers = Vec::new();
            for i in 0..tasks {
                lockers.push(libs::Leasehold::new(&client, &format!("u{i}")).await?);
            }
            measure(env, lib, lockers).await
        }
        Lib::LeaseholdEvalsha => {
            let client = env.leasehold_evalsha_client("bench", 8).await?;
            let mut lockers = Vec::new();
            for i in 0..tasks {
                lockers.push(libs::Leasehold::new(&client, &format!("u{i}")).await?);
            }
            measure(env, lib, lockers).await
        }
        Lib::LeaseholdOneSession => {
            let client = env.leasehold_client_with("bench", 8, true).await?;
            let session = client
                .session_with(leasehold::SessionOptions::new().ttl(libs::TTL))
                .await?;
            let lockers = (0..tasks)
                .map(|i| libs::Leasehold::sharing(&session, &format!("u{i}")))
                .collect::<Result<Vec<_>>>()?;
            let point = measure(env, lib, lockers).await;
            session.close().await?;
            point
        }
        Lib::Etcd => {
            let client = etcd_client::Client::connect([&env.etcd_endpoint], None).await?;
            let mut lockers = Vec::new();
            for i in 0..tasks {
                lockers.push(libs::Etcd::new(&client, format!("/bench/u{i}")).await?);
            }
            measure(env, lib, lockers).await
        }
    }
}

/// Run every locker in its own task for the warm-up plus the measured time; count the cycles
/// that started inside the measured time.
async fn measure<L: Locker>(env: &Env, lib: Lib, lockers: Vec<L>) -> Result<Point> {
    env.admin.reset_stats().await?;
    let from = Instant::now() + env.plan.warmup;
    let until = from + env.plan.point;
    let handles: Vec<_> = lockers
        .into_iter()
        .map(|mut l| {
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(1 << 14);
                let mut cycles = 0u64;
                loop {
                    let s = Instant::now();
                    if s >= until {
                        break;
                    }
                    l.lock().await?;
                    l.unlock().await?;
                    cycles += 1;
                    if s >= from {
                        samples.push(s.elapsed());
                    }
                }
                Ok::<_, crate::Error>((l, samples, cycles))
            })
        })
        .collect();
    // CPU over the measured stretch only.
    tokio::time::sleep_until(from.into()).await;
    let server0 = server_cpu(env, lib).await?;
    let client0 = sys::cpu_time_self();
    tokio::time::sleep_until(until.into()).await;
    let server = server_cpu(env, lib).await? - server0;
    let client = (sys::cpu_time_self() - client0).as_secs_f64();

    let mut all = Vec::new();
    let mut cycles = 0;
    for h in handles {
        let (l, samples, n) = h.await??;
        l.close().await?;
        all.extend(samples);
        cycles += n;
    }
    let redis = check_work(env, lib, cycles).await?;
    let measured = all.len().max(1) as f64;
    let rate = all.len() as f64 / env.plan.point.as_secs_f64();
    let (p50, p99) = stats::p50_p99(&mut all);
    Ok(Point {
        rate,
        p50,
        p99,
        server_cpu: server / measured,
        client_cpu: client / measured,
        redis,
    })
}

/// CPU seconds used so far by the server `lib` talks to.
async fn server_cpu(env: &Env, lib: Lib) -> Result<f64> {
    match lib {
        Lib::Etcd => Ok(sys::process_cpu_seconds(env.etcd_pid())),
        _ => env.admin.cpu_seconds().await,
    }
}

/// The commands a library sends itself (the rest run inside its scripts).
fn sent_commands(lib: Lib) -> &'static [&'static str] {
    match lib {
        Lib::Raw | Lib::Rslock => &["set", "evalsha"],
        _ => &["evalsha", "fcall"],
    }
}

/// Commands that are not the lock work: the bench's own statistics, connection set-up, the
/// doorbell subscription and the function library's load.
const NOT_WORK: [&str; 12] = [
    "info",
    "config|resetstat",
    "config|set",
    "client|setname",
    "client|id",
    "hello",
    "ping",
    "ssubscribe",
    "subscribe",
    "function|load",
    "acl|setuser",
    "publish",
];

/// Make sure every counted cycle reached Redis (a library that silently did nothing would
/// look fast): raw and rslock send a SET and an EVALSHA per cycle; leasehold's scripts run a
/// ZADD (lock) and a ZREM (unlock) per cycle, however many calls went in one batch. Returns
/// what Redis did per cycle (warm-up included; leasehold's figures also include its sessions'
/// grant and revoke).
async fn check_work(env: &Env, lib: Lib, cycles: u64) -> Result<Option<RedisWork>> {
    if lib == Lib::Etcd {
        return Ok(None);
    }
    let stats = env.admin.commandstats().await?;
    let calls = |c: &str| stats.get(c).map_or(0, |s| s.calls);
    let ok = match lib {
        Lib::Raw | Lib::Rslock => calls("set") >= cycles && calls("evalsha") >= cycles,
        _ => calls("zadd") >= cycles && calls("zrem") >= cycles,
    };
    if !ok {
        return Err(format!(
            "{}: {cycles} cycles counted but Redis saw only {} SET, {} EVALSHA, {} FCALL, {} ZADD, {} ZREM",
            lib.name(),
            calls("set"),
            calls("evalsha"),
            calls("fcall"),
            calls("zadd"),
            calls("zrem")
        )
        .into());
    }
    let per_cycle = |n: u64| n as f64 / cycles.max(1) as f64;
    let sent = sent_commands(lib);
    // Raw and rslock's SET is sent by the client; leasehold's SETs run inside its scripts,
    // whose time already includes theirs.
    Ok(Some(RedisWork {
        sent: per_cycle(sent.iter().map(|c| calls(c)).sum()),
        commands: per_cycle(
            stats
                .iter()
                .filter(|(c, _)| !NOT_WORK.contains(&c.as_str()))
                .map(|(_, s)| s.calls)
                .sum(),
        ),
        us: per_cycle(
            sent.iter()
                .map(|c| stats.get(*c).map_or(0, |s| s.usec))
                .sum(),
        ),
    }))
}
