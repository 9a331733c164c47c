//! RwLock and Semaphore against a real redis-server.

mod support;

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leasehold::{Error, RwMode, SessionOptions};
use support::*;

/// Random readers and writers: a writer never overlaps anyone, readers do overlap, and
/// requests are served FIFO (a reader never overtakes an earlier writer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_exclude_everyone_readers_share_fifo_kept() {
    let server = server();
    let client = client(&server, "rw1").await;
    let sessions = [
        client.session().await.unwrap(),
        client.session().await.unwrap(),
        client.session().await.unwrap(),
    ];
    // state: -1 = a writer inside, n > 0 = n readers inside
    let state = Arc::new(AtomicI64::new(0));
    let max_readers = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // A fixed pseudo-random pattern of 24 requests, 1 in 3 a writer.
    for i in 0..24u64 {
        let writer = (i * 7 + 3) % 3 == 0;
        let lock = sessions[(i % 3) as usize].rwlock("data").unwrap();
        let (state, max_readers, log) = (state.clone(), max_readers.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 3)).await;
            let g = if writer {
                lock.write().await.unwrap()
            } else {
                lock.read().await.unwrap()
            };
            let token = g.fencing_token();
            if writer {
                assert_eq!(state.swap(-1, Ordering::SeqCst), 0, "writer overlapped");
            } else {
                let before = state.fetch_add(1, Ordering::SeqCst);
                assert!(before >= 0, "reader overlapped a writer");
                max_readers.fetch_max((before + 1) as usize, Ordering::SeqCst);
            }
            log.lock().unwrap().push((token, writer, "in"));
            tokio::time::sleep(Duration::from_millis(if writer { 8 } else { 15 })).await;
            log.lock().unwrap().push((token, writer, "out"));
            if writer {
                state.store(0, Ordering::SeqCst);
            } else {
                state.fetch_sub(1, Ordering::SeqCst);
            }
            g.unlock().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        max_readers.load(Ordering::SeqCst) >= 2,
        "readers never overlapped"
    );
    // FIFO: a request enters only after every earlier (lower token) writer has left, and a
    // writer enters only after every earlier request has left.
    let log = log.lock().unwrap().clone();
    let left_at = |tok: u64| log.iter().position(|e| e.0 == tok && e.2 == "out").unwrap();
    for (pos, &(tok, writer, what)) in log.iter().enumerate() {
        if what != "in" {
            continue;
        }
        for &(other, other_writer, w2) in &log {
            if w2 == "in" && other < tok && (writer || other_writer) {
                assert!(
                    left_at(other) < pos,
                    "{tok} entered before earlier {other} left"
                );
            }
        }
    }
}

#[tokio::test]
async fn try_forms_and_a_dead_holder_releases() {
    let server = server();
    let client = client(&server, "rw2").await;
    let ttl = Duration::from_secs(2);
    let dying = client
        .session_with(SessionOptions::new().ttl(ttl))
        .await
        .unwrap();
    let other = client.session().await.unwrap();
    let w = dying.rwlock("r").unwrap().write().await.unwrap();
    assert_eq!(w.mode(), RwMode::Write);
    let lock = other.rwlock("r").unwrap();
    assert!(matches!(
        lock.try_read().await,
        Err(Error::Locked { kind: "rwlock", .. })
    ));
    assert!(matches!(lock.try_write().await, Err(Error::Locked { .. })));
    dying.orphan();
    let r = tokio::time::timeout(ttl * 2, lock.read())
        .await
        .expect("released")
        .unwrap();
    let r2 = lock.try_read().await.expect("readers share");
    assert!(r2.fencing_token() > r.fencing_token());
    assert!(matches!(lock.try_write().await, Err(Error::Locked { .. })));
    drop(w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_of_three_never_has_more_than_three_holders() {
    let server = server();
    let client = client(&server, "sem1").await;
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let session = client.session().await.unwrap();
        let (inside, peak) = (inside.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            let sem = session.semaphore("pool", 3).unwrap();
            for _ in 0..3 {
                let p = sem.acquire().await.unwrap();
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(now <= 3, "{now} holders");
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                p.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("all finish")
            .unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    let raw = raw(&server).await;
    assert!(
        keys(&raw, "{sem1}:semaphore*").await.is_empty(),
        "nothing left behind"
    );
}

#[tokio::test]
async fn an_orphaned_holders_permit_returns_within_ttl_plus_a_renewal_interval() {
    let server = server();
    let client = client(&server, "sem2").await;
    let ttl = Duration::from_secs(2);
    let crashed = client
        .session_with(SessionOptions::new().ttl(ttl))
        .await
        .unwrap();
    let _held = crashed.semaphore("s", 1).unwrap().acquire().await.unwrap();
    let other = client.session().await.unwrap();
    let sem = other.semaphore("s", 1).unwrap();
    assert!(matches!(sem.try_acquire().await, Err(Error::Locked { .. })));
    let t = std::time::Instant::now();
    crashed.orphan();
    let p = tokio::time::timeout(ttl * 2, sem.acquire())
        .await
        .expect("permit returned")
        .unwrap();
    println!("orphaned holder -> permit back after {:?}", t.elapsed());
    assert!(t.elapsed() <= ttl + ttl / 3 + Duration::from_millis(500));
    assert_eq!(p.permits(), 1);
}

#[tokio::test]
async fn semaphore_size_is_checked_and_many_permits_are_all_or_nothing() {
    let server = server();
    let client = client(&server, "sem3").await;
    let a = client.session().await.unwrap();
    let b = client.session().await.unwrap();
    let sa = a.semaphore("s", 3).unwrap();
    let two = sa.acquire_many(2).await.unwrap();
    let err = b.semaphore("s", 5).unwrap().acquire().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::SemaphoreSize {
                size: 5,
                existing: 3,
                ..
            }
        ),
        "{err}"
    );
    let sb = b.semaphore("s", 3).unwrap();
    assert!(matches!(
        sb.try_acquire_many(2).await,
        Err(Error::Locked { .. })
    ));
    let one = sb.try_acquire().await.unwrap();
    // FIFO: a waiting request for 2 blocks a later request for 1.
    let big = tokio::spawn({
        let sb = sb.clone();
        async move { sb.acquire_many(2).await.map(|p| p.permits()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(sa.try_acquire().await, Err(Error::Locked { .. })));
    two.release().await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), big)
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        2
    );
    drop(one);
    assert!(matches!(
        sa.acquire_many(4).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        a.semaphore("s", 0),
        Err(Error::InvalidArgument(_))
    ));
}

/// More waiters than one call admits: every one of them is admitted, the first batch by the
/// release and the rest by the re-checks it rings, without a timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_admits_every_waiting_reader_however_many() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "rw_many").await;
    let session = client.session().await.unwrap();
    let lock = session.rwlock("data").unwrap();
    let writer = lock.write().await.unwrap();
    let readers: Vec<_> = (0..300)
        .map(|_| {
            let lock = lock.clone();
            tokio::spawn(async move { lock.read().await })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || async {
            zcard(&raw, "{rw_many}:rwlock:data").await == 301
        })
        .await
    );
    writer.unlock().await.unwrap();
    let mut guards = Vec::new();
    for r in readers {
        let g = tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .expect("every reader admitted")
            .unwrap()
            .unwrap();
        guards.push(g);
    }
    assert_eq!(zcard(&raw, "{rw_many}:rwlock-holders:data").await, 300);
    // A writer behind them waits for the last of them.
    let w = lock.try_write().await;
    assert!(matches!(w, Err(Error::Locked { .. })), "{w:?}");
    for g in guards {
        g.unlock().await.unwrap();
    }
    assert!(!exists(&raw, "{rw_many}:rwlock-holders:data").await);
    lock.try_write().await.unwrap().unlock().await.unwrap();
}

/// The holders zset deleted behind leasehold's back (a foreign DEL): the next call admits the
/// queue's front again, and the owners are who they were.
#[tokio::test]
async fn a_deleted_holders_set_is_rebuilt_from_the_queue() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "rw_heal").await;
    let session = client.session().await.unwrap();
    let sem = session.semaphore("pool", 3).unwrap();
    let a = sem.acquire_many(2).await.unwrap();
    let _: i64 = cmd(&raw, "DEL", &["{rw_heal}:semaphore-holders:pool"])
        .await
        .unwrap();
    assert!(
        !a.is_owner().await.unwrap(),
        "not an owner by the server's view"
    );
    // The next request re-admits the front (2 permits), then itself if it fits (1 more).
    let b = sem.try_acquire().await.unwrap();
    assert!(a.is_owner().await.unwrap());
    assert!(matches!(sem.try_acquire().await, Err(Error::Locked { .. })));
    drop(b);
    a.release().await.unwrap();
}

#[tokio::test]
async fn available_permits_counts_what_the_holders_hold() {
    let server = server();
    let client = client(&server, "sem_avail").await;
    let session = client.session().await.unwrap();
    let sem = session.semaphore("pool", 5).unwrap();
    assert_eq!(sem.available_permits().await.unwrap(), 5, "nobody holds");
    let a = sem.acquire_many(2).await.unwrap();
    let b = sem.acquire().await.unwrap();
    assert_eq!(sem.available_permits().await.unwrap(), 2);
    // A waiting request takes nothing until admitted.
    let big = tokio::spawn({
        let sem = sem.clone();
        async move { sem.acquire_many(4).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sem.available_permits().await.unwrap(), 2);
    a.release().await.unwrap();
    let big = tokio::time::timeout(Duration::from_secs(2), big)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(sem.available_permits().await.unwrap(), 0);
    big.release().await.unwrap();
    b.release().await.unwrap();
    assert_eq!(sem.available_permits().await.unwrap(), 5);
}
