//! Scenario 2: handoff latency and fairness. 2 and 8 contenders on one lock, each in a loop:
//! take the lock, hold it 10 ms, release, work 30 ms outside it. Every contender has its own
//! client (and session or lease), as separate processes would.
//!
//! A handoff sample is the time from a holder starting its release to a *different* contender
//! holding the lock, counted only when that contender was already waiting when the release
//! started: a contender that arrives at a free lock measures nothing about handoff. With 2
//! contenders the lock is busy about half the time, so only some acquisitions are handoffs;
//! each repetition runs until it has `n` of them (or its time runs out).

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use crate::libs::{self, Lib, Locker};
use crate::stats::{self, Table};
use crate::{Env, Result};

pub const CONTENDERS: [usize; 2] = [2, 8];
const HOLD: Duration = Duration::from_millis(10);
const WORK: Duration = Duration::from_millis(30);

#[derive(Default)]
struct State {
    /// Who started releasing last, and when.
    last_release: Option<(usize, Instant)>,
    samples: Vec<Duration>,
    /// How long each release call took (its round trip, as the releaser sees it).
    releases: Vec<Duration>,
    acquisitions: Vec<u64>,
    stop: bool,
}

struct Rep {
    n: usize,
    p50: Duration,
    p99: Duration,
    release_p50: Duration,
    /// max / min acquisitions per contender.
    fairness: f64,
    min_acq: u64,
    max_acq: u64,
}

pub struct Outcome {
    pub table: Table,
    /// Median p50, p99 and fairness by (library, contenders), for the targets.
    pub results: Vec<(Lib, usize, Duration, Duration, f64)>,
}

pub async fn run(env: &Env) -> Result<Outcome> {
    let libs = [
        Lib::Leasehold,
        Lib::LeaseholdUnbatched,
        Lib::Rslock,
        Lib::Etcd,
    ];
    let mut all: Vec<(Lib, usize, Vec<Rep>)> = Vec::new();
    for lib in libs {
        for c in CONTENDERS {
            all.push((lib, c, Vec::new()));
        }
    }
    for rep in 0..env.plan.reps {
        for (lib, contenders, reps) in &mut all {
            eprintln!(
                "  handoff: rep {}/{}, {} with {contenders} contenders",
                rep + 1,
                env.plan.reps,
                lib.name()
            );
            let name = format!("handoff-{contenders}-{rep}");
            reps.push(one(env, *lib, *contenders, &name).await?);
        }
    }

    let mut table = Table::new(&[
        "library",
        "contenders",
        "handoffs measured",
        "p50 handoff",
        "p99 handoff",
        "p50 release call",
        "acquisitions per contender (min–max)",
        "fairness max/min",
    ]);
    let mut results = Vec::new();
    for (lib, contenders, reps) in &all {
        let p50 = stats::median_duration(reps.iter().map(|r| r.p50));
        let p99 = stats::median_duration(reps.iter().map(|r| r.p99));
        let fairness = stats::median(reps.iter().map(|r| r.fairness));
        results.push((*lib, *contenders, p50, p99, fairness));
        let ns: Vec<String> = reps.iter().map(|r| r.n.to_string()).collect();
        let acq: Vec<String> = reps
            .iter()
            .map(|r| format!("{}–{}", r.min_acq, r.max_acq))
            .collect();
        table.row(vec![
            lib.name().to_owned(),
            contenders.to_string(),
            ns.join(" / "),
            stats::ms(p50),
            stats::ms(p99),
            stats::ms(stats::median_duration(reps.iter().map(|r| r.release_p50))),
            acq.join(" / "),
            ratio(fairness),
        ]);
    }
    Ok(Outcome { table, results })
}

pub fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "∞".to_owned()
    }
}

async fn one(env: &Env, lib: Lib, contenders: usize, name: &str) -> Result<Rep> {
    match lib {
        Lib::Leasehold | Lib::LeaseholdUnbatched => {
            let mut lockers = Vec::new();
            for _ in 0..contenders {
                // Its own client per contender (default pool), as its own process would have.
                let batch = lib == Lib::Leasehold;
                let client = env.leasehold_client_with("bench", 4, batch).await?;
                lockers.push(libs::Leasehold::new(&client, name).await?);
            }
            contend(env, lockers).await
        }
        Lib::Rslock => {
            let lockers = (0..contenders)
                .map(|_| {
                    let manager = libs::Rslock::manager(&env.redis_url);
                    libs::Rslock::new(manager, format!("bench:rslock:{name}"))
                })
                .collect();
            contend(env, lockers).await
        }
        Lib::Etcd => {
            let mut lockers = Vec::new();
            for _ in 0..contenders {
                let client = etcd_client::Client::connect([&env.etcd_endpoint], None).await?;
                lockers.push(libs::Etcd::new(&client, format!("/bench/{name}")).await?);
            }
            contend(env, lockers).await
        }
        Lib::Raw => Err("the raw lock has no way to wait: not in the handoff scenario".into()),
        // Contenders stand for separate processes here, each with its own session.
        Lib::LeaseholdOneSession | Lib::LeaseholdEvalsha => {
            Err("not in the handoff scenario".into())
        }
    }
}

async fn contend<L: Locker>(env: &Env, lockers: Vec<L>) -> Result<Rep> {
    let want = env.plan.handoffs;
    let deadline = Instant::now() + env.plan.handoff_time_cap;
    let state = Arc::new(StdMutex::new(State {
        acquisitions: vec![0; lockers.len()],
        ..State::default()
    }));
    let handles: Vec<_> = lockers
        .into_iter()
        .enumerate()
        .map(|(me, mut l)| {
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    let requested = Instant::now();
                    l.lock().await?;
                    let held = Instant::now();
                    let stop = {
                        let mut s = state.lock().unwrap();
                        if !s.stop {
                            s.acquisitions[me] += 1;
                            if let Some((who, at)) = s.last_release {
                                if who != me && requested <= at {
                                    s.samples.push(held - at);
                                }
                            }
                            s.stop = s.samples.len() >= want || held >= deadline;
                        }
                        s.stop
                    };
                    if !stop {
                        tokio::time::sleep(HOLD).await;
                        state.lock().unwrap().last_release = Some((me, Instant::now()));
                    }
                    let t = Instant::now();
                    l.unlock().await?;
                    let took = t.elapsed();
                    let stop = {
                        let mut s = state.lock().unwrap();
                        s.releases.push(took);
                        stop || s.stop
                    };
                    if stop {
                        break;
                    }
                    tokio::time::sleep(WORK).await;
                }
                Ok::<_, crate::Error>(l)
            })
        })
        .collect();
    for h in handles {
        h.await??.close().await?;
    }
    let mut s = std::mem::take(&mut *state.lock().unwrap());
    let (p50, p99) = stats::p50_p99(&mut s.samples);
    let (release_p50, _) = stats::p50_p99(&mut s.releases);
    let min_acq = s.acquisitions.iter().copied().min().unwrap_or(0);
    let max_acq = s.acquisitions.iter().copied().max().unwrap_or(0);
    Ok(Rep {
        n: s.samples.len(),
        p50,
        p99,
        release_p50,
        fairness: max_acq as f64 / min_acq as f64,
        min_acq,
        max_acq,
    })
}
