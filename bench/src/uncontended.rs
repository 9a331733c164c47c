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
    /// Commands the client sent to Redis per cycle (scripts count as one), when known.
    calls: Option<f64>,
}

pub struct Outcome {
    pub table: Table,
    /// Median cycles/s by (library, tasks), for the targets.
    pub rates: Vec<(Lib, usize, f64)>,
}

impl Outcome {
    pub fn rate(&self, lib: Lib, tasks: usize) -> f64 {
        self.rates
            .iter()
            .find(|(l, t, _)| *l == lib && *t == tasks)
            .map_or(f64::NAN, |r| r.2)
    }
}

pub async fn run(env: &Env) -> Result<Outcome> {
    let libs = [
        Lib::Raw,
        Lib::Rslock,
        Lib::Leasehold,
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
        "Redis calls per cycle",
        "÷ raw",
        "÷ rslock",
    ]);
    let mut rates = Vec::new();
    for (lib, tasks, reps) in &points {
        let rate = median_rate(*lib, *tasks);
        rates.push((*lib, *tasks, rate));
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
            if reps.iter().all(|p| p.calls.is_some()) {
                format!("{:.2}", stats::median(reps.iter().filter_map(|p| p.calls)))
            } else {
                "–".to_owned()
            },
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
    let calls = check_work(env, lib, cycles).await?;
    let measured = all.len().max(1) as f64;
    let rate = all.len() as f64 / env.plan.point.as_secs_f64();
    let (p50, p99) = stats::p50_p99(&mut all);
    Ok(Point {
        rate,
        p50,
        p99,
        server_cpu: server / measured,
        client_cpu: client / measured,
        calls,
    })
}

/// CPU seconds used so far by the server `lib` talks to.
async fn server_cpu(env: &Env, lib: Lib) -> Result<f64> {
    match lib {
        Lib::Etcd => Ok(sys::process_cpu_seconds(env.etcd_pid())),
        _ => env.admin.cpu_seconds().await,
    }
}

/// Make sure every counted cycle reached Redis (a library that silently did nothing would
/// look fast): raw and rslock send a SET and an EVALSHA per cycle; leasehold's scripts run a
/// ZADD (lock) and a ZREM (unlock) per cycle, however many calls went in one batch.
/// Returns the commands the client sent per cycle (warm-up included; leasehold's also count
/// the sessions' grant and revoke): SET + EVALSHA for raw and rslock, EVALSHA for leasehold
/// (whose SETs run inside its scripts).
async fn check_work(env: &Env, lib: Lib, cycles: u64) -> Result<Option<f64>> {
    let stats = env.admin.commandstats().await?;
    let calls = |c: &str| stats.get(c).map_or(0, |s| s.calls);
    let per_cycle = |n: u64| Some(n as f64 / cycles.max(1) as f64);
    let (ok, sent) = match lib {
        Lib::Raw | Lib::Rslock => (
            calls("set") >= cycles && calls("evalsha") >= cycles,
            per_cycle(calls("set") + calls("evalsha")),
        ),
        Lib::Leasehold | Lib::LeaseholdUnbatched | Lib::LeaseholdOneSession => (
            calls("zadd") >= cycles && calls("zrem") >= cycles,
            per_cycle(calls("evalsha")),
        ),
        Lib::Etcd => (true, None),
    };
    if ok {
        Ok(sent)
    } else {
        Err(format!(
            "{}: {cycles} cycles counted but Redis saw only {} SET, {} EVALSHA, {} ZADD, {} ZREM",
            lib.name(),
            calls("set"),
            calls("evalsha"),
            calls("zadd"),
            calls("zrem")
        )
        .into())
    }
}
