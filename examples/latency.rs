//! Latency figures for leasehold's mutex, side by side with a raw `SET NX PX` lock in the same
//! run (the floor). Not a test: prints a table.
//!
//! ```sh
//! cargo run --release --example latency          # starts a throwaway redis-server
//! ```

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, KeysInterface, LuaInterface};
use fred::types::{Expiration, SetOptions};
use leasehold::Client;

const CYCLES: usize = 3000;
const HANDOFFS: usize = 200;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the server (if we started one) alive until the end.
    let (_server, url) = leasehold_testing::url_or_start()?;
    println!("| scenario | n | p50 | p99 | rate |");
    println!("|---|---|---|---|---|");

    // Floor: SET NX PX + compare-and-delete, one task, two round trips per cycle.
    let raw = fred::clients::Client::new(
        fred::types::config::Config::from_url(&url)?,
        None,
        None,
        None,
    );
    raw.init().await?;
    let del = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
    let mut samples = Vec::with_capacity(CYCLES);
    let t = Instant::now();
    for i in 0..CYCLES {
        let key = format!("raw:{}", i % 64);
        let s = Instant::now();
        let ok: Option<String> = raw
            .set(
                &key,
                "me",
                Some(Expiration::PX(10_000)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        assert!(ok.is_some());
        let _: i64 = raw.eval(del, vec![key], vec!["me"]).await?;
        samples.push(s.elapsed());
    }
    row("raw SET NX PX + CAD, 1 task", &mut samples, t.elapsed());

    // leasehold: lock + unlock, one task, distinct locks.
    let client = Client::builder()
        .url(&url)
        .namespace("latency")
        .build()
        .await?;
    let session = client.session().await?;
    let mutexes: Vec<_> = (0..64)
        .map(|i| session.mutex(&format!("u{i}")).unwrap())
        .collect();
    let mut samples = Vec::with_capacity(CYCLES);
    let t = Instant::now();
    for i in 0..CYCLES {
        let s = Instant::now();
        mutexes[i % 64].lock().await?.unlock().await?;
        samples.push(s.elapsed());
    }
    row("leasehold lock+unlock, 1 task", &mut samples, t.elapsed());

    for contenders in [2, 8] {
        let mut samples = handoff(&url, contenders).await?;
        row(
            &format!("leasehold handoff, {contenders} contenders (hold 10 ms, 30 ms outside)"),
            &mut samples,
            Duration::ZERO,
        );
    }
    Ok(())
}

/// Time from the holder starting its unlock to a *different* contender holding the lock.
async fn handoff(
    url: &str,
    contenders: usize,
) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let released: Arc<StdMutex<Option<(usize, Instant)>>> = Arc::default();
    let samples: Arc<StdMutex<Vec<Duration>>> = Arc::default();
    let mut tasks = Vec::new();
    for me in 0..contenders {
        // One client per contender, as separate processes would be.
        let client = Client::builder()
            .url(url)
            .namespace("latency")
            .pool_size(1)
            .build()
            .await?;
        let (released, samples) = (released.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let session = client.session().await?;
            let mutex = session.mutex(&format!("handoff-{contenders}"))?;
            loop {
                let guard = mutex.lock().await?;
                let now = Instant::now();
                {
                    let mut s = samples.lock().unwrap();
                    if s.len() >= HANDOFFS {
                        break;
                    }
                    if let Some((who, at)) = *released.lock().unwrap() {
                        if who != me {
                            s.push(now - at);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                *released.lock().unwrap() = Some((me, Instant::now()));
                guard.unlock().await?;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            Ok::<_, leasehold::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let out = samples.lock().unwrap().clone();
    Ok(out)
}

fn row(name: &str, samples: &mut [Duration], total: Duration) {
    samples.sort();
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    let rate = if total.is_zero() {
        "-".to_owned()
    } else {
        format!("{:.0}/s", samples.len() as f64 / total.as_secs_f64())
    };
    println!(
        "| {name} | {} | {:.3} ms | {:.3} ms | {rate} |",
        samples.len(),
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3
    );
}
