//! One client for many namespaces (`Client::with_namespace`), and a client over a pool the
//! application brings (`ClientBuilder::fred_pool`).

mod support;

use std::time::Duration;

use fred::interfaces::ClientLike;
use leasehold::{Client, OnDrop, SessionEnd, SessionOptions, SessionState};
use support::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The ids of the connections in `CLIENT LIST` whose line contains `needle`.
async fn connections(raw: &fred::clients::Client, needle: &str) -> Vec<String> {
    let list: String = cmd(raw, "CLIENT", &["LIST"]).await.unwrap();
    list.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect()
}

/// A second and third namespace on one client open no connection: the pool, the doorbell
/// connection and the supervisor serve all three, and sessions in each are renewed past
/// their TTL.
#[tokio::test]
async fn one_client_serves_many_namespaces_over_one_set_of_connections() {
    let server = server();
    let raw = raw(&server).await;
    let a = Client::builder()
        .url(server.url())
        .namespace("ns-a")
        .pool_size(2)
        .build()
        .await
        .unwrap();
    let before = connections(&raw, "").await.len();
    let b = a.with_namespace("ns-b").await.unwrap();
    let c = b.with_namespace("ns-c").await.unwrap();
    assert_eq!(
        connections(&raw, "").await.len(),
        before,
        "no new connection"
    );
    let own = format!("name=leasehold:ns-a:{} ", a.id());
    assert_eq!(
        connections(&raw, &own).await.len(),
        3,
        "2 pooled + the doorbell"
    );
    assert_eq!((b.namespace(), c.namespace()), ("ns-b", "ns-c"));
    assert_eq!((b.id(), c.id()), (a.id(), a.id()));

    let ttl = secs(2);
    let mut guards = Vec::new();
    let mut sessions = Vec::new();
    for client in [&a, &b, &c] {
        let session = client
            .session_with(SessionOptions::new().ttl(ttl))
            .await
            .unwrap();
        guards.push(session.mutex("m").unwrap().lock().await.unwrap());
        sessions.push(session);
    }
    assert_eq!(a.live_sessions(), 3, "counted for the whole client");
    for ns in ["ns-a", "ns-b", "ns-c"] {
        assert_eq!(zcard(&raw, &format!("{{{ns}}}:leases")).await, 1, "{ns}");
        assert_eq!(zcard(&raw, &format!("{{{ns}}}:mutex:m")).await, 1, "{ns}");
    }
    // Three TTLs: only renewals in each namespace's own registry keep them.
    tokio::time::sleep(ttl * 3).await;
    for (session, guard) in sessions.iter().zip(&guards) {
        assert_eq!(
            session.state(),
            SessionState::Alive,
            "{}",
            session.namespace()
        );
        assert!(guard.is_owner().await.unwrap());
    }
    for guard in guards {
        guard.unlock().await.unwrap();
    }
}

/// Doorbell messages of every namespace reach their waiters and sessions: a lock handoff in a
/// second namespace wakes the waiter at once (without the ring it would wait for the holder's
/// 60 s lease), and a revoke from another process ends the session there at once.
#[tokio::test]
async fn every_namespace_has_its_doorbell() {
    let server = server();
    let first = client(&server, "bell-a").await;
    let client = first.with_namespace("bell-b").await.unwrap();
    let holder = client.session().await.unwrap();
    let waiter = client.session().await.unwrap();
    let guard = holder.mutex("m").unwrap().lock().await.unwrap();
    let wait = spawn_lock(waiter.mutex("m").unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    guard.unlock().await.unwrap();
    let token = tokio::time::timeout(secs(10), wait)
        .await
        .expect("woken by the ring, well before the 30 s re-check")
        .unwrap()
        .unwrap();
    assert!(token > 0);

    let other = support::client(&server, "bell-b").await;
    other.revoke(holder.lease()).await.unwrap();
    let end = tokio::time::timeout(secs(1), holder.done())
        .await
        .expect("the revoke's ring ends the session at once, not a renewal later");
    assert_eq!(end, SessionEnd::Revoked);
}

/// A session left to expire in a second namespace is swept from that namespace's registry,
/// though the client's own namespace never had a session.
#[tokio::test]
async fn orphans_are_swept_in_their_own_namespace() {
    let server = server();
    let raw = raw(&server).await;
    let first = client(&server, "sweep-a").await;
    let client = first.with_namespace("sweep-b").await.unwrap();
    let session = client
        .session_with(SessionOptions::new().ttl(secs(1)).on_drop(OnDrop::Orphan))
        .await
        .unwrap();
    let guard = session.mutex("m").unwrap().lock().await.unwrap();
    drop((guard, session));
    assert_eq!(zcard(&raw, "{sweep-b}:leases").await, 1, "left to expire");
    assert!(
        eventually(secs(5), || async {
            zcard(&raw, "{sweep-b}:leases").await == 0
                && zcard(&raw, "{sweep-b}:mutex:m").await == 0
        })
        .await,
        "swept"
    );
}

/// The supervisor lives while any namespace handle does: dropping the client a namespace
/// handle was made from keeps that namespace's sessions renewed; dropping the last handle
/// closes the doorbell connection.
#[tokio::test]
async fn a_namespace_handle_outlives_the_client_it_came_from() {
    let server = server();
    let raw = raw(&server).await;
    let first = client(&server, "life-a").await;
    let own = format!("name=leasehold:life-a:{} ", first.id());
    let second = first.with_namespace("life-b").await.unwrap();
    drop(first);
    let session = second
        .session_with(SessionOptions::new().ttl(secs(2)))
        .await
        .unwrap();
    tokio::time::sleep(secs(5)).await;
    assert_eq!(session.state(), SessionState::Alive);
    drop((session, second));
    assert!(
        eventually(secs(10), || async {
            connections(&raw, &own).await.is_empty()
        })
        .await,
        "connections closed with the last handle"
    );
    assert!(
        eventually(secs(5), || async {
            zcard(&raw, "{life-b}:leases").await == 0
        })
        .await,
        "the dropped session was revoked"
    );
}

/// A namespace name is checked, and the same name gives the same namespace.
#[tokio::test]
async fn with_namespace_checks_the_name() {
    let server = server();
    let client = client(&server, "names-a").await;
    for bad in ["", "a b", "x{y}", &"n".repeat(65)] {
        let e = client.with_namespace(bad).await.unwrap_err();
        assert!(
            matches!(e, leasehold::Error::InvalidNamespace { .. }),
            "{bad:?}: {e}"
        );
    }
    let same = client.with_namespace("names-a").await.unwrap();
    assert_eq!(same.namespace(), "names-a");
}

/// A fred pool of the application's: leasehold adds only its doorbell connection, leaves the
/// pool's connections unnamed and open when the client goes, and the pool keeps working.
#[tokio::test]
async fn a_callers_pool_stays_the_callers() {
    let server = server();
    let raw = raw(&server).await;
    let pool = pool_at(&server.url()).await;
    let before = connections(&raw, "").await.len();
    let client = Client::builder()
        .fred_pool(pool.clone())
        .namespace("byo")
        .build()
        .await
        .unwrap();
    assert_eq!(
        connections(&raw, "").await.len(),
        before + 1,
        "the doorbell only"
    );
    let own = format!("name=leasehold:byo:{} ", client.id());
    assert_eq!(connections(&raw, &own).await.len(), 1);
    let session = client.session().await.unwrap();
    let guard = session.mutex("m").unwrap().lock().await.unwrap();
    assert_eq!(zcard(&raw, "{byo}:mutex:m").await, 1);
    guard.unlock().await.unwrap();
    drop((session, client));
    assert!(
        eventually(secs(10), || async {
            connections(&raw, &own).await.is_empty()
        })
        .await,
        "the doorbell connection closed"
    );
    assert_eq!(connections(&raw, "").await.len(), before, "the pool's stay");
    let pong: String = pool.next().ping(None).await.unwrap();
    assert_eq!(pong, "PONG");
}

/// A caller's pool that would resend a command cut off in flight (fred's default) is refused;
/// one that sends at most once gets the guarantee the client's own pool gives: an unlock
/// whose reply was cut off reports a transient error, and the lock is free
/// (`tests/mutex.rs::a_call_cut_off_in_flight_is_not_sent_twice`).
#[tokio::test]
async fn a_callers_pool_must_send_each_call_at_most_once() {
    let server = server();
    let raw = raw(&server).await;
    let resending = fred::types::config::Config::from_url(&server.url()).unwrap();
    let resending = fred::types::Builder::from_config(resending)
        .build_pool(1)
        .unwrap();
    resending.init().await.unwrap();
    let refused = Client::builder().fred_pool(resending).build().await;
    match refused {
        Err(leasehold::Error::InvalidArgument(why)) => {
            assert!(why.contains("max_command_attempts = 1"), "{why}")
        }
        other => panic!("a resending pool was accepted: {other:?}"),
    }

    let proxy = leasehold_testing::Proxy::start(server.port())
        .await
        .unwrap();
    let pool = pool_at(&proxy.url()).await;
    let client = Client::builder()
        .fred_pool(pool)
        .namespace("byo-once")
        .command_timeout(secs(2))
        .build()
        .await
        .unwrap();
    assert_an_unlock_cut_in_flight_is_not_sent_twice(&client, &raw, &proxy).await;
}

/// A connected fred pool as `ClientBuilder::fred_pool` documents it: at most once, with a
/// reconnect policy.
async fn pool_at(url: &str) -> fred::clients::Pool {
    let config = fred::types::config::Config::from_url(url).unwrap();
    let pool = fred::types::Builder::from_config(config)
        .with_connection_config(|c| c.max_command_attempts = 1)
        .set_policy(fred::types::config::ReconnectPolicy::default())
        .build_pool(2)
        .unwrap();
    pool.init().await.unwrap();
    pool
}
