//! Lock calls of many tasks of one client share script calls under load (`src/redis/batch.rs`):
//! each call still gets its own reply or error, in the order the calls were made.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use leasehold::{Error, Session};
use support::*;

async fn sessions(client: &leasehold::Client, n: usize) -> Vec<Session> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(client.session().await.unwrap());
    }
    out
}

/// Session `i` locks mutex `m<i>`, all made at once from this task (so every call is made
/// in the first poll, before any reply).
async fn lock_each(sessions: &[Session]) -> Vec<leasehold::Result<leasehold::MutexGuard>> {
    join_all(
        sessions
            .iter()
            .enumerate()
            .map(|(i, s)| async move { s.mutex(&format!("m{i}")).unwrap().lock().await }),
    )
    .await
}

/// 64 locks and then 64 unlocks made at once from one task: a handful of script calls instead
/// of 128, every lock held with a token of its own, and nothing left behind.
#[tokio::test]
async fn concurrent_locks_of_one_client_share_script_calls() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "b1").await;
    let sessions = sessions(&client, 64).await;
    let _: String = cmd(&raw, "CONFIG", &["RESETSTAT"]).await.unwrap();
    // All 64 calls are made in the first poll of join_all: the first few go out on their own
    // (a client keeps 4 script calls in flight), the rest queue and go in batches of up to 32.
    let guards = lock_each(&sessions).await;
    let guards: Vec<_> = guards.into_iter().map(Result::unwrap).collect();
    let lock_calls = script_calls(&raw).await;
    assert!(lock_calls <= 8, "64 locks took {lock_calls} script calls");
    let mut tokens: Vec<u64> = guards.iter().map(|g| g.fencing_token()).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 64, "a token of its own for every lock");
    for (i, s) in sessions.iter().enumerate() {
        let queue: Vec<String> = cmd(&raw, "ZRANGE", &[&format!("{{b1}}:mutex:m{i}"), "0", "-1"])
            .await
            .unwrap();
        assert_eq!(queue.len(), 1, "m{i}: {queue:?}");
        assert!(
            queue[0].starts_with(&format!("{}.", s.lease())),
            "m{i}: {queue:?}"
        );
    }
    let unlocked = join_all(guards.into_iter().map(|g| g.unlock())).await;
    assert!(unlocked.iter().all(Result::is_ok), "{unlocked:?}");
    let unlock_calls = script_calls(&raw).await - lock_calls;
    assert!(
        unlock_calls <= 8,
        "64 unlocks took {unlock_calls} script calls"
    );
    assert!(keys(&raw, "{b1}:mutex:*").await.is_empty());
    for s in &sessions {
        let attached = format!("{{b1}}:attached:{}", s.lease());
        let n: u64 = cmd(&raw, "SCARD", &[&attached]).await.unwrap();
        assert_eq!(n, 0, "{attached}");
    }
}

/// The calls of one batch look each lease up once (`lease_memo` in lua/prelude/core.lua): 64 locks
/// of two sessions made at once cost at most one `ZSCORE` per session and script call, and each
/// session's calls still get its own answer: those of a session whose lease is gone from Redis fail with
/// `SessionLost`, the others hold.
#[tokio::test]
async fn a_batch_looks_up_each_lease_once() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "b6").await;
    let live = client.session().await.unwrap();
    let gone = client.session().await.unwrap();
    // The registry forgets `gone`'s lease; its session does not know yet.
    let _: u64 = cmd(&raw, "ZREM", &["{b6}:leases", &gone.lease().to_string()])
        .await
        .unwrap();
    let _: String = cmd(&raw, "CONFIG", &["RESETSTAT"]).await.unwrap();
    let results = join_all((0..64).map(|i| {
        let s = if i % 2 == 0 { &live } else { &gone };
        async move { s.mutex(&format!("m{i}")).unwrap().lock().await }
    }))
    .await;
    let calls = script_calls(&raw).await;
    let (lookups, _) = command_calls(&raw, "zscore").await;
    // 64 locks: 4 direct calls and 2 batches of at most 32. The lost session's waits are
    // withdrawn in the background, which may have run by now: as many calls again at most.
    assert!(calls <= 12, "64 locks took {calls} script calls");
    assert!(
        lookups <= 2 * calls,
        "{lookups} lease lookups for 64 locks of 2 sessions in {calls} script calls"
    );
    for (i, r) in results.iter().enumerate() {
        if i % 2 == 0 {
            assert!(r.is_ok(), "m{i} of the live session: {r:?}");
        } else {
            assert!(
                matches!(r, Err(Error::SessionLost { .. })),
                "m{i} of the session whose lease is gone: {r:?}"
            );
        }
    }
}

/// A call that meets foreign data fails alone, with the typed error naming the key, and writes
/// nothing; the calls batched with it, before and after, succeed.
#[tokio::test]
async fn one_calls_error_fails_only_that_call() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "b2").await;
    // Of 8 calls made at once, the first 4 go out on their own (a client keeps 4 in flight);
    // 4..8 go in one batch, and the one for m6 meets a string where its queue should be.
    let _: String = cmd(&raw, "SET", &["{b2}:mutex:m6", "not a queue"])
        .await
        .unwrap();
    let sessions = sessions(&client, 8).await;
    let _: String = cmd(&raw, "CONFIG", &["RESETSTAT"]).await.unwrap();
    let results = lock_each(&sessions).await;
    for (i, r) in results.iter().enumerate() {
        match (i, r) {
            (6, Err(Error::WrongType { key, found, .. })) => {
                assert_eq!(key, "{b2}:mutex:m6");
                assert_eq!(found, "string");
            }
            (6, other) => panic!("m6: {other:?}"),
            (_, r) => assert!(r.is_ok(), "m{i}: {r:?}"),
        }
    }
    let calls = script_calls(&raw).await;
    // 4 calls on their own and one batch (a session's renewal could add one).
    assert!(calls <= 6, "{calls} script calls");
    let value: String = cmd(&raw, "GET", &["{b2}:mutex:m6"]).await.unwrap();
    assert_eq!(value, "not a queue");
    let attached = format!("{{b2}}:attached:{}", sessions[6].lease());
    let n: u64 = cmd(&raw, "SCARD", &[&attached]).await.unwrap();
    assert_eq!(n, 0, "the failed call attached nothing");
    // In one batch the revision moves on by one per call that queued: m4, m5 and m7 got
    // consecutive tokens, so the failed call took none.
    let token = |i: usize| results[i].as_ref().unwrap().fencing_token();
    assert_eq!(
        [token(5) - token(4), token(7) - token(5)],
        [1, 1],
        "{:?}",
        [token(4), token(5), token(7)]
    );
}

/// Contenders for one mutex whose first calls go out in one batch queue in call order, hold one
/// at a time, and are handed the lock in queue order.
#[tokio::test]
async fn contenders_batched_together_queue_in_order() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "b3").await;
    let sessions = sessions(&client, 12).await;
    let _: String = cmd(&raw, "CONFIG", &["RESETSTAT"]).await.unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let runs = sessions.iter().enumerate().map(|(i, s)| {
        let (inside, order) = (inside.clone(), order.clone());
        async move {
            let guard = s.mutex("one").unwrap().lock().await.unwrap();
            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
            order.lock().unwrap().push((i, guard.fencing_token()));
            tokio::time::sleep(Duration::from_millis(5)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            guard.unlock().await.unwrap();
        }
    });
    tokio::time::timeout(Duration::from_secs(20), join_all(runs))
        .await
        .expect("every contender got the lock");
    let order = order.lock().unwrap().clone();
    let (callers, tokens): (Vec<usize>, Vec<u64>) = order.into_iter().unzip();
    // FIFO: the lock went in the order of the queue (its revisions).
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    // The first 4 calls went out on their own, on 4 connections, in no set order; the other
    // 8 went in one batch, in call order.
    let batched: Vec<usize> = callers.iter().copied().filter(|&i| i >= 4).collect();
    assert_eq!(batched, (4..12).collect::<Vec<_>>(), "{callers:?}");
    // 12 first calls went together: fewer script calls than a lock, an unlock (with its
    // handoff) and nothing else per contender.
    let calls = script_calls(&raw).await;
    assert!(calls < 24, "{calls} script calls");
}

/// Waits dropped after their calls went out in a batch are withdrawn: only the holder stays.
#[tokio::test]
async fn dropped_batched_waits_are_withdrawn() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "b4").await;
    let holder_session = client.session().await.unwrap();
    let holder = holder_session.mutex("h").unwrap().lock().await.unwrap();
    let sessions = sessions(&client, 16).await;
    let waits = join_all(
        sessions
            .iter()
            .map(|s| async move { s.mutex("h").unwrap().lock().await }),
    );
    // Long enough for the calls to be queued behind the holder, then dropped.
    let waited = tokio::time::timeout(Duration::from_millis(300), waits).await;
    assert!(waited.is_err(), "nobody can get a held lock");
    assert!(
        eventually(Duration::from_secs(5), || async {
            zcard(&raw, "{b4}:mutex:h").await == 1
        })
        .await,
        "withdrawn"
    );
    let queue: Vec<String> = cmd(&raw, "ZRANGE", &["{b4}:mutex:h", "0", "-1"])
        .await
        .unwrap();
    assert_eq!(queue.len(), 1);
    assert!(queue[0].starts_with(&format!("{}.", holder_session.lease())));
    holder.unlock().await.unwrap();
}

/// Many tasks of one client cycle on eight mutexes while Redis loses its scripts and stalls,
/// and the client's connections are cut and slowed: calls go in batches, and still no two
/// tasks ever hold one mutex at once, every holder's token is greater than the one before it on
/// that mutex, every task gets its turns, and the only errors are transient ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_calls_keep_mutual_exclusion_through_faults() {
    const TASKS: usize = 32;
    const MUTEXES: usize = 8;
    let server = server();
    let raw = raw(&server).await;
    let proxy = leasehold_testing::Proxy::start(server.port())
        .await
        .unwrap();
    let client = client_at(&proxy.url(), "b5").await;
    let sessions = sessions(&client, TASKS).await;
    let _: String = cmd(&raw, "CONFIG", &["RESETSTAT"]).await.unwrap();
    let inside: Arc<Vec<AtomicUsize>> =
        Arc::new((0..MUTEXES).map(|_| AtomicUsize::new(0)).collect());
    let last: Arc<Vec<std::sync::Mutex<u64>>> =
        Arc::new((0..MUTEXES).map(|_| std::sync::Mutex::new(0)).collect());
    let ops = Arc::new(AtomicUsize::new(0));
    let transient = Arc::new(AtomicUsize::new(0));
    let stop = std::time::Instant::now() + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for (i, s) in sessions.iter().cloned().enumerate() {
        let (inside, last, ops, transient) =
            (inside.clone(), last.clone(), ops.clone(), transient.clone());
        tasks.push(tokio::spawn(async move {
            let k = i % MUTEXES;
            let mutex = s.mutex(&format!("m{k}")).unwrap();
            let mut turns = 0;
            let failed = |e: Error| {
                assert!(e.is_transient(), "m{k}: {e}");
                transient.fetch_add(1, Ordering::SeqCst);
            };
            while std::time::Instant::now() < stop {
                let guard = match mutex.lock().await {
                    Ok(guard) => guard,
                    Err(e) => {
                        failed(e);
                        continue;
                    }
                };
                assert_eq!(
                    inside[k].fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders of m{k}"
                );
                {
                    let mut last = last[k].lock().unwrap();
                    assert!(guard.fencing_token() > *last, "token went back on m{k}");
                    *last = guard.fencing_token();
                }
                tokio::task::yield_now().await;
                inside[k].fetch_sub(1, Ordering::SeqCst);
                // A failed unlock is retried in the background; the next holder waits for it.
                if let Err(e) = guard.unlock().await {
                    failed(e);
                }
                ops.fetch_add(2, Ordering::SeqCst);
                turns += 1;
            }
            turns
        }));
    }
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    pause(800).await;
    flush_scripts(&raw).await;
    pause(500).await;
    server.pause().unwrap();
    pause(300).await;
    server.resume().unwrap();
    pause(500).await;
    proxy.cut();
    pause(500).await;
    proxy.delay(Duration::from_millis(3));
    pause(500).await;
    proxy.heal();
    for t in tasks {
        let turns = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("task finished")
            .unwrap();
        assert!(turns > 0, "a task never got the lock");
    }
    assert!(sessions.iter().all(|s| s.is_valid()), "no session was lost");
    let calls = script_calls(&raw).await;
    let ops = ops.load(Ordering::SeqCst) as u64;
    assert!(
        calls * 4 < ops * 3,
        "{ops} lock/unlock calls in {calls} script calls: few batches formed"
    );
    eprintln!(
        "{ops} lock/unlock calls in {calls} script calls, {} transient errors",
        transient.load(Ordering::SeqCst)
    );
}
