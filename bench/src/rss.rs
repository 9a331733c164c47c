//! Scenario 5b: client memory over many lock cycles. 64 tasks, each with its own session and
//! lock (one client, pool of 8), cycle lock + unlock until the total reaches the target (1,000,000
//! in the full run); `VmRSS` is sampled at every 5 % of the cycles. The first sample (at 5 %)
//! is the baseline: earlier scenarios already grew the heap, and the allocator keeps it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::libs::{self, Locker};
use crate::stats::{self, Table};
use crate::{sys, Env, Result};

const TASKS: usize = 64;
const SAMPLES: u64 = 20;

pub struct Outcome {
    pub table: Table,
    pub first: u64,
    pub last: u64,
    pub max: u64,
}

impl Outcome {
    /// "Flat": the last sample is within 5 % (at least 2 MiB) of the first.
    pub fn flat(&self) -> bool {
        let allowed = (self.first / 20).max(2 << 20);
        self.last <= self.first + allowed
    }
}

pub async fn run(env: &Env) -> Result<Outcome> {
    let target = env.plan.rss_cycles;
    let client = env.leasehold_client("rss", 8).await?;
    let mut lockers = Vec::new();
    for i in 0..TASKS {
        lockers.push(libs::Leasehold::new(&client, &format!("r{i}")).await?);
    }
    let redis_before = env.admin.used_memory().await?;
    let keys_before = env.admin.dbsize().await?;
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let handles: Vec<_> = lockers
        .into_iter()
        .map(|mut l| {
            let done = done.clone();
            tokio::spawn(async move {
                while done.fetch_add(1, Ordering::Relaxed) < target {
                    l.lock().await?;
                    l.unlock().await?;
                }
                Ok::<_, crate::Error>(l)
            })
        })
        .collect();

    // Sample at every 5 % of the cycles; track the maximum in between.
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut max = 0;
    let mut next = target / SAMPLES;
    while !handles.iter().all(|h| h.is_finished()) {
        let rss = sys::rss_bytes();
        max = max.max(rss);
        let cycles = done.load(Ordering::Relaxed).min(target);
        if cycles >= next {
            samples.push((cycles, rss));
            next += target / SAMPLES;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed();
    samples.push((target, sys::rss_bytes()));
    for h in handles {
        h.await??.close().await?;
    }
    drop(client);
    let redis_after = env.admin.used_memory().await?;
    let keys_after = env.admin.dbsize().await?;

    let (first, last) = (samples[0].1, samples[samples.len() - 1].1);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut table = Table::new(&["measure", "value"]);
    table.row(vec![
        "lock+unlock cycles (64 tasks, own session and lock each)".into(),
        format!(
            "{} in {:.1} s ({}/s)",
            stats::thousands(target as f64),
            elapsed.as_secs_f64(),
            stats::thousands(target as f64 / elapsed.as_secs_f64())
        ),
    ]);
    table.row(vec![
        format!(
            "client VmRSS at {}% of the cycles (baseline)",
            100 / SAMPLES
        ),
        format!("{:.1} MiB", mib(first)),
    ]);
    table.row(vec![
        "client VmRSS at the end".into(),
        format!("{:.1} MiB ({:+.1} MiB)", mib(last), mib(last) - mib(first)),
    ]);
    table.row(vec![
        "client VmRSS maximum (sampled every 20 ms)".into(),
        format!("{:.1} MiB", mib(max)),
    ]);
    table.row(vec![
        "all samples, MiB".into(),
        samples
            .iter()
            .map(|(_, r)| format!("{:.1}", mib(*r)))
            .collect::<Vec<_>>()
            .join(", "),
    ]);
    table.row(vec![
        "Redis used_memory before → after (sessions closed)".into(),
        format!(
            "{} → {}",
            stats::bytes(redis_before as f64),
            stats::bytes(redis_after as f64)
        ),
    ]);
    table.row(vec![
        "Redis keys before → after".into(),
        format!("{keys_before} → {keys_after}"),
    ]);
    Ok(Outcome {
        table,
        first,
        last,
        max,
    })
}
