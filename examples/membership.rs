//! Service membership with keys put with a lease: several members register, one dies, the
//! others see it go once its lease runs out (through a watch on `members/`, no polling).
//! Leader election on top picks a coordinator.
//!
//! ```sh
//! cargo run --example membership               # starts a throwaway redis-server
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example membership
//! ```

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use leasehold::{Client, SessionOptions, WatchEvent, WatchOptions};

const TTL: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the server (if we started one) alive until the end.
    let (_server, url) = leasehold_testing::url_or_start()?;
    let namespace = format!("membership-{}", std::process::id());
    let connect = || Client::builder().url(&url).namespace(&namespace).build();

    // Each member is its own client (as its own process would be) with one session.
    let mut members = Vec::new();
    for n in 1..=4 {
        let client = connect().await?;
        let session = client
            .session_with(SessionOptions::new().ttl(TTL).label(format!("member-{n}")))
            .await?;
        session
            .put(&format!("members/member-{n}"), &format!("10.0.0.{n}:8080"))
            .await?;
        members.push((n, client, session));
    }
    println!("4 members registered under members/ (lease TTL {TTL:?})");

    // The members elect a coordinator; an observer reports every change.
    for (n, _, session) in &members {
        let election = session.election("coordinator")?;
        let me = format!("member-{n}");
        tokio::spawn(async move {
            if election.campaign(&me).await.is_ok() {
                // Leads until its session ends.
                std::future::pending::<()>().await;
            }
        });
    }
    let watcher_client = connect().await?;
    let watcher = watcher_client.session().await?;
    let mut coordinator = Box::pin(watcher.election("coordinator")?.observe());
    let start = Instant::now();
    tokio::spawn(async move {
        while let Some(Ok(ev)) = coordinator.next().await {
            match ev.leader {
                Some(l) => println!(
                    "t={:>4} ms  coordinator: {} (fencing token {})",
                    start.elapsed().as_millis(),
                    l.value,
                    l.fencing_token
                ),
                None => println!("t={:>4} ms  no coordinator", start.elapsed().as_millis()),
            }
        }
    });

    // The membership view: a watch on members/ (started first, so that nothing between it
    // and the initial read is missed), then the current members, then every change.
    let mut changes = Box::pin(
        watcher_client
            .watch("members/", WatchOptions::new().prefix())
            .await?,
    );
    let mut known: BTreeSet<String> = (watcher_client.get_prefix("members/", 100, None).await?)
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    for member in &known {
        println!(
            "t={:>4} ms  {member} is a member",
            start.elapsed().as_millis()
        );
    }
    let (left_tx, mut left_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(ev)) = changes.next().await {
            let at = start.elapsed().as_millis();
            match ev {
                WatchEvent::Put { key, .. } if known.insert(key.clone()) => {
                    println!("t={at:>4} ms  {key} is a member")
                }
                WatchEvent::Delete { key, .. } if known.remove(&key) => {
                    println!("t={at:>4} ms  {key} left");
                    let _ = left_tx.send(key);
                }
                _ => {}
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // member-1 crashes: no revoke, its lease just stops being renewed.
    let (_, _, crashed) = members.remove(0);
    println!(
        "t={:>4} ms  member-1 crashes (its session stops renewing)",
        start.elapsed().as_millis()
    );
    crashed.orphan();
    drop(crashed);
    // The watch reports it once its lease has expired and a renewal swept it.
    let gone = tokio::time::timeout(TTL * 3, left_rx.recv()).await;
    assert_eq!(gone.ok().flatten().as_deref(), Some("members/member-1"));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A clean shutdown revokes at once.
    for (_, _, session) in &members {
        session.close().await?;
    }
    for _ in 0..members.len() {
        tokio::time::timeout(TTL, left_rx.recv()).await?;
    }
    println!(
        "members left: {}; leases left: {}",
        watcher_client
            .get_prefix("members/", 100, None)
            .await?
            .kvs
            .len(),
        watcher_client.leases().await?.len() - 1 // the watcher's own
    );
    Ok(())
}
