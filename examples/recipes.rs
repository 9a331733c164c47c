//! One short run of each primitive beyond Mutex: RwLock, Semaphore, Barrier, DoubleBarrier,
//! Queue and PriorityQueue.
//!
//! ```sh
//! cargo run --example recipes                  # starts a throwaway redis-server
//! ```

use std::time::Duration;

use leasehold::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the server (if we started one) alive until the end.
    let (_server, url) = leasehold_testing::url_or_start()?;
    let client = Client::builder()
        .url(&url)
        .namespace(format!("recipes-{}", std::process::id()))
        .build()
        .await?;
    let a = client.session().await?;
    let b = client.session().await?;

    // RwLock: readers share, a writer waits for them.
    let r1 = a.rwlock("catalog")?.read().await?;
    let r2 = b.rwlock("catalog")?.read().await?;
    println!(
        "rwlock: two readers at once (tokens {} and {})",
        r1.fencing_token(),
        r2.fencing_token()
    );
    let writer = {
        let lock = a.rwlock("catalog")?;
        tokio::spawn(async move { lock.write().await.map(|g| g.fencing_token()) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!("rwlock: writer waiting: {}", !writer.is_finished());
    drop((r1, r2));
    println!("rwlock: writer in with token {}", writer.await??);

    // Semaphore: 2 permits.
    let sem = a.semaphore("connections", 2)?;
    let p1 = sem.acquire().await?;
    let p2 = b.semaphore("connections", 2)?.acquire().await?;
    println!(
        "semaphore: third try_acquire -> {}",
        sem.try_acquire().await.unwrap_err()
    );
    drop((p1, p2));

    // Barrier: workers wait until the coordinator releases.
    let barrier = a.barrier("deploy")?;
    barrier.hold().await?;
    let waiting = {
        let b = b.barrier("deploy")?;
        tokio::spawn(async move { b.wait().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!("barrier: worker blocked: {}", !waiting.is_finished());
    barrier.release().await?;
    waiting.await??;
    println!("barrier: released, worker through");

    // DoubleBarrier: two participants enter and leave together.
    let (da, db) = (a.double_barrier("batch", 2)?, b.double_barrier("batch", 2)?);
    let (ea, eb) = tokio::join!(da.enter(), db.enter());
    ea?;
    eb?;
    println!("double barrier: both entered");
    let (la, lb) = tokio::join!(da.leave(), db.leave());
    la?;
    lb?;
    println!("double barrier: both left");

    // Queues: FIFO, and priorities (lower first).
    let q = client.queue("jobs")?;
    for job in ["first", "second"] {
        q.enqueue(job).await?;
    }
    println!("queue: {} then {}", q.dequeue().await?, q.dequeue().await?);
    let pq = client.priority_queue("alerts")?;
    pq.enqueue_with_priority("low", 9).await?;
    pq.enqueue_with_priority("high", 0).await?;
    println!(
        "priority queue: {} then {}",
        pq.dequeue().await?,
        pq.dequeue().await?
    );
    Ok(())
}
