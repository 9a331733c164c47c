//! etcd's recipes on leasehold: barriers, double barriers, queues, against a real redis-server.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use leasehold::Error;
use support::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test]
async fn barrier_waits_block_until_release_then_all_return() {
    let server = server();
    let client = client(&server, "b1").await;
    let coordinator = client.session().await.unwrap();
    let barrier = coordinator.barrier("go").unwrap();
    // An absent barrier does not block.
    tokio::time::timeout(Duration::from_millis(500), barrier.wait())
        .await
        .expect("returns at once")
        .unwrap();
    barrier.hold().await.unwrap();
    let worker = client.session().await.unwrap();
    assert!(matches!(
        worker.barrier("go").unwrap().hold().await,
        Err(Error::Locked {
            kind: "barrier",
            ..
        })
    ));
    let mut waiters = Vec::new();
    for _ in 0..5 {
        let b = worker.barrier("go").unwrap();
        waiters.push(tokio::spawn(async move {
            b.wait().await.unwrap();
            Instant::now()
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "blocked while held"
    );
    let released = Instant::now();
    assert!(barrier.release().await.unwrap());
    for w in waiters {
        let at = tokio::time::timeout(secs(2), w)
            .await
            .expect("promptly")
            .unwrap();
        assert!(at >= released);
    }
    assert!(!barrier.is_held().await.unwrap());
}

#[tokio::test]
async fn a_barrier_whose_holder_dies_is_released() {
    let server = server();
    let client = client(&server, "b2").await;
    let holder = client.session().await.unwrap();
    holder.barrier("go").unwrap().hold().await.unwrap();
    let worker = client.session().await.unwrap();
    let b = worker.barrier("go").unwrap();
    let w = tokio::spawn(async move { b.wait().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.close().await.unwrap();
    tokio::time::timeout(secs(2), w)
        .await
        .expect("released")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_barrier_of_ten() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "b3").await;
    let mut sessions = Vec::new();
    for _ in 0..11 {
        sessions.push(client.session().await.unwrap());
    }
    let mut entering = Vec::new();
    for s in &sessions[..9] {
        let b = s.double_barrier("round", 10).unwrap();
        entering.push(tokio::spawn(async move {
            b.enter().await.unwrap();
            b
        }));
    }
    assert!(
        eventually(secs(3), || async {
            zcard(&raw, "{b3}:dbarrier:round").await == 9
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        entering.iter().all(|e| !e.is_finished()),
        "9 block until the 10th"
    );
    let tenth = sessions[9].double_barrier("round", 10).unwrap();
    tenth.enter().await.unwrap();
    let mut inside = vec![tenth];
    for e in entering {
        inside.push(
            tokio::time::timeout(secs(2), e)
                .await
                .expect("released by the 10th")
                .unwrap(),
        );
    }
    let err = sessions[10]
        .double_barrier("round", 10)
        .unwrap()
        .enter()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::BarrierFull {
                count: 10,
                participants: 10,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        zcard(&raw, "{b3}:dbarrier:round").await,
        10,
        "the count stays 10"
    );

    // Leaving: everyone waits for everyone; a participant whose session is closed counts as
    // gone, so the others are not blocked by it.
    let quitter = inside.remove(0);
    let mut leaving = Vec::new();
    for b in inside {
        leaving.push(tokio::spawn(async move { b.leave().await }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        leaving.iter().all(|l| !l.is_finished()),
        "waiting for the 10th to leave"
    );
    sessions[9].close().await.unwrap(); // the quitter's session (the 10th entered first above)
    drop(quitter);
    for l in leaving {
        tokio::time::timeout(secs(2), l)
            .await
            .expect("all leave")
            .unwrap()
            .unwrap();
    }
    assert!(
        keys(&raw, "{b3}:dbarrier*").await.is_empty(),
        "nothing left behind"
    );
}

#[tokio::test]
async fn queue_is_fifo() {
    let server = server();
    let client = client(&server, "q1").await;
    let q = client.queue("jobs").unwrap();
    for i in 0..5 {
        q.enqueue(&i.to_string()).await.unwrap();
    }
    let mut out = Vec::new();
    for _ in 0..5 {
        out.push(q.dequeue().await.unwrap());
    }
    assert_eq!(out, ["0", "1", "2", "3", "4"]);
    assert_eq!(q.try_dequeue().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_readers_three_writers_drain_exactly_what_was_written() {
    let server = server();
    let client = client(&server, "q2").await;
    let mut readers = Vec::new();
    for _ in 0..3 {
        let q = client.queue("work").unwrap();
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match tokio::time::timeout(Duration::from_millis(1500), q.dequeue()).await {
                    Ok(v) => got.push(v.unwrap()),
                    Err(_) => return got, // idle: done
                }
            }
        }));
    }
    let mut writers = Vec::new();
    for w in 0..3 {
        let q = client.queue("work").unwrap();
        writers.push(tokio::spawn(async move {
            for i in 0..50 {
                q.enqueue(&format!("{w}-{i}")).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut all = Vec::new();
    for r in readers {
        all.extend(r.await.unwrap());
    }
    let written: HashSet<String> = (0..3)
        .flat_map(|w| (0..50).map(move |i| format!("{w}-{i}")))
        .collect();
    assert_eq!(all.len(), 150, "no duplicates, nothing lost");
    assert_eq!(all.into_iter().collect::<HashSet<_>>(), written);
    // Whatever the dropped timeouts had in flight went back: the queue is empty now.
    assert_eq!(
        client.queue("work").unwrap().try_dequeue().await.unwrap(),
        None
    );
}

#[tokio::test]
async fn priorities_come_out_non_decreasing_fifo_within() {
    let server = server();
    let client = client(&server, "q3").await;
    let q = client.priority_queue("alerts").unwrap();
    let items = [(5, "a"), (1, "b"), (5, "c"), (0, "d"), (1, "e"), (3, "f")];
    for (p, v) in items {
        q.enqueue_with_priority(v, p).await.unwrap();
    }
    let mut out = Vec::new();
    while let Some(v) = q.try_dequeue().await.unwrap() {
        out.push(v);
    }
    assert_eq!(out, ["d", "b", "e", "f", "a", "c"]);
}

#[tokio::test]
async fn a_blocked_dequeue_wakes_on_enqueue() {
    let server = server();
    let client = client(&server, "q4").await;
    let q = client.queue("wake").unwrap();
    let reader = {
        let q = q.clone();
        tokio::spawn(async move { (q.dequeue().await.unwrap(), Instant::now()) })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    q.enqueue("hello").await.unwrap();
    let (v, at) = tokio::time::timeout(secs(2), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "hello");
    println!("enqueue -> blocked dequeue returns after {:?}", at - t);
}

/// Everyone in a round crashed before anyone swept: the next round still opens.
#[tokio::test]
async fn a_double_barrier_whose_participants_all_died_opens_again() {
    let server = server();
    let client = client(&server, "b4").await;
    let ttl = Duration::from_secs(1);
    let opts = || leasehold::SessionOptions::new().ttl(ttl);
    let (a, b) = (
        client.session_with(opts()).await.unwrap(),
        client.session_with(opts()).await.unwrap(),
    );
    let (da, db) = (
        a.double_barrier("r", 2).unwrap(),
        b.double_barrier("r", 2).unwrap(),
    );
    let (x, y) = tokio::join!(da.enter(), db.enter());
    x.unwrap();
    y.unwrap();
    a.orphan();
    b.orphan();
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let c = client.session().await.unwrap();
    let d = client.session().await.unwrap();
    let (dc, dd) = (
        c.double_barrier("r", 2).unwrap(),
        d.double_barrier("r", 2).unwrap(),
    );
    let (x, y) = tokio::time::timeout(secs(3), async { tokio::join!(dc.enter(), dd.enter()) })
        .await
        .expect("a new round");
    x.unwrap();
    y.unwrap();
}

/// A dequeue dropped after its pop completed never loses the item.
#[tokio::test]
async fn a_dropped_dequeue_never_loses_an_item() {
    let server = server();
    let client = client(&server, "q5").await;
    let q = client.queue("keep").unwrap();
    for i in 0..50 {
        q.enqueue(&i.to_string()).await.unwrap();
        // Poll once, let the pop run, then drop the call.
        let mut call = Box::pin(q.try_dequeue());
        let _ = futures_util::poll!(call.as_mut());
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(call);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut left = Vec::new();
    while let Some(v) = q.try_dequeue().await.unwrap() {
        left.push(v.parse::<u32>().unwrap());
    }
    assert_eq!(
        left,
        (0..50).collect::<Vec<_>>(),
        "every item back, in order"
    );
}
