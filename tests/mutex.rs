//! Mutex semantics against a real redis-server: FIFO, fencing, cancel safety, lease loss.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::{Error, SessionEnd, SessionOptions};
use support::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Five contenders queue one after another behind a holder; they must get the lock one at a
/// time, in the order they queued, with strictly increasing fencing tokens.
async fn fifo_case(ns: &str, share_session: bool) {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, ns).await;
    let key = format!("{{{ns}}}:mutex:job");
    let shared = client.session().await.unwrap();
    let holder = shared.mutex("job").unwrap().lock().await.unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5u64 {
        let session = if share_session {
            shared.clone()
        } else {
            client.session().await.unwrap()
        };
        let (inside, order) = (inside.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let guard = session.mutex("job").unwrap().lock().await.unwrap();
            assert_eq!(
                inside.fetch_add(1, Ordering::SeqCst),
                0,
                "two holders at once"
            );
            order.lock().unwrap().push((i, guard.fencing_token()));
            tokio::time::sleep(ms(20)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            guard.unlock().await.unwrap();
        }));
        // Wait until this contender is queued, so the queue order is known.
        let want = i + 2;
        assert!(
            eventually(Duration::from_secs(2), || async {
                zcard(&raw, &key).await == want
            })
            .await
        );
    }
    let first_token = holder.fencing_token();
    holder.unlock().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    let mut last = first_token;
    for (_, token) in order {
        assert!(token > last, "tokens must rise: {token} after {last}");
        last = token;
    }
    assert_eq!(zcard(&raw, &key).await, 0);
}

#[tokio::test]
async fn five_contenders_fifo_with_rising_tokens() {
    fifo_case("m1", false).await;
}

#[tokio::test]
async fn five_tasks_sharing_one_session_exclude_each_other() {
    fifo_case("m2", true).await;
}

#[tokio::test]
async fn concurrent_try_locks_exactly_one_wins() {
    let server = server();
    let client = client(&server, "m3").await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(client.session().await.unwrap());
    }
    let results = futures_join(sessions.iter().map(|s| {
        let m = s.mutex("only").unwrap();
        async move { m.try_lock().await }
    }))
    .await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1);
    for r in &results {
        if let Err(e) = r {
            assert!(matches!(e, Error::Locked { .. }), "{e}");
            assert!(e.to_string().contains("\"only\""), "{e}");
        }
    }
    // Losers left nothing queued.
    let raw = raw(&server).await;
    assert_eq!(zcard(&raw, "{m3}:mutex:only").await, 1);
}

async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn blocked_waiter_acquires_soon_after_unlock_with_a_greater_token() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "m4").await;
    let a = client.session().await.unwrap();
    let b = client.session().await.unwrap();
    let mut samples = Vec::new();
    for round in 0..20 {
        let name = format!("h{round}");
        let held = a.mutex(&name).unwrap().lock().await.unwrap();
        let m = b.mutex(&name).unwrap();
        let waiter = tokio::spawn(async move {
            let g = m.lock().await.unwrap();
            (Instant::now(), g.fencing_token())
        });
        let key = format!("{{m4}}:mutex:{name}");
        assert!(
            eventually(Duration::from_secs(2), || async {
                zcard(&raw, &key).await == 2
            })
            .await
        );
        let token = held.fencing_token();
        let released = Instant::now();
        held.unlock().await.unwrap();
        let (acquired, next) = waiter.await.unwrap();
        assert!(next > token);
        samples.push(acquired - released);
    }
    samples.sort();
    println!(
        "handoff (unlock called -> waiter holds), 20 rounds: p50 {:?}, max {:?}",
        samples[10], samples[19]
    );
    // Woken by the doorbell, not by a timeout (the holder's lease had 60 s left).
    assert!(samples[19] < Duration::from_secs(5));
}

#[tokio::test]
async fn orphaned_holder_hands_over_within_ttl_plus_a_renewal_interval() {
    let server = server();
    let client = client(&server, "m5").await;
    let ttl = Duration::from_secs(2);
    let holder = client
        .session_with(SessionOptions::new().ttl(ttl))
        .await
        .unwrap();
    let guard = holder.mutex("x").unwrap().lock().await.unwrap();
    let waiter = client.session().await.unwrap();
    let m = waiter.mutex("x").unwrap();
    let wait =
        tokio::spawn(async move { m.lock().await.map(|g| (Instant::now(), g.fencing_token())) });
    tokio::time::sleep(ms(100)).await;
    let orphaned = Instant::now();
    holder.orphan(); // as if the holder's process froze
    assert!(!guard.is_valid());
    let (acquired, token) = wait.await.unwrap().unwrap();
    let took = acquired - orphaned;
    println!("orphaned holder -> next holder after {took:?} (TTL {ttl:?})");
    assert!(took <= ttl + ttl / 3 + ms(500), "{took:?}");
    assert!(token > guard.fencing_token());
    // The old guard's release is refused and leaves the new holder alone.
    let err = guard.unlock().await.unwrap_err();
    assert!(matches!(err, Error::NotHeld { .. }), "{err}");
}

#[tokio::test]
async fn waiter_whose_session_is_revoked_gets_session_lost_and_blocks_nobody() {
    let server = server();
    let client = client(&server, "m6").await;
    let raw = raw(&server).await;
    let holder = client.session().await.unwrap();
    let guard = holder.mutex("q").unwrap().lock().await.unwrap();
    let doomed = client.session().await.unwrap();
    let next = client.session().await.unwrap();
    let (m1, m2) = (doomed.mutex("q").unwrap(), next.mutex("q").unwrap());
    let w1 = spawn_lock(m1);
    assert!(
        eventually(Duration::from_secs(2), || async {
            zcard(&raw, "{m6}:mutex:q").await == 2
        })
        .await
    );
    let w2 = spawn_lock(m2);
    assert!(
        eventually(Duration::from_secs(2), || async {
            zcard(&raw, "{m6}:mutex:q").await == 3
        })
        .await
    );

    client.revoke(doomed.lease()).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(2), w1)
        .await
        .expect("lock() returns at once")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SessionLost {
                reason: SessionEnd::Revoked,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(zcard(&raw, "{m6}:mutex:q").await, 2, "its entry is gone");
    let t = guard.fencing_token();
    guard.unlock().await.unwrap();
    let token = tokio::time::timeout(Duration::from_secs(2), w2)
        .await
        .expect("next waiter not blocked")
        .unwrap()
        .unwrap();
    assert!(token > t);
}

#[tokio::test]
async fn waiter_whose_session_expires_stops_waiting() {
    let server = server();
    let client = client(&server, "m7").await;
    let holder = client.session().await.unwrap();
    let _guard = holder.mutex("q").unwrap().lock().await.unwrap();
    let waiter = client
        .session_with(SessionOptions::new().ttl(Duration::from_secs(2)))
        .await
        .unwrap();
    let m = waiter.mutex("q").unwrap();
    let w = spawn_lock(m);
    tokio::time::sleep(ms(200)).await;
    waiter.orphan();
    let err = tokio::time::timeout(Duration::from_secs(1), w)
        .await
        .expect("returns at once")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SessionLost {
                reason: SessionEnd::Orphaned,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn dropping_a_pending_lock_future_removes_its_entry() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "m8").await;
    let session = client.session().await.unwrap();
    let guard = session.mutex("d").unwrap().lock().await.unwrap();
    let m = session.mutex("d").unwrap();
    let r = tokio::time::timeout(ms(300), m.lock()).await;
    assert!(r.is_err(), "still waiting when dropped");
    assert!(
        eventually(Duration::from_secs(2), || async {
            zcard(&raw, "{m8}:mutex:d").await == 1
        })
        .await,
        "only the holder's entry is left"
    );
    let info = client
        .time_to_live_with_keys(session.lease())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.attached_count, 1, "{:?}", info.attached);
    drop(guard);
    assert!(
        eventually(Duration::from_secs(2), || async {
            zcard(&raw, "{m8}:mutex:d").await == 0
        })
        .await
    );
    let info = client.time_to_live(session.lease()).await.unwrap().unwrap();
    assert_eq!(info.attached_count, 0);
}

#[tokio::test]
async fn dropping_a_guard_hands_over() {
    let server = server();
    let client = client(&server, "m9").await;
    let a = client.session().await.unwrap();
    let b = client.session().await.unwrap();
    let g = a.mutex("d").unwrap().lock().await.unwrap();
    let m = b.mutex("d").unwrap();
    let w = spawn_lock(m);
    tokio::time::sleep(ms(100)).await;
    let t = g.fencing_token();
    drop(g);
    let next = tokio::time::timeout(Duration::from_secs(2), w)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(next > t);
}

#[tokio::test]
async fn is_owner_asks_the_server() {
    let server = server();
    let client = client(&server, "m10").await;
    let s = client.session().await.unwrap();
    let g = s.mutex("o").unwrap().lock().await.unwrap();
    assert!(g.is_owner().await.unwrap());
    assert_eq!(g.key(), "{m10}:mutex:o");
    client.revoke(s.lease()).await.unwrap();
    assert!(!g.is_owner().await.unwrap());
    assert!(eventually(Duration::from_secs(1), || async { !g.is_valid() }).await);
}

/// A retried release (same contender, same revision) is harmless, and a release can never
/// remove a newer holder's entry: checked at the script level, where the types of the Rust API
/// (unlock consumes the guard) do not stop us.
#[tokio::test]
async fn repeated_release_reports_not_held_and_spares_the_new_holder() {
    // The mutex's own lean script, and the one every lock kind shares.
    repeated_release("mutex_release", "m11").await;
    repeated_release("lock_release", "m11b").await;
}

async fn repeated_release(script: &str, ns: &str) {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, ns).await;
    let a = client.session().await.unwrap();
    let ga = a.mutex("r").unwrap().lock().await.unwrap();
    let entries: Vec<(String, f64)> = cmd(
        &raw,
        "ZRANGE",
        &[&format!("{{{ns}}}:mutex:r"), "0", "-1", "WITHSCORES"],
    )
    .await
    .unwrap();
    let (contender, _) = entries[0].clone();
    let release = |rev: u64| {
        let lease = a.lease().to_string();
        let contender = contender.clone();
        let raw = raw.clone();
        async move {
            let v = eval_script(
                &raw,
                script,
                vec![
                    format!("{{{ns}}}:rev"),
                    format!("{{{ns}}}:leases"),
                    format!("{{{ns}}}:mutex:r"),
                    format!("{{{ns}}}:attached:{lease}"),
                ],
                vec![lease, contender, rev.to_string()],
            )
            .await
            .unwrap();
            v.as_i64().unwrap()
        }
    };
    let token = ga.fencing_token();
    assert_eq!(release(token + 1).await, 0, "wrong revision: not touched");
    assert_eq!(zcard(&raw, &format!("{{{ns}}}:mutex:r")).await, 1);
    assert_eq!(release(token).await, 1, "first release");
    assert_eq!(release(token).await, 0, "retried release: not held");
    let b = client.session().await.unwrap();
    let gb = b.mutex("r").unwrap().lock().await.unwrap();
    assert_eq!(release(token).await, 0, "late release");
    assert!(gb.is_owner().await.unwrap(), "new holder untouched");
    // The stale guard's own unlock says the same.
    assert!(matches!(ga.unlock().await, Err(Error::NotHeld { .. })));
    assert!(gb.is_owner().await.unwrap());
}

#[tokio::test]
async fn bad_names_are_rejected_before_io() {
    let server = server();
    let client = client(&server, "m12").await;
    let s = client.session().await.unwrap();
    assert!(matches!(s.mutex(""), Err(Error::InvalidName { .. })));
    let long = "x".repeat(leasehold::MAX_NAME_LEN + 1);
    let err = s.mutex(&long).unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }));
    assert!(err.to_string().contains("m12"));
    // Any UTF-8, including separators and braces, is a fine name.
    let g = s.mutex("a:b {c} ünï").unwrap().lock().await.unwrap();
    assert_eq!(g.key(), "{m12}:mutex:a:b {c} ünï");
}

/// An expired lease's queue entries are swept by any live client's renewals, without anyone
/// touching the lock, and whoever waited behind it is woken.
#[tokio::test]
async fn expired_holder_is_swept_by_another_sessions_renewal() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "m13").await;
    let ttl = Duration::from_secs(1);
    let gone = client
        .session_with(SessionOptions::new().ttl(ttl))
        .await
        .unwrap();
    let _stale = gone.mutex("s").unwrap().lock().await.unwrap();
    let _alive = client
        .session_with(SessionOptions::new().ttl(ttl))
        .await
        .unwrap();
    gone.orphan();
    assert_eq!(zcard(&raw, "{m13}:mutex:s").await, 1);
    // Expiry (1 s) plus one renewal interval of the live session (333 ms), with slack.
    assert!(
        eventually(Duration::from_secs(3), || async {
            keys(&raw, "{m13}:mutex:*").await.is_empty()
        })
        .await,
        "queue entry swept"
    );
    assert!(keys(&raw, &format!("{{m13}}:attached:{}", gone.lease()))
        .await
        .is_empty());
    assert_eq!(client.leases().await.unwrap().len(), 1);
}

/// Redis lost the lease (restart, flush): the next lock() ends the session on the spot.
#[tokio::test]
async fn lock_on_a_lease_redis_lost_ends_the_session() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "m14").await;
    let s = client.session().await.unwrap();
    let _: () = cmd(&raw, "FLUSHALL", &[]).await.unwrap();
    let err = s.mutex("x").unwrap().lock().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::SessionLost {
                reason: SessionEnd::LeaseNotFound,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        s.state(),
        leasehold::SessionState::Ended(SessionEnd::LeaseNotFound)
    );
}

/// Cancelled waits whose withdrawal overtakes their own request (on another connection) must
/// not leave an entry behind that nobody will ever release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waits_never_leave_orphan_entries() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "m15").await;
    let holder = client.session().await.unwrap();
    let guard = holder.mutex("t").unwrap().lock().await.unwrap();
    let waiter = client.session().await.unwrap();
    let m = waiter.mutex("t").unwrap();
    for i in 0..300u64 {
        if i % 2 == 0 {
            // Polled once, then dropped: the request is on its way when the withdrawal starts.
            let _ = futures_util::FutureExt::now_or_never(m.lock());
        } else {
            let _ =
                tokio::time::timeout(Duration::from_micros(20 + (i * 37) % 400), m.lock()).await;
        }
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            zcard(&raw, "{m15}:mutex:t").await == 1
        })
        .await,
        "only the holder's entry is left: {}",
        zcard(&raw, "{m15}:mutex:t").await
    );
    guard.unlock().await.unwrap();
    let third = client.session().await.unwrap();
    let _g = tokio::time::timeout(Duration::from_secs(2), third.mutex("t").unwrap().lock())
        .await
        .expect("nobody blocks the lock")
        .unwrap();
}

/// A new process that resumes the lease of a crashed one gets the locks back: the dead
/// process's entries are released, not left blocking the new lock() calls forever.
#[tokio::test]
async fn resuming_a_lease_releases_its_stale_lock_entries() {
    let server = server();
    let old = client(&server, "m16").await;
    let s = old
        .session_with(SessionOptions::new().on_drop(leasehold::OnDrop::Orphan))
        .await
        .unwrap();
    let lease = s.lease();
    let g = s.mutex("x").unwrap().lock().await.unwrap();
    std::mem::forget(g); // the process "crashed" holding it
    drop(s);
    let new = client(&server, "m16").await;
    let resumed = new
        .session_with(SessionOptions::new().lease(lease))
        .await
        .unwrap();
    let _g = tokio::time::timeout(Duration::from_secs(2), resumed.mutex("x").unwrap().lock())
        .await
        .expect("not blocked by the dead process's entry")
        .unwrap();
}

/// A handoff takes one script call: the release tells the waiter's client `o <contender>` (it
/// owns now), and the waiter takes the lock without asking again. A waiter whose lease hash
/// does not name its client under `owner_rings` (a lease granted by a leasehold from before
/// `o` rings, which would ignore them) gets the plain `c <contender>` and re-checks.
#[tokio::test]
async fn a_handoff_costs_one_script_call_and_older_clients_get_the_ring_they_take() {
    use fred::prelude::EventInterface;

    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "m20").await;
    let listener = support::raw(&server).await;
    let mut messages = listener.message_rx();
    subscribe_doorbell(&listener, format!("{{m20}}:wake:{}", client.id())).await;
    let evalsha_calls = || script_calls(&raw);
    // The lease hash fields a client names itself in: today's clients both; an older client
    // only owner_rings (it takes `o <contender>`, which today's clients only re-check); the
    // oldest neither (plain `c` rings).
    for older_fields in [
        &[][..],
        &["fenced_rings"][..],
        &["fenced_rings", "owner_rings"][..],
    ] {
        let (a, b) = (
            client.session().await.unwrap(),
            client.session().await.unwrap(),
        );
        let holder = a.mutex("h").unwrap().lock().await.unwrap();
        let mutex = b.mutex("h").unwrap();
        let waiter = tokio::spawn(async move { mutex.lock().await });
        assert!(
            eventually(ms(5000), || async {
                zcard(&raw, "{m20}:mutex:h").await == 2
            })
            .await
        );
        let queued: Vec<(String, u64)> =
            cmd(&raw, "ZRANGE", &["{m20}:mutex:h", "1", "1", "WITHSCORES"])
                .await
                .unwrap();
        let (contender, revision) = queued[0].clone();
        let lease_key = format!("{{m20}}:lease:{}", b.lease());
        for field in older_fields {
            let _: i64 = cmd(&raw, "HDEL", &[&lease_key, field]).await.unwrap();
        }
        let before = evalsha_calls().await;
        holder.unlock().await.unwrap();
        let guard = tokio::time::timeout(ms(5000), waiter)
            .await
            .expect("handed over")
            .unwrap()
            .unwrap();
        let calls = evalsha_calls().await - before;
        assert_eq!(
            guard.fencing_token(),
            revision,
            "its own revision is its token"
        );
        let ring = tokio::time::timeout(ms(2000), messages.recv())
            .await
            .expect("the release rang")
            .unwrap();
        let (want_ring, want_calls) = match older_fields.len() {
            0 => (format!("o {contender} {revision}"), 1),
            1 => (format!("o {contender}"), 2),
            _ => (format!("c {contender}"), 2),
        };
        assert_eq!(ring.value.as_str().unwrap(), want_ring.as_str());
        assert_eq!(
            calls, want_calls,
            "release, plus the re-check of an older client"
        );
        assert!(guard.is_owner().await.unwrap());
        guard.unlock().await.unwrap();
        assert_eq!(zcard(&raw, "{m20}:mutex:h").await, 0);
    }
}

/// An unlock whose connection is cut after Redis ran it but before the reply came back is not
/// sent again (a second run would answer "not held" for the lock it had just released): the
/// caller gets a transient error, and the lock is free.
#[tokio::test]
async fn a_call_cut_off_in_flight_is_not_sent_twice() {
    let server = server();
    let raw = raw(&server).await;
    let proxy = leasehold_testing::Proxy::start(server.port())
        .await
        .unwrap();
    let client = client_at(&proxy.url(), "m21").await;
    assert_an_unlock_cut_in_flight_is_not_sent_twice(&client, &raw, &proxy).await;
}

/// A doorbell message that names a waiter but not its entry's revision (stray, stale, sent by
/// an older script, or forged by someone who can publish on the namespace's channels) does not
/// make it an owner: it only asks Redis again, and keeps waiting.
#[tokio::test]
async fn a_stray_or_forged_owner_ring_does_not_hand_over_the_lock() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "forge").await;
    let a = client.session().await.unwrap();
    let b = client.session().await.unwrap();
    let guard = a.mutex("m").unwrap().lock().await.unwrap();
    let waiter = spawn_lock(b.mutex("m").unwrap());
    let queue = || client.inspect(leasehold::QueueKind::Mutex, "m");
    assert!(
        eventually(Duration::from_secs(5), || async {
            queue().await.unwrap().len() == 2
        })
        .await
    );
    let waiting = queue().await.unwrap().remove(1);
    assert!(!waiting.holder);
    let channel = format!("{{forge}}:wake:{}", client.id());
    let c = &waiting.contender;
    for msg in [
        format!("o {c}"),
        format!("o {c} {}", waiting.fencing_token + 1),
        format!("o {c} {}", guard.fencing_token()),
        format!("o {c} not-a-revision"),
        format!("c {c}"),
        "o".to_owned(),
        "garbage".to_owned(),
    ] {
        publish_doorbell(&raw, &channel, &msg).await;
    }
    tokio::time::sleep(ms(300)).await;
    assert!(!waiter.is_finished(), "a forged ring handed the lock over");
    assert!(guard.is_owner().await.unwrap());
    let held = guard.fencing_token();
    guard.unlock().await.unwrap();
    let token = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the real handoff still comes")
        .unwrap()
        .unwrap();
    assert_eq!(token, waiting.fencing_token);
    assert!(token > held);
}

/// Not re-entrant: locking a mutex the task already holds waits behind its own guard (as
/// tokio's Mutex), and gets the lock once that guard goes.
#[tokio::test]
async fn locking_a_held_mutex_again_waits_for_the_first_guard() {
    let server = server();
    let client = client(&server, "m_twice").await;
    let session = client.session().await.unwrap();
    let mutex = session.mutex("x").unwrap();
    let first = mutex.lock().await.unwrap();
    let again = tokio::time::timeout(ms(300), mutex.lock()).await;
    assert!(
        again.is_err(),
        "the second lock waits behind the first guard"
    );
    let second = tokio::spawn({
        let mutex = mutex.clone();
        async move { mutex.lock().await }
    });
    tokio::time::sleep(ms(100)).await;
    assert!(!second.is_finished());
    let token = first.fencing_token();
    first.unlock().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(2), second)
        .await
        .expect("acquired once the first guard went")
        .unwrap()
        .unwrap();
    assert!(second.fencing_token() > token);
}

/// A revision counter holding garbage fails a lock call that finds a dead entry to prune
/// before the prune: the call writes nothing.
#[tokio::test]
async fn a_bad_revision_counter_fails_the_lock_before_any_prune() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "m30").await;
    let (dead, live) = (
        client.session().await.unwrap(),
        client.session().await.unwrap(),
    );
    let _held = dead.mutex("m").unwrap().lock().await.unwrap();
    // `dead`'s lease is past its expiry by the registry; nothing swept it yet.
    let _: i64 = cmd(
        &raw,
        "ZADD",
        &["{m30}:leases", "1", &dead.lease().to_string()],
    )
    .await
    .unwrap();
    let _: () = cmd(&raw, "SET", &["{m30}:rev", "garbage"]).await.unwrap();
    let e = live.mutex("m").unwrap().try_lock().await.unwrap_err();
    assert!(matches!(e, leasehold::Error::CorruptData { .. }), "{e}");
    assert_eq!(
        zcard(&raw, "{m30}:mutex:m").await,
        1,
        "the dead entry is still there"
    );
}
