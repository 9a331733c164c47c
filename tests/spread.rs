//! Spread namespaces (`ClientBuilder::spread`): the layout recorded and checked by every
//! client, sessions with sub-leases granted on first use and dropped when unused, loss of the
//! whole session with any of its leases, revoke from outside with tombstones, and locks spread
//! over a real 3-primary cluster, also while a sub-namespace's slot moves.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::{Client, Error, SessionEnd, SessionOptions};
use leasehold_testing::RedisCluster;
use support::*;

async fn spread_client(url: &str, ns: &str, n: u16) -> leasehold::Result<Client> {
    Client::builder()
        .url(url)
        .namespace(ns)
        .spread(n)
        .command_timeout(Duration::from_secs(3))
        .build()
        .await
}

/// A client that spreads namespace `ns` as recorded (as the CLI does).
async fn recorded_client(url: &str, ns: &str) -> leasehold::Result<Client> {
    Client::builder()
        .url(url)
        .namespace(ns)
        .spread_as_recorded()
        .build()
        .await
}

/// An error that says the call may or may not have run (Redis unreachable for a moment).
fn transient(e: &Error) -> bool {
    matches!(e, Error::Unreachable(_) | Error::Timeout(_))
}

fn ttl(ms: u64) -> SessionOptions {
    SessionOptions::new().ttl(Duration::from_millis(ms))
}

/// Names that fall in `count` different sub-namespaces of `client`.
fn names_in_distinct_subs(client: &Client, count: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    (0..)
        .map(|i| format!("lock-{i}"))
        .filter(|n| seen.insert(client.sub_namespace_of(n).to_owned()))
        .take(count)
        .collect()
}

#[tokio::test]
async fn clients_of_another_layout_are_refused() {
    let server = server();
    let url = server.url();
    let spread = spread_client(&url, "lay", 48).await.unwrap();
    assert_eq!(spread.spread(), 48);
    let raw = raw(&server).await;
    let meta: Vec<String> = cmd(&raw, "HMGET", &["{lay}:meta", "spread", "hash"])
        .await
        .unwrap();
    assert_eq!(meta, ["48", "1"]);
    for n in [1, 16] {
        let e = spread_client(&url, "lay", n).await.unwrap_err();
        assert!(matches!(e, Error::LayoutMismatch(_)), "{n}: {e}");
    }
    assert!(matches!(
        spread_client(&url, "lay", 0).await.unwrap_err(),
        Error::InvalidArgument(_)
    ));
    // A second spread client agrees, and maps names the same way.
    let other = spread_client(&url, "lay", 48).await.unwrap();
    assert_eq!(
        other.sub_namespace_of("job-7"),
        spread.sub_namespace_of("job-7")
    );

    // An unspread namespace in use by an unspread client cannot be spread under it.
    let plain = client(&server, "busy").await;
    let session = plain.session().await.unwrap();
    let e = spread_client(&url, "busy", 48).await.unwrap_err();
    assert!(matches!(e, Error::LayoutMismatch(_)), "{e}");
    assert!(!exists(&raw, "{busy}:meta").await);
    session.close().await.unwrap();
    // Once its leases are gone it can be, and then the unspread client's grants are refused.
    let _spread = spread_client(&url, "busy", 48).await.unwrap();
    let e = plain.session().await.unwrap_err();
    assert!(matches!(e, Error::LayoutMismatch(_)), "{e}");
}

#[tokio::test]
async fn the_layout_is_checked_at_its_limits_and_a_foreign_one_is_refused_untouched() {
    let server = server();
    let url = server.url();
    let raw = raw(&server).await;
    let e = spread_client(&url, "lim", leasehold::MAX_SPREAD + 1)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(!exists(&raw, "{lim}:meta").await);
    // The script checks it too, for callers that are not this crate.
    let layout = |n: &str| {
        eval_script(
            &raw,
            "namespace_layout",
            vec![
                "{lim}:rev".into(),
                "{lim}:leases".into(),
                "{lim}:meta".into(),
            ],
            vec![n.into(), "1".into()],
        )
    };
    for n in ["0", "1025", "-1", "1e3", ""] {
        let e = layout(n).await.unwrap_err();
        assert!(e.details().contains("LHARG"), "{n}: {e}");
    }
    assert!(!exists(&raw, "{lim}:meta").await);

    // The largest spread works: its sub-namespaces are distinct and a lock in one excludes.
    let wide = spread_client(&url, "lim", leasehold::MAX_SPREAD)
        .await
        .unwrap();
    assert_eq!(wide.spread(), leasehold::MAX_SPREAD);
    let subs: HashSet<String> = (0..4000)
        .map(|i| wide.sub_namespace_of(&format!("n{i}")).to_owned())
        .collect();
    assert!(subs.len() > 900, "{} sub-namespaces used", subs.len());
    let s = wide.session().await.unwrap();
    let g = s.mutex("edge").unwrap().lock().await.unwrap();
    let other = wide.session().await.unwrap();
    let e = other.mutex("edge").unwrap().try_lock().await.unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    g.unlock().await.unwrap();

    // A layout this client cannot read (written by something else) is refused and left as it
    // is, whether the client names a layout or takes the recorded one.
    for (ns, n) in [("odd", "5000"), ("odd2", "abc"), ("odd3", "48")] {
        let key = format!("{{{ns}}}:meta");
        let hash = if ns == "odd3" { "9" } else { "1" };
        let _: () = cmd(&raw, "HSET", &[&key, "spread", n, "hash", hash])
            .await
            .unwrap();
        let e = spread_client(&url, ns, 48).await.unwrap_err();
        assert!(matches!(e, Error::LayoutMismatch(_)), "{ns}: {e}");
        let e = recorded_client(&url, ns)
            .await
            .err()
            .unwrap_or_else(|| panic!("{ns}: built"));
        assert!(matches!(e, Error::LayoutMismatch(_)), "{ns}: {e}");
        let meta: Vec<String> = cmd(&raw, "HMGET", &[&key, "spread", "hash"]).await.unwrap();
        assert_eq!(meta, [n, hash], "{ns}");
    }
    // Another type at the layout key: an error naming it, the value kept.
    let _: () = cmd(&raw, "SET", &["{odd4}:meta", "not a hash"])
        .await
        .unwrap();
    let e = spread_client(&url, "odd4", 48).await.unwrap_err();
    assert!(
        matches!(e, Error::WrongType { ref key, .. } if key == "{odd4}:meta"),
        "{e}"
    );
    assert!(recorded_client(&url, "odd4").await.is_err());
    let kept: String = cmd(&raw, "GET", &["{odd4}:meta"]).await.unwrap();
    assert_eq!(kept, "not a hash");
}

#[tokio::test]
async fn an_unspread_client_writes_no_layout() {
    let server = server();
    let raw = raw(&server).await;
    let c = client(&server, "flat").await;
    let s = c.session().await.unwrap();
    s.mutex("a")
        .unwrap()
        .lock()
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
    assert_eq!(c.spread(), 1);
    assert_eq!(c.sub_namespace_of("a"), "flat");
    assert!(!exists(&raw, "{flat}:meta").await);
    assert!(keys(&raw, "{flat/*").await.is_empty());
}

#[tokio::test]
async fn locks_live_in_their_names_sub_namespace_and_exclude_each_other() {
    let server = server();
    let raw = raw(&server).await;
    let client = spread_client(&server.url(), "sp", 48).await.unwrap();
    let a = client.session().await.unwrap();
    let b = client.session().await.unwrap();
    let names = names_in_distinct_subs(&client, 4);
    let mut tokens = BTreeMap::new();
    for name in &names {
        let g = a.mutex(name).unwrap().lock().await.unwrap();
        let sub = client.sub_namespace_of(name);
        assert_eq!(g.key(), format!("{{{sub}}}:mutex:{name}"));
        assert!(exists(&raw, g.key()).await);
        // The session's sub-lease there, with the derived id.
        let lease = g.session().lease();
        assert_ne!(lease, a.lease());
        assert!(exists(&raw, &format!("{{{sub}}}:lease:{lease}")).await);
        assert!(matches!(
            b.mutex(name).unwrap().try_lock().await,
            Err(Error::Locked { .. })
        ));
        tokens.insert(name.clone(), g.fencing_token());
        g.unlock().await.unwrap();
    }
    // Fencing tokens rise per name, also across sessions.
    for name in &names {
        let g = b.mutex(name).unwrap().lock().await.unwrap();
        assert!(g.fencing_token() > tokens[name]);
        g.unlock().await.unwrap();
    }
    // The session's own lease is in the namespace itself, where keys go too.
    assert!(exists(&raw, &format!("{{sp}}:lease:{}", a.lease())).await);
    client.put("k", "v", Some(a.lease())).await.unwrap();
    assert!(exists(&raw, "{sp}:key:k").await);
    let info = client.time_to_live(a.lease()).await.unwrap().unwrap();
    assert_eq!(info.attached_count, 1);
}

#[tokio::test]
async fn a_waiter_in_a_sub_namespace_is_handed_the_lock() {
    let server = server();
    let client = spread_client(&server.url(), "hand", 48).await.unwrap();
    let holder = client.session_with(ttl(30_000)).await.unwrap();
    let waiter = client.session_with(ttl(30_000)).await.unwrap();
    let g = holder.mutex("job").unwrap().lock().await.unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let w = tokio::spawn(async move {
        let g2 = waiter.mutex("job").unwrap().lock().await.unwrap();
        (Instant::now(), g2.fencing_token())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    inside.fetch_add(1, Ordering::SeqCst);
    let released = Instant::now();
    let first = g.fencing_token();
    g.unlock().await.unwrap();
    let (acquired, token) = w.await.unwrap();
    assert!(token > first);
    // Woken by the doorbell of the sub-namespace, not by a timeout.
    assert!(acquired - released < Duration::from_secs(2));
}

#[tokio::test]
async fn unused_sub_leases_are_dropped_and_granted_again() {
    let server = server();
    let raw = raw(&server).await;
    let client = spread_client(&server.url(), "idle", 48).await.unwrap();
    // TTL 1.2 s: renewals every 0.4 s; a sub-lease unused for a renewal interval is dropped.
    let s = client.session_with(ttl(1200)).await.unwrap();
    let names = names_in_distinct_subs(&client, 2);
    let held = s.mutex(&names[0]).unwrap().lock().await.unwrap();
    let m = s.mutex(&names[1]).unwrap();
    m.lock().await.unwrap().unlock().await.unwrap();
    let lease_key = |name: &str| {
        format!(
            "{{{}}}:lease:{}",
            client.sub_namespace_of(name),
            s.mutex(name).unwrap().session().lease()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    // Only the marker of the drop remains: the hash with `dropped`.
    while cmd::<Option<String>>(&raw, "HGET", &[&lease_key(&names[1]), "ttl"])
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "the unused sub-lease was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(s.is_valid(), "dropping an unused sub-lease ends nothing");
    // The one in use stays.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(s.is_valid());
    assert!(held.is_owner().await.unwrap());
    let ttl_field: Option<String> = cmd(&raw, "HGET", &[&lease_key(&names[0]), "ttl"])
        .await
        .unwrap();
    assert!(ttl_field.is_some());
    // The mutex handle kept across the drop takes the lock again: granted anew.
    let g = m.lock().await.unwrap();
    assert!(g.is_owner().await.unwrap());
    g.unlock().await.unwrap();
    held.unlock().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(s.is_valid(), "a session that holds nothing stays alive");
}

/// A drop whose reply was lost is asked again: Redis answers "dropped" (from the marker it
/// left), not "gone", and a drop from an earlier grant that arrives after a new grant does
/// nothing. At the script level, where the reply can be dropped exactly.
#[tokio::test]
async fn a_drop_asked_twice_or_late_does_no_harm() {
    let server = server();
    let raw = raw(&server).await;
    let ns = "{dr/0/0}:";
    let id = "0190a5b2-0000-7000-8000-000000000001";
    let (lk, ak) = (format!("{ns}lease:{id}"), format!("{ns}attached:{id}"));
    let base = || vec![format!("{ns}rev"), format!("{ns}leases")];
    let touch = |epoch: &str| {
        let mut keys = base();
        keys.extend([lk.clone(), ak.clone(), format!("{ns}revoked")]);
        let args: Vec<String> = [id, "10000", "c1", epoch, "h", "1", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        (keys, args)
    };
    let renew = |flag: &str| {
        let mut keys = base();
        keys.extend([lk.clone(), ak.clone()]);
        let args: Vec<String> = ["0", "c1", id, flag]
            .iter()
            .map(|s| s.to_string())
            .collect();
        (keys, args)
    };
    let ttl_of = |v: fred::types::Value| -> i64 {
        match v {
            fred::types::Value::Array(items) => items[4].as_i64().unwrap(),
            other => panic!("{other:?}"),
        }
    };
    let (k, a) = touch("00000000000000aa");
    eval_script(&raw, "lease_touch", k, a).await.unwrap();
    let (k, a) = renew("d00000000000000aa");
    assert_eq!(
        ttl_of(eval_script(&raw, "lease_renew", k, a).await.unwrap()),
        -3
    );
    // The same drop again (its reply was lost): still "dropped", not "gone".
    let (k, a) = renew("d00000000000000aa");
    assert_eq!(
        ttl_of(eval_script(&raw, "lease_renew", k, a).await.unwrap()),
        -3
    );
    // Granted again; the late drop of the earlier grant renews instead.
    let (k, a) = touch("00000000000000bb");
    eval_script(&raw, "lease_touch", k, a).await.unwrap();
    let (k, a) = renew("d00000000000000aa");
    assert_eq!(
        ttl_of(eval_script(&raw, "lease_renew", k, a).await.unwrap()),
        10000
    );
    // Something attached: no drop, renewed.
    let _: i64 = cmd(&raw, "SADD", &[&ak, &format!("k {ns}key:x")])
        .await
        .unwrap();
    let (k, a) = renew("d00000000000000bb");
    assert_eq!(
        ttl_of(eval_script(&raw, "lease_renew", k, a).await.unwrap()),
        10000
    );
}

#[tokio::test]
async fn the_session_is_lost_with_any_sub_lease_and_its_other_locks_free_at_once() {
    let server = server();
    let raw = raw(&server).await;
    let client = spread_client(&server.url(), "loss", 48).await.unwrap();
    let other = client.session().await.unwrap();
    let s = client.session_with(ttl(3000)).await.unwrap();
    let names = names_in_distinct_subs(&client, 3);
    let mut guards = Vec::new();
    for name in &names {
        guards.push(s.mutex(name).unwrap().lock().await.unwrap());
    }
    // One sub-lease vanishes (a foreign DEL, an eviction).
    let sub = client.sub_namespace_of(&names[0]);
    let sub_id = guards[0].session().lease().to_string();
    let _: i64 = cmd(&raw, "DEL", &[&format!("{{{sub}}}:lease:{sub_id}")])
        .await
        .unwrap();
    let _: i64 = cmd(&raw, "ZREM", &[&format!("{{{sub}}}:leases"), &sub_id])
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(3), s.done())
        .await
        .expect("the session ends within a renewal interval");
    assert!(end.is_loss(), "{end}");
    for g in &guards {
        assert!(!g.is_valid());
    }
    // Its locks in the other sub-namespaces free at once (revoked), not after the TTL.
    let started = Instant::now();
    for name in &names[1..] {
        let g = tokio::time::timeout(Duration::from_secs(2), other.mutex(name).unwrap().lock())
            .await
            .expect("freed at once")
            .unwrap();
        g.unlock().await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_revoke_from_outside_reaches_every_sub_namespace() {
    let server = server();
    let raw = raw(&server).await;
    let client = spread_client(&server.url(), "rv", 48).await.unwrap();
    let operator = spread_client(&server.url(), "rv", 48).await.unwrap();
    let s = client.session_with(ttl(30_000)).await.unwrap();
    let names = names_in_distinct_subs(&client, 4);
    let mut guards = Vec::new();
    for name in &names[..3] {
        guards.push(s.mutex(name).unwrap().lock().await.unwrap());
    }
    operator.revoke(s.lease()).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(2), s.done())
        .await
        .unwrap();
    assert_eq!(end, SessionEnd::Revoked);
    let other = operator.session().await.unwrap();
    for name in &names[..3] {
        let g = other.mutex(name).unwrap().try_lock().await.unwrap();
        g.unlock().await.unwrap();
    }
    // Every sub-namespace got a tombstone; the revoked session takes nothing more.
    let sub = client.sub_namespace_of(&names[3]);
    let derived = s.mutex(&names[3]).unwrap().session().lease().to_string();
    let tomb: Option<String> = cmd(&raw, "ZSCORE", &[&format!("{{{sub}}}:revoked"), &derived])
        .await
        .unwrap();
    assert!(tomb.is_some());
    assert!(matches!(
        s.mutex(&names[3]).unwrap().lock().await,
        Err(Error::SessionLost { .. })
    ));
    // The tombstone itself refuses a grant that was already on its way.
    let mut keys = vec![format!("{{{sub}}}:rev"), format!("{{{sub}}}:leases")];
    keys.extend([
        format!("{{{sub}}}:lease:{derived}"),
        format!("{{{sub}}}:attached:{derived}"),
        format!("{{{sub}}}:revoked"),
    ]);
    let args: Vec<String> = [
        &derived,
        "30000",
        client.id(),
        "0000000000000001",
        "h",
        "1",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let v = eval_script(&raw, "lease_touch", keys, args).await.unwrap();
    assert_eq!(v.as_i64(), Some(-1));
}

#[tokio::test]
async fn a_first_lock_call_that_finds_a_tombstone_ends_the_whole_session_at_once() {
    let server = server();
    let raw = raw(&server).await;
    let client = spread_client(&server.url(), "tb", 48).await.unwrap();
    let s = client.session_with(ttl(30_000)).await.unwrap();
    let names = names_in_distinct_subs(&client, 2);
    let held = s.mutex(&names[0]).unwrap().lock().await.unwrap();
    // A tombstone in the second name's sub-namespace and nothing else, as a revoke from
    // outside leaves it before its rings arrive.
    let sub = client.sub_namespace_of(&names[1]);
    let derived = s.mutex(&names[1]).unwrap().session().lease().to_string();
    let now: Vec<String> = cmd(&raw, "TIME", &[]).await.unwrap();
    let until = (now[0].parse::<u64>().unwrap() + 60) * 1000;
    let _: () = cmd(
        &raw,
        "ZADD",
        &[&format!("{{{sub}}}:revoked"), &until.to_string(), &derived],
    )
    .await
    .unwrap();
    let e = s.mutex(&names[1]).unwrap().lock().await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::SessionLost {
                reason: SessionEnd::Revoked,
                ..
            }
        ),
        "{e}"
    );
    // Its lock in the first sub-namespace is released now, not when its handles go.
    let other = client.session().await.unwrap();
    let freed = tokio::time::timeout(Duration::from_secs(3), async {
        other.mutex(&names[0]).unwrap().lock().await
    })
    .await
    .expect("released at once");
    freed.unwrap().unlock().await.unwrap();
    assert!(!held.is_valid());
}

#[tokio::test]
async fn a_lock_call_left_unpolled_during_its_grant_holds_up_no_other_call() {
    let server = server();
    let client = spread_client(&server.url(), "park", 48).await.unwrap();
    let s = client.session_with(ttl(30_000)).await.unwrap();
    // Two names in one sub-namespace: their calls share its sub-lease and its grant.
    let first = "job-0".to_owned();
    let sub = client.sub_namespace_of(&first).to_owned();
    let second = (1..)
        .map(|i| format!("job-{i}"))
        .find(|n| client.sub_namespace_of(n) == sub)
        .unwrap();
    let m = s.mutex(&first).unwrap();
    let parked = m.lock();
    tokio::pin!(parked);
    // Polled once, so its grant starts, then neither polled nor dropped.
    assert!(futures_util::FutureExt::now_or_never(parked.as_mut()).is_none());
    let other = tokio::time::timeout(Duration::from_secs(3), async {
        s.mutex(&second).unwrap().lock().await
    })
    .await
    .expect("not held up by the parked call")
    .unwrap();
    other.unlock().await.unwrap();
    // The parked call still finishes when polled again.
    let g = tokio::time::timeout(Duration::from_secs(3), parked)
        .await
        .unwrap()
        .unwrap();
    g.unlock().await.unwrap();
}

#[tokio::test]
async fn closing_or_dropping_a_spread_session_releases_everything() {
    let server = server();
    let raw = raw(&server).await;
    let client = spread_client(&server.url(), "cl", 48).await.unwrap();
    let names = names_in_distinct_subs(&client, 3);
    let s = client.session().await.unwrap();
    for name in &names {
        // Dropped guards release in the background; the sub-leases stay for the session.
        drop(s.mutex(name).unwrap().lock().await.unwrap());
    }
    s.close().await.unwrap();
    assert_eq!(s.done().await, SessionEnd::Closed);
    let t = client.session().await.unwrap();
    let mut held = Vec::new();
    for name in &names {
        held.push(t.mutex(name).unwrap().lock().await.unwrap());
    }
    drop(held);
    drop(t);
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut live = 0;
        for sub in names.iter().map(|n| client.sub_namespace_of(n)) {
            live += zcard(&raw, &format!("{{{sub}}}:leases")).await;
        }
        live += zcard(&raw, "{cl}:leases").await;
        if live == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{live} leases left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.live_sessions(), 0);
}

/// `close` dropped while its revokes cannot get through, and the revokes then lost with the
/// connections: none of the session's leases, its own or its sub-leases, is renewed again, so
/// all run out by their TTL and its locks pass on.
#[tokio::test]
async fn a_close_dropped_mid_way_leaves_no_lease_renewed() {
    let server = server();
    let raw = raw(&server).await;
    let proxy = leasehold_testing::Proxy::start(server.port())
        .await
        .unwrap();
    let client = spread_client(&proxy.url(), "cd", 48).await.unwrap();
    let direct = recorded_client(&server.url(), "cd").await.unwrap();
    let names = names_in_distinct_subs(&client, 3);
    let s = client.session_with(ttl(1500)).await.unwrap();
    let mut held = Vec::new();
    for name in &names {
        held.push(s.mutex(name).unwrap().lock().await.unwrap());
    }
    close_losing_its_revoke(&proxy, &s).await;
    let mut live = zcard(&raw, "{cd}:leases").await;
    for sub in names.iter().map(|n| client.sub_namespace_of(n)) {
        live += zcard(&raw, &format!("{{{sub}}}:leases")).await;
    }
    assert_eq!(
        live, 4,
        "the revokes were lost: the anchor and 3 sub-leases remain"
    );
    let t = direct.session().await.unwrap();
    for (name, old) in names.iter().zip(&held) {
        let next = tokio::time::timeout(Duration::from_secs(4), t.mutex(name).unwrap().lock())
            .await
            .expect("the sub-lease ran out unrenewed and the lock passed on")
            .unwrap();
        assert!(next.fencing_token() > old.fencing_token());
    }
    drop(held);
    drop(s);
    assert_eq!(client.live_sessions(), 0);
}

#[tokio::test]
async fn guarded_writes_are_refused_across_slots() {
    let server = server();
    let client = spread_client(&server.url(), "gw", 48).await.unwrap();
    let s = client.session().await.unwrap();
    let g = s.mutex("job").unwrap().lock().await.unwrap();
    assert!(matches!(
        g.put("k", "v").await,
        Err(Error::InvalidArgument(_))
    ));
    let txn = client
        .txn()
        .when(g.held())
        .then(leasehold::TxnOp::put("k", "v"));
    assert!(matches!(txn.commit().await, Err(Error::InvalidArgument(_))));
    assert!(client.get("k").await.unwrap().is_none());
}

/// On a real cluster: sub-namespaces fall on every shard, locks on all of them exclude and
/// hand over, and moving a sub-namespace's slot under load loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spread_namespace_uses_every_shard_and_survives_a_slot_move() {
    let cluster = RedisCluster::start(3).expect("local cluster");
    let client = spread_client(&cluster.url(), "orders", 48).await.unwrap();
    let mut per_node = BTreeMap::new();
    for i in 0..48u16 {
        let sub = client.sub_namespace_of(&format!("n{i}")).to_owned();
        *per_node.entry(cluster.node_of(&sub).unwrap()).or_insert(0) += 1;
    }
    assert_eq!(per_node.len(), 3, "{per_node:?}");

    let inside: Arc<Vec<AtomicUsize>> = Arc::new((0..8).map(|_| AtomicUsize::new(0)).collect());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..6 {
        let client = client.clone();
        let inside = inside.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let session = client.session_with(ttl(10_000)).await.unwrap();
            let mut last = [0u64; 8];
            let mut cycles = 0u64;
            let mut i = t;
            while !stop.load(Ordering::SeqCst) {
                i = (i + 1) % 8;
                // A call cut off by the move (its connection closed in flight) is a transient
                // error the caller sees; anything else fails the test.
                let g = match session.mutex(&format!("n{i}")).unwrap().lock().await {
                    Ok(g) => g,
                    Err(e) if transient(&e) => continue,
                    Err(e) => panic!("lock: {e}"),
                };
                assert_eq!(inside[i].fetch_add(1, Ordering::SeqCst), 0, "two holders");
                assert!(g.fencing_token() > last[i]);
                last[i] = g.fencing_token();
                inside[i].fetch_sub(1, Ordering::SeqCst);
                match g.unlock().await {
                    Ok(()) => {}
                    Err(e) if transient(&e) => {}
                    Err(e) => panic!("unlock: {e}"),
                }
                cycles += 1;
            }
            assert!(session.is_valid());
            cycles
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Move the sub-namespace of n0 to another shard while the tasks run.
    let sub = client.sub_namespace_of("n0").to_owned();
    let from = cluster.node_of(&sub).unwrap();
    let to = (from + 1) % 3;
    tokio::task::block_in_place(|| cluster.move_namespace(&sub, to)).unwrap();
    assert_eq!(cluster.node_of(&sub).unwrap(), to);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for t in tasks {
        total += tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("tasks finish")
            .unwrap();
    }
    assert!(total > 0);
}

/// A slot half-way through a migration answers `ASK` to calls whose keys it no longer has.
/// Following it on a connection with other calls in flight would hand those calls each
/// other's replies; leasehold never follows it, sends the call again once the slot settles,
/// and every other call meanwhile gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_around_a_slot_in_migration_each_get_their_own_reply() {
    let cluster = RedisCluster::start(3).expect("local cluster");
    let client = Client::builder()
        .url(cluster.url())
        .namespace("mig")
        .spread(48)
        .pool_size(1)
        .command_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    // Names of one sub-namespace, not touched yet (so its slot holds no key), and names of
    // the others.
    let moving = client.sub_namespace_of("m0").to_owned();
    let (mut ask, mut other) = (Vec::new(), Vec::new());
    for i in 0..400 {
        let name = format!("m{i}");
        match client.sub_namespace_of(&name) == moving {
            true if ask.len() < 4 => ask.push(name),
            false if other.len() < 24 => other.push(name),
            _ => {}
        }
    }
    assert_eq!(ask.len(), 4);
    let from = cluster.node_of(&moving).unwrap();
    let to = (from + 1) % 3;
    let slot = leasehold_testing::keyslot(&moving).to_string();
    let id = |n: usize| {
        let reply = cluster.nodes()[n].command(&["CLUSTER", "MYID"]).unwrap();
        reply.lines().nth(1).unwrap().to_owned()
    };
    let (from_id, to_id) = (id(from), id(to));
    let setslot = |n: usize, words: &[&str]| {
        let mut all = vec!["CLUSTER", "SETSLOT", slot.as_str()];
        all.extend_from_slice(words);
        let reply = cluster.nodes()[n].command(&all).unwrap();
        assert!(reply.starts_with("+OK"), "{reply}");
    };
    setslot(to, &["IMPORTING", &from_id]);
    setslot(from, &["MIGRATING", &to_id]);

    let session = client.session().await.unwrap();
    let asked: Vec<_> = ask
        .iter()
        .map(|name| {
            let session = session.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let g = session.mutex(&name).unwrap().lock().await?;
                g.unlock().await
            })
        })
        .collect();
    // Meanwhile, on the same connections: locks on the other sub-namespaces, every reply
    // checked.
    let until = Instant::now() + Duration::from_millis(600);
    let others: Vec<_> = other
        .iter()
        .map(|name| {
            let session = session.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let mut last = 0;
                let mut cycles = 0;
                while Instant::now() < until {
                    let g = session.mutex(&name).unwrap().lock().await?;
                    assert!(g.fencing_token() > last, "tokens rise per name");
                    last = g.fencing_token();
                    g.unlock().await?;
                    cycles += 1;
                }
                Ok::<_, Error>(cycles)
            })
        })
        .collect();
    for task in others {
        assert!(task.await.unwrap().expect("every call its own reply") > 0);
    }
    // The calls into the moving slot wait until it has moved.
    for n in 0..3 {
        setslot(n, &["NODE", &to_id]);
    }
    for task in asked {
        task.await
            .unwrap()
            .expect("sent again once the slot settled");
    }
    assert!(session.is_valid());
}
