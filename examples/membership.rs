//! Service membership with keys put with a lease: several members register, one dies, the
//! others see it go once its lease runs out. Leader election on top picks a coordinator.
//!
//! ```sh
//! cargo run --example membership               # starts a throwaway redis-server
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example membership
//! ```

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use leasehold::{Client, SessionOptions};

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

    let mut known = BTreeSet::new();
    view(
        &mut known,
        start,
        watcher_client.get_prefix("members/", 100, None).await?.kvs,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // member-1 (the coordinator) crashes: no revoke, its lease just stops being renewed.
    let (_, _, crashed) = members.remove(0);
    println!(
        "t={:>4} ms  member-1 crashes (its session stops renewing)",
        start.elapsed().as_millis()
    );
    crashed.orphan();
    drop(crashed);
    let deadline = Instant::now() + TTL * 2;
    while known.contains("members/member-1") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        view(
            &mut known,
            start,
            watcher_client.get_prefix("members/", 100, None).await?.kvs,
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A clean shutdown revokes at once.
    for (_, _, session) in &members {
        session.close().await?;
    }
    view(
        &mut known,
        start,
        watcher_client.get_prefix("members/", 100, None).await?.kvs,
    );
    println!(
        "members left: {}; leases left: {}",
        known.len(),
        watcher_client.leases().await?.len() - 1 // the watcher's own
    );
    Ok(())
}

/// Print who joined and who left since the last look.
fn view(known: &mut BTreeSet<String>, start: Instant, kvs: Vec<leasehold::KeyValue>) {
    let now: BTreeSet<String> = kvs.into_iter().map(|kv| kv.key).collect();
    for gone in known.difference(&now) {
        println!("t={:>4} ms  {gone} left", start.elapsed().as_millis());
    }
    for new in now.difference(known) {
        println!("t={:>4} ms  {new} is a member", start.elapsed().as_millis());
    }
    *known = now;
}
