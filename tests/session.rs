//! Sessions and the keepalive supervisor against a real redis-server, including a paused one.

mod support;

use std::time::{Duration, Instant};

use leasehold::{Error, OnDrop, SessionEnd, SessionOptions, SessionState};
use support::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test]
async fn reusing_a_lease_keeps_its_id_and_adopts_it() {
    let server = server();
    let first = client(&server, "s1").await;
    let lease = first.grant(secs(20)).await.unwrap();
    let second = client(&server, "s1").await;
    let session = second
        .session_with(SessionOptions::new().lease(lease.id))
        .await
        .unwrap();
    assert_eq!(session.lease(), lease.id);
    assert_eq!(session.ttl(), secs(20));
    let info = second.time_to_live(lease.id).await.unwrap().unwrap();
    assert_eq!(
        info.client_id,
        second.id(),
        "the new client's doorbell rings for it"
    );

    let ghost = first.grant(secs(5)).await.unwrap().id;
    first.revoke(ghost).await.unwrap();
    let err = second
        .session_with(SessionOptions::new().lease(ghost))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { .. }), "{err}");
}

#[tokio::test]
async fn orphan_resolves_done_at_once_and_leaves_the_lease_to_expire() {
    let server = server();
    let client = client(&server, "s2").await;
    let session = client
        .session_with(SessionOptions::new().ttl(secs(2)))
        .await
        .unwrap();
    let lease = session.lease();
    let waiter = session.clone();
    let done = tokio::spawn(async move { waiter.done().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    session.orphan();
    let end = tokio::time::timeout(Duration::from_millis(100), done)
        .await
        .expect("done() within 100 ms of orphan()")
        .unwrap();
    println!("orphan -> done(): {:?}", t.elapsed());
    assert_eq!(end, SessionEnd::Orphaned);
    assert_eq!(session.state(), SessionState::Ended(SessionEnd::Orphaned));
    // Not revoked: the lease is still there, and goes by its TTL.
    assert!(client.time_to_live(lease).await.unwrap().is_some());
    drop(session);
    assert!(
        eventually(secs(4), || async {
            client.time_to_live(lease).await.unwrap().is_none()
        })
        .await
    );
}

#[tokio::test]
async fn ttl_option_is_honoured() {
    let server = server();
    let client = client(&server, "s3").await;
    for ttl in [secs(4), secs(60)] {
        let session = client
            .session_with(SessionOptions::new().ttl(ttl))
            .await
            .unwrap();
        assert_eq!(session.ttl(), ttl);
        let info = client.time_to_live(session.lease()).await.unwrap().unwrap();
        assert_eq!(info.granted_ttl, ttl);
        assert!(
            info.remaining >= ttl.mul_f64(0.75) && info.remaining <= ttl,
            "{:?} for {ttl:?}",
            info.remaining
        );
    }
    // Over several renewals the remaining time stays within [TTL - 25%, TTL].
    let ttl = secs(2);
    let session = client
        .session_with(SessionOptions::new().ttl(ttl))
        .await
        .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let info = client.time_to_live(session.lease()).await.unwrap().unwrap();
        assert!(info.remaining >= ttl.mul_f64(0.60), "{:?}", info.remaining);
    }
    assert_eq!(session.state(), SessionState::Alive);
}

#[tokio::test]
async fn default_ttl_is_60s() {
    let server = server();
    let client = client(&server, "s4").await;
    let session = client.session().await.unwrap();
    assert_eq!(session.ttl(), secs(60));
}

#[tokio::test]
async fn never_expires_while_renewals_succeed() {
    let server = server();
    let client = client(&server, "s5").await;
    let session = client
        .session_with(SessionOptions::new().ttl(secs(1)))
        .await
        .unwrap();
    let first_validity = session.valid_until();
    // About 12 renewals at TTL/3.
    let r = tokio::time::timeout(secs(4), session.done()).await;
    assert!(r.is_err(), "session ended while Redis was healthy: {r:?}");
    assert_eq!(session.state(), SessionState::Alive);
    assert!(session.valid_until() > first_validity + secs(2));
}

#[tokio::test]
async fn expires_no_later_than_ttl_after_last_renewal_sent_when_redis_is_paused() {
    let server = server();
    let client = client(&server, "s6").await;
    let ttl = secs(2);
    let session = client
        .session_with(SessionOptions::new().ttl(ttl))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await; // at least one renewal
    server.pause().unwrap();
    let paused_at = Instant::now();
    // No renewal can succeed from now on; the last successful one was sent before `paused_at`,
    // and the local validity derived from it ends at most TTL after it was sent.
    let valid_until = session.valid_until();
    assert!(valid_until <= paused_at + ttl);

    let mut saw_jeopardy = false;
    let end = loop {
        match session.state() {
            SessionState::Jeopardy => saw_jeopardy = true,
            SessionState::Ended(end) => break end,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let ended_at = Instant::now();
    assert_eq!(end, SessionEnd::Expired);
    assert!(
        saw_jeopardy,
        "failing renewals put the session in jeopardy first"
    );
    assert!(ended_at >= valid_until, "not before the validity ran out");
    // The validity did not move while Redis was paused.
    assert_eq!(session.valid_until(), valid_until);
    // done() agrees at once, though Redis is still unreachable.
    let end = tokio::time::timeout(Duration::from_millis(100), session.done())
        .await
        .expect("done() resolves while Redis is paused");
    assert_eq!(end, SessionEnd::Expired);
    println!(
        "paused -> expired after {:?} (TTL {ttl:?})",
        ended_at - paused_at
    );
    server.resume().unwrap();
    // Once Redis is back the expired session is not revived; its lease gets revoked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(session.state(), SessionState::Ended(SessionEnd::Expired));
    let lease = session.lease();
    assert!(
        eventually(secs(5), || async {
            matches!(client.time_to_live(lease).await, Ok(None))
        })
        .await
    );
}

#[tokio::test]
async fn external_revoke_is_noticed_well_under_a_renewal_interval() {
    let server = server();
    let owner = client(&server, "s7").await;
    let operator = client(&server, "s7").await;
    let ttl = secs(30);
    let session = owner
        .session_with(SessionOptions::new().ttl(ttl))
        .await
        .unwrap();
    let t = Instant::now();
    operator.revoke(session.lease()).await.unwrap();
    let end = tokio::time::timeout(ttl / 3, session.done())
        .await
        .expect("revoke noticed within TTL/3");
    let noticed = t.elapsed();
    println!(
        "external revoke noticed after {noticed:?} (TTL/3 = {:?})",
        ttl / 3
    );
    assert_eq!(end, SessionEnd::Revoked);
    assert!(matches!(session.check(), Err(Error::SessionLost { .. })));
}

#[tokio::test]
async fn dropping_the_last_handle_revokes_and_leaves_nothing() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "s8").await;
    let session = client.session().await.unwrap();
    let clone = session.clone();
    let guard = session.mutex("x").unwrap().lock().await.unwrap();
    assert_eq!(client.live_sessions(), 1);
    drop(session);
    drop(clone);
    // The guard still holds the session.
    assert_eq!(client.live_sessions(), 1);
    assert!(guard.is_owner().await.unwrap());
    drop(guard);
    assert_eq!(client.live_sessions(), 0);
    assert!(
        eventually(secs(2), || async {
            client.leases().await.unwrap().is_empty()
        })
        .await,
        "lease revoked in the background"
    );
    assert!(
        eventually(secs(2), || async {
            keys(&raw, "{s8}:mutex:*").await.is_empty()
        })
        .await
    );
    assert!(keys(&raw, "{s8}:attached:*").await.is_empty());
    assert!(keys(&raw, "{s8}:lease:*").await.is_empty());
}

#[tokio::test]
async fn on_drop_orphan_leaves_the_lease_to_its_ttl() {
    let server = server();
    let client = client(&server, "s9").await;
    let session = client
        .session_with(SessionOptions::new().ttl(secs(2)).on_drop(OnDrop::Orphan))
        .await
        .unwrap();
    let lease = session.lease();
    drop(session);
    assert_eq!(client.live_sessions(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        client.time_to_live(lease).await.unwrap().is_some(),
        "not revoked"
    );
    assert!(
        eventually(secs(4), || async {
            client.time_to_live(lease).await.unwrap().is_none()
        })
        .await,
        "not renewed either"
    );
}

/// Nobody renews any more, so no renewal sweeps on the way: the client sweeps the leases it
/// left to expire itself, with what was attached to them.
#[tokio::test]
async fn orphaned_leases_are_swept_when_no_session_is_left() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "s12").await;
    let ttl = secs(1);
    let orphaned = client
        .session_with(SessionOptions::new().ttl(ttl))
        .await
        .unwrap();
    let dropped = client
        .session_with(SessionOptions::new().ttl(ttl).on_drop(OnDrop::Orphan))
        .await
        .unwrap();
    let guard = orphaned.mutex("a").unwrap().lock().await.unwrap();
    dropped.put("k", "v").await.unwrap();
    orphaned.orphan();
    drop((guard, orphaned, dropped));
    assert_eq!(client.live_sessions(), 0);
    assert_eq!(zcard(&raw, "{s12}:leases").await, 2, "left to expire");
    // Expired after TTL (plus a renewal attempt timeout and drift), swept within a second.
    assert!(
        eventually(secs(3), || async { zcard(&raw, "{s12}:leases").await == 0 }).await,
        "registry still holds {}",
        zcard(&raw, "{s12}:leases").await
    );
    // The revision counter, and the key event log (watches read it; bounded, kept like the
    // counter).
    assert_eq!(
        keys(&raw, "{s12}:*").await,
        vec!["{s12}:kv-events".to_owned(), "{s12}:rev".to_owned()]
    );
}

/// Revoking a session that already ended here (dropped, closed) does not ring this client's
/// doorbell: nothing needs to hear of it, and a session-per-request service would otherwise
/// send itself a pub/sub message per request. A revoke from outside still rings.
#[tokio::test]
async fn revoking_an_ended_session_does_not_ring_its_own_doorbell() {
    use fred::prelude::EventInterface;

    let server = server();
    let client = client(&server, "s13").await;
    let listener = raw(&server).await;
    let mut messages = listener.message_rx();
    let wake = format!("{{s13}}:wake:{}", client.id());
    subscribe_doorbell(&listener, wake).await;

    let dropped = client.session().await.unwrap();
    let dropped_lease = dropped.lease();
    drop(dropped);
    let closed = client.session().await.unwrap();
    closed.close().await.unwrap();
    assert!(
        eventually(secs(2), || async {
            client.time_to_live(dropped_lease).await.unwrap().is_none()
        })
        .await,
        "revoked in the background"
    );

    let live = client.session().await.unwrap();
    client.revoke(live.lease()).await.unwrap();
    // Messages arrive in order: the first is the outside revoke's.
    let first = tokio::time::timeout(secs(2), messages.recv())
        .await
        .expect("the outside revoke rings")
        .unwrap();
    assert_eq!(
        first.value.as_str().unwrap(),
        format!("r {}", live.lease()).as_str()
    );
    assert_eq!(live.done().await, SessionEnd::Revoked);
}

#[tokio::test]
async fn close_revokes_and_is_idempotent() {
    let server = server();
    let client = client(&server, "s10").await;
    let session = client.session().await.unwrap();
    session.close().await.unwrap();
    assert_eq!(session.done().await, SessionEnd::Closed);
    assert!(client
        .time_to_live(session.lease())
        .await
        .unwrap()
        .is_none());
    session.close().await.unwrap();
    assert_eq!(session.state(), SessionState::Ended(SessionEnd::Closed));
    let err = session.mutex("m").unwrap().lock().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::SessionLost {
                reason: SessionEnd::Closed,
                ..
            }
        ),
        "{err}"
    );
}

/// `close` dropped while its revoke cannot get through, and the revoke then lost with the
/// connection: the session reads closed and its lease is renewed no more, so the lease runs
/// out by its TTL and its lock passes on.
#[tokio::test]
async fn a_close_dropped_mid_way_leaves_nothing_renewed() {
    let server = server();
    let proxy = leasehold_testing::Proxy::start(server.port())
        .await
        .unwrap();
    let direct = client(&server, "s10b").await;
    let proxied = client_at(&proxy.url(), "s10b").await;
    let ttl = Duration::from_millis(1500);
    let session = proxied
        .session_with(SessionOptions::new().ttl(ttl))
        .await
        .unwrap();
    let held = session.mutex("m").unwrap().lock().await.unwrap();
    close_losing_its_revoke(&proxy, &session).await;
    assert!(
        direct
            .time_to_live(session.lease())
            .await
            .unwrap()
            .is_some(),
        "the revoke was lost, so the lease is still there"
    );
    let other = direct.session().await.unwrap();
    let next = tokio::time::timeout(ttl + secs(2), other.mutex("m").unwrap().lock())
        .await
        .expect("the lease ran out unrenewed and the lock passed on")
        .unwrap();
    assert!(next.fencing_token() > held.fencing_token());
    assert_eq!(direct.time_to_live(session.lease()).await.unwrap(), None);
    drop(held);
    next.unlock().await.unwrap();
}

/// The leak this crate exists to prevent: a session per request, never closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_request_leave_no_task_lease_or_entry_behind() {
    let server = server();
    let raw = raw(&server).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let before_client = metrics.num_alive_tasks();
    let client = client(&server, "s11").await;
    let with_client = metrics.num_alive_tasks();
    for round in 0..5 {
        let mut handles = Vec::new();
        for i in 0..40 {
            let client = client.clone();
            handles.push(tokio::spawn(async move {
                let session = client.session().await.unwrap();
                let guard = session
                    .mutex(&format!("req-{}", i % 4))
                    .unwrap()
                    .lock()
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
                drop(guard); // and the session, never closed
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(client.live_sessions(), 0, "round {round}");
    }
    assert!(
        eventually(secs(5), || async {
            client.leases().await.unwrap().is_empty()
        })
        .await,
        "every lease revoked"
    );
    assert!(
        eventually(secs(2), || async {
            keys(&raw, "{s11}:mutex:*").await.is_empty()
        })
        .await
    );
    assert!(
        eventually(secs(2), || async {
            metrics.num_alive_tasks() <= with_client
        })
        .await,
        "tasks: {} now, {} with an idle client",
        metrics.num_alive_tasks(),
        with_client
    );
    drop(client);
    assert!(
        eventually(secs(5), || async {
            metrics.num_alive_tasks() <= before_client
        })
        .await,
        "the client's tasks end with it: {} now, {} before",
        metrics.num_alive_tasks(),
        before_client
    );
}

/// A process that takes over a lease another live process still uses (`SessionOptions::lease`)
/// ends that process's session at once, with `SessionEnd::Adopted`: the holder stops believing
/// in a lock whose entry the adoption released, before the next holder can act on it.
#[tokio::test]
async fn adopting_a_lease_in_use_ends_the_old_session_at_once() {
    let server = server();
    let old = client(&server, "adopt1").await;
    let new = client(&server, "adopt1").await;
    let third = client(&server, "adopt1").await;
    let session = old.session().await.unwrap();
    let guard = session.mutex("m").unwrap().lock().await.unwrap();
    let waiter = third.session().await.unwrap();
    let next = spawn_lock(waiter.mutex("m").unwrap());
    let t = Instant::now();
    let _adopted = new
        .session_with(SessionOptions::new().lease(session.lease()))
        .await
        .unwrap();
    let end = tokio::time::timeout(secs(2), session.done())
        .await
        .expect("the old session learns at once");
    assert_eq!(end, SessionEnd::Adopted);
    assert!(end.is_loss());
    assert!(!guard.is_valid());
    // The next holder got the lock the adoption released; the old holder already knew.
    let token = tokio::time::timeout(secs(5), next)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(token > guard.fencing_token());
    println!(
        "old session ended {:?} after the adoption began",
        t.elapsed()
    );
}

/// A session with a 3 s TTL: renewed every second.
async fn session_of_3s(client: &leasehold::Client) -> leasehold::Session {
    client
        .session_with(SessionOptions::new().ttl(secs(3)))
        .await
        .unwrap()
}

/// How a 3 s session ended, which must be within about one renewal interval (1 s).
async fn ended_within_a_renewal(session: &leasehold::Session) -> SessionEnd {
    tokio::time::timeout(secs(2), session.done())
        .await
        .expect("ended within a renewal interval")
}

/// Without the doorbell message (an older client adopting, or the message lost), the old
/// session still ends as adopted at its next renewal.
#[tokio::test]
async fn an_adoption_without_a_ring_is_found_by_the_next_renewal() {
    let server = server();
    let raw = raw(&server).await;
    let old = client(&server, "adopt2").await;
    let session = session_of_3s(&old).await;
    // What an older client's adoption writes: only the client field changes.
    let key = format!("{{adopt2}}:lease:{}", session.lease());
    let _: i64 = cmd(&raw, "HSET", &[&key, "client", "another-client"])
        .await
        .unwrap();
    assert_eq!(ended_within_a_renewal(&session).await, SessionEnd::Adopted);
}

/// A lease whose hash vanished (evicted, deleted) while the registry still counts it is
/// dropped by the renewal that finds it gone: its lock passes to the next waiter at once
/// rather than when the registry entry runs out.
#[tokio::test]
async fn a_renewal_that_finds_the_lease_hash_gone_frees_its_locks_at_once() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "evict1").await;
    let holder = session_of_3s(&client).await;
    let _guard = holder.mutex("m").unwrap().lock().await.unwrap();
    let waiter = client.session().await.unwrap();
    let next = spawn_lock(waiter.mutex("m").unwrap());
    let key = format!("{{evict1}}:lease:{}", holder.lease());
    let _: i64 = cmd(&raw, "DEL", &[&key]).await.unwrap();
    let end = ended_within_a_renewal(&holder).await;
    assert_eq!(end, SessionEnd::LeaseNotFound);
    // The registry entry would have kept the lock 3 s more.
    tokio::time::timeout(secs(1), next)
        .await
        .expect("the waiter gets the lock at once, not when the registry entry runs out")
        .unwrap()
        .unwrap();
}

/// Entries a session holds that vanish from Redis (a foreign `DEL` of the attachment set, a
/// flush of some keys) end the session at its next renewal: the holder stops believing in a
/// lock that may have passed to someone else, and the rest of its lease is freed.
#[tokio::test]
async fn a_holder_whose_entries_vanished_learns_it_within_a_renewal() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "vanish").await;
    let holder = session_of_3s(&client).await;
    let guard = holder.mutex("m").unwrap().lock().await.unwrap();
    let other = holder.mutex("n").unwrap().lock().await.unwrap();
    // Another session's lock stays untouched by the check.
    let bystander = session_of_3s(&client).await;
    let kept = bystander.mutex("b").unwrap().lock().await.unwrap();
    let attached = format!("{{vanish}}:attached:{}", holder.lease());
    let _: i64 = cmd(&raw, "DEL", &[&attached]).await.unwrap();
    assert_eq!(
        ended_within_a_renewal(&holder).await,
        SessionEnd::EntriesLost
    );
    assert!(!guard.is_valid() && !other.is_valid());
    assert!(SessionEnd::EntriesLost.is_loss());
    // What was left of the lease is revoked in the background: the locks come free.
    let next = client.session().await.unwrap();
    for name in ["m", "n"] {
        let free = eventually(secs(2), || async {
            match next.mutex(name).unwrap().try_lock().await {
                Ok(g) => g.unlock().await.is_ok(),
                Err(_) => false,
            }
        })
        .await;
        assert!(free, "{name} stayed locked");
    }
    // Releasing and dropping guards keeps the count honest: no false alarm for the bystander.
    tokio::time::sleep(secs(2)).await;
    assert!(bystander.is_valid());
    assert!(kept.is_owner().await.unwrap());
}

/// A lock's queue deleted behind leasehold's back (evicted, a foreign `DEL`) while its
/// attachment stays: the renewal checks the entries it counts against what they point at, so
/// the holder learns it within a renewal, and another session's lock is left alone.
#[tokio::test]
async fn a_holder_whose_queue_key_vanished_learns_it_within_a_renewal() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "vanish_q").await;
    let holder = session_of_3s(&client).await;
    let guard = holder.mutex("m").unwrap().lock().await.unwrap();
    let bystander = session_of_3s(&client).await;
    let kept = bystander.mutex("b").unwrap().lock().await.unwrap();
    let _: i64 = cmd(&raw, "DEL", &["{vanish_q}:mutex:m"]).await.unwrap();
    // Someone else takes the lock the queue's deletion freed.
    let thief = client.session().await.unwrap();
    let _stolen = thief.mutex("m").unwrap().try_lock().await.unwrap();
    assert_eq!(
        ended_within_a_renewal(&holder).await,
        SessionEnd::EntriesLost
    );
    assert!(!guard.is_valid());
    tokio::time::sleep(secs(2)).await;
    assert!(bystander.is_valid());
    assert!(kept.is_owner().await.unwrap());
}

/// Locks taken and released, waits cancelled and try-locks refused never make the session's
/// count exceed what Redis holds: a busy session is never ended by the check.
#[tokio::test]
async fn the_entry_count_never_raises_a_false_alarm() {
    let server = server();
    let client = client(&server, "count").await;
    let busy = session_of_3s(&client).await;
    let other = client.session().await.unwrap();
    let blocker = other.mutex("held").unwrap().lock().await.unwrap();
    let deadline = std::time::Instant::now() + secs(3);
    let mut rounds = 0;
    while std::time::Instant::now() < deadline {
        let g = busy.mutex("a").unwrap().lock().await.unwrap();
        let r = busy.rwlock("r").unwrap().read().await.unwrap();
        let p = busy.semaphore("s", 2).unwrap().acquire().await.unwrap();
        assert!(busy.mutex("held").unwrap().try_lock().await.is_err());
        // A wait cancelled while queued.
        let m = busy.mutex("held").unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(5), m.lock()).await;
        g.unlock().await.unwrap();
        drop(r);
        p.release().await.unwrap();
        rounds += 1;
    }
    assert!(rounds > 10, "{rounds}");
    assert!(busy.is_valid(), "ended: {:?}", busy.state());
    drop(blocker);
    // Many tasks of one session, their calls batched, renewed every ~333 ms meanwhile.
    let shared = client
        .session_with(SessionOptions::new().ttl(secs(1)))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = shared.clone();
            tokio::spawn(async move {
                let deadline = std::time::Instant::now() + secs(3);
                while std::time::Instant::now() < deadline {
                    let g = s.mutex(&format!("t{}", i % 4)).unwrap().lock().await?;
                    g.unlock().await?;
                }
                Ok::<_, leasehold::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(shared.is_valid(), "ended: {:?}", shared.state());
}

#[tokio::test]
async fn adopting_a_lease_releases_every_lock_entry_it_held_however_many() {
    let server = server();
    let raw = raw(&server).await;
    let old = client(&server, "adopt_many").await;
    let session = old.session().await.unwrap();
    let mut guards = Vec::new();
    for i in 0..600 {
        guards.push(
            session
                .mutex(&format!("m{i}"))
                .unwrap()
                .lock()
                .await
                .unwrap(),
        );
    }
    // The old client stops renewing and never releases (a process that froze).
    let lease = session.lease();
    std::mem::forget(guards);
    session.orphan();

    let new = client(&server, "adopt_many").await;
    let adopted = new
        .session_with(SessionOptions::new().lease(lease))
        .await
        .unwrap();
    assert!(
        keys(&raw, "{adopt_many}:mutex:*").await.is_empty(),
        "all 600 entries released before the session is returned"
    );

    // A release step that goes on after the new session queued an entry leaves that entry:
    // only entries up to the takeover's revision are the old owner's.
    let fresh = adopted.mutex("fresh").unwrap().lock().await.unwrap();
    let ns = "{adopt_many}";
    let reply = eval_script(
        &raw,
        "lease_adopt",
        vec![
            format!("{ns}:rev"),
            format!("{ns}:leases"),
            format!("{ns}:lease:{lease}"),
            format!("{ns}:attached:{lease}"),
        ],
        vec![
            lease.to_string(),
            new.id().to_owned(),
            (fresh.fencing_token() - 1).to_string(),
            "0".into(),
        ],
    )
    .await
    .unwrap();
    let reply: Vec<String> = fred::types::FromValue::from_value(reply).unwrap();
    assert_eq!(reply.last().map(String::as_str), Some("0"), "{reply:?}");
    assert!(fresh.is_owner().await.unwrap());
}

/// Every connection of a client is named `leasehold:<namespace>:<client id>` in `CLIENT LIST`,
/// and named again when it comes back after being cut.
#[tokio::test]
async fn every_connection_is_named_and_named_again_after_a_reconnection() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "names").await;
    let name = format!("name=leasehold:names:{} ", client.id());
    let named = || async {
        let list: String = cmd(&raw, "CLIENT", &["LIST"]).await.unwrap();
        list.lines()
            .filter(|l| l.contains(&name))
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .map(str::to_owned)
            .collect::<Vec<String>>()
    };
    let ids = named().await;
    // The command pool (4 connections) and the doorbell connection.
    assert_eq!(ids.len(), 5, "{ids:?}");
    for id in &ids {
        let _: i64 = cmd(&raw, "CLIENT", &["KILL", "ID", id]).await.unwrap();
    }
    assert!(
        eventually(secs(10), || async {
            let again = named().await;
            again.len() == ids.len() && again.iter().all(|id| !ids.contains(id))
        })
        .await,
        "reconnected connections are named again: {:?}",
        named().await
    );
    // And the client still works over them.
    let session = client.session().await.unwrap();
    let guard = session.mutex("m").unwrap().lock().await.unwrap();
    guard.unlock().await.unwrap();
}
