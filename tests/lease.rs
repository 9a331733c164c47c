//! Lease API against a real redis-server.

mod support;

use std::time::Duration;

use leasehold::{Attachment, Error, LeaseId, MAX_TTL};
use support::*;

#[tokio::test]
async fn grant_then_time_to_live_shows_remaining_and_metadata() {
    let server = server();
    let client = client(&server, "lease1").await;
    let lease = client.grant(Duration::from_secs(10)).await.unwrap();
    assert_eq!(lease.ttl, Duration::from_secs(10));
    let info = client.time_to_live(lease.id).await.unwrap().expect("alive");
    assert_eq!(info.id, lease.id);
    assert_eq!(info.granted_ttl, Duration::from_secs(10));
    assert!(info.remaining > Duration::ZERO && info.remaining <= Duration::from_secs(10));
    assert_eq!(info.client_id, client.id());
    assert_eq!(info.pid, Some(std::process::id()));
    assert!(!info.host.is_empty());
    assert!(info.granted_at.is_some());
    assert_eq!(info.attached_count, 0);
    assert!(info.attached.is_empty());
}

#[tokio::test]
async fn attached_keys_are_listed_only_when_asked() {
    let server = server();
    let client = client(&server, "lease2").await;
    let session = client.session().await.unwrap();
    let _guard = session.mutex("a").unwrap().lock().await.unwrap();
    let info = client.time_to_live(session.lease()).await.unwrap().unwrap();
    assert_eq!(info.attached_count, 1);
    assert!(info.attached.is_empty());
    let info = client
        .time_to_live_with_keys(session.lease())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.attached.len(), 1);
    match &info.attached[0] {
        Attachment::Member { key, member, .. } => {
            assert_eq!(key, "{lease2}:mutex:a");
            assert!(member.starts_with(&session.lease().to_string()));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unknown_lease_is_none_or_not_found() {
    let server = server();
    let client = client(&server, "lease3").await;
    let ghost: LeaseId = "0190a5b2-0000-7000-8000-000000000001".parse().unwrap();
    assert!(client.time_to_live(ghost).await.unwrap().is_none());
    assert!(matches!(
        client.keep_alive_once(ghost).await,
        Err(Error::LeaseNotFound { .. })
    ));
    let err = client.revoke(ghost).await.unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { .. }));
    assert!(err.to_string().contains("lease3"), "{err}");
}

#[tokio::test]
async fn keep_alive_once_renews() {
    let server = server();
    let client = client(&server, "lease4").await;
    let lease = client.grant(Duration::from_secs(3)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = client
        .time_to_live(lease.id)
        .await
        .unwrap()
        .unwrap()
        .remaining;
    assert!(before <= Duration::from_millis(1800), "{before:?}");
    assert_eq!(
        client.keep_alive_once(lease.id).await.unwrap(),
        Duration::from_secs(3)
    );
    let after = client
        .time_to_live(lease.id)
        .await
        .unwrap()
        .unwrap()
        .remaining;
    assert!(after > Duration::from_millis(2500), "{after:?}");
}

#[tokio::test]
async fn revoke_deletes_attached_entries_and_wakes_waiters() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "lease5").await;
    let holder = client.session().await.unwrap();
    let guard = holder.mutex("m").unwrap().lock().await.unwrap();
    let waiter = client.session().await.unwrap();
    let m = waiter.mutex("m").unwrap();
    let waiting = spawn_lock(m);
    assert!(
        eventually(Duration::from_secs(2), || async {
            zcard(&raw, "{lease5}:mutex:m").await == 2
        })
        .await
    );

    client.revoke(holder.lease()).await.unwrap();
    assert!(!exists(&raw, &format!("{{lease5}}:lease:{}", holder.lease())).await);
    assert!(!exists(&raw, &format!("{{lease5}}:attached:{}", holder.lease())).await);
    let token = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("waiter woken by the revoke")
        .unwrap()
        .unwrap();
    assert!(token > guard.fencing_token());
    // The holder's session learns it was revoked.
    let end = tokio::time::timeout(Duration::from_secs(2), holder.done())
        .await
        .unwrap();
    assert_eq!(end, leasehold::SessionEnd::Revoked);
}

#[tokio::test]
async fn leases_lists_every_granted_lease_oldest_first() {
    let server = server();
    let client = client(&server, "lease6").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(client.grant(Duration::from_secs(30)).await.unwrap().id);
    }
    let s = client
        .session_with(leasehold::SessionOptions::new().label("worker-7"))
        .await
        .unwrap();
    ids.push(s.lease());
    let listed = client.leases().await.unwrap();
    assert_eq!(listed.iter().map(|l| l.id).collect::<Vec<_>>(), ids);
    assert_eq!(listed.last().unwrap().label, "worker-7");
    // Another namespace sees none of them.
    let other = support::client(&server, "lease6b").await;
    assert!(other.leases().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_ttls_are_rejected_before_io() {
    let server = server();
    let client = client(&server, "lease7").await;
    for ttl in [
        Duration::ZERO,
        Duration::from_millis(999),
        MAX_TTL + Duration::from_secs(1),
        Duration::MAX,
    ] {
        let err = client.grant(ttl).await.unwrap_err();
        assert!(matches!(err, Error::InvalidTtl { .. }), "{err}");
        let err = client
            .session_with(leasehold::SessionOptions::new().ttl(ttl))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidTtl { .. }), "{err}");
    }
    let raw = raw(&server).await;
    assert!(keys(&raw, "*").await.is_empty(), "nothing written");
}

#[tokio::test]
async fn negative_or_garbage_ttl_is_refused_by_the_script_too() {
    // The Rust API cannot express a negative TTL; the script refuses one anyway.
    let server = server();
    let raw = raw(&server).await;
    let id = "0190a5b2-0000-7000-8000-000000000002";
    for ttl in ["-5", "0", "abc", "1.5"] {
        let err = eval_script(
            &raw,
            "lease_grant",
            vec![
                "{ns}:rev".into(),
                "{ns}:leases".into(),
                format!("{{ns}}:lease:{id}"),
                format!("{{ns}}:attached:{id}"),
            ],
            vec![
                id.into(),
                ttl.into(),
                "c".into(),
                "h".into(),
                "1".into(),
                "".into(),
            ],
        )
        .await
        .unwrap_err();
        // Redis 6.2 puts the script's position in front.
        assert!(err.details().contains("LHARG "), "{err:?}");
    }
    assert!(keys(&raw, "*").await.is_empty());
}

/// Start a session of another client in namespace `ns` (its renewals sweep expired leases)
/// and wait until no key put with a lease is left there; returns the session.
async fn sweep_until_no_keys(
    server: &RedisServer,
    raw: &fred::clients::Client,
    ns: &str,
) -> leasehold::Session {
    let other = client_at(&server.url(), ns).await;
    let session = other
        .session_with(leasehold::SessionOptions::new().ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    let pattern = format!("{{{ns}}}:key:*");
    assert!(
        eventually(Duration::from_secs(15), || async {
            keys(raw, &pattern).await.is_empty()
        })
        .await,
        "the sweep released every key of {ns}"
    );
    session
}

/// Keys `k0000`.. put with `lease`, concurrently.
async fn put_keys(client: &leasehold::Client, lease: LeaseId, n: usize) {
    let puts = (0..n).map(|i| {
        let client = client.clone();
        async move { client.put(&format!("k{i:05}"), "v", Some(lease)).await }
    });
    for r in futures_util::future::join_all(puts).await {
        r.unwrap();
    }
}

#[tokio::test]
async fn revoke_releases_attachments_in_bounded_calls_and_all_of_them_before_returning() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "lease_many").await;
    let lease = client.grant(Duration::from_secs(60)).await.unwrap();
    put_keys(&client, lease.id, 1100).await;
    let info = client
        .time_to_live_with_keys(lease.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.attached_count, 1100);
    assert_eq!(info.attached.len(), leasehold::MAX_ATTACHMENTS_SHOWN);

    let before = script_calls(&raw).await;
    client.revoke(lease.id).await.unwrap();
    let after = script_calls(&raw).await;
    // 1100 attachments, at most 64 per call: many calls, all before revoke returns.
    assert!(after - before >= 1100 / 64, "{} calls", after - before);
    assert!(keys(&raw, "{lease_many}:key:*").await.is_empty());
    assert_eq!(zcard(&raw, "{lease_many}:keys").await, 0);
    assert_eq!(zcard(&raw, "{lease_many}:leases").await, 0);
    assert!(!exists(&raw, &format!("{{lease_many}}:attached:{}", lease.id)).await);
}

#[tokio::test]
async fn a_lease_is_dead_after_the_first_revoke_call_and_a_sweep_finishes_the_rest() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "lease_half").await;
    let lease = client.grant(Duration::from_secs(60)).await.unwrap();
    put_keys(&client, lease.id, 1000).await;
    let ns = "{lease_half}";
    let id = lease.id.to_string();
    // One call of the revoke script, as if the revoking process died right after it.
    let reply = eval_script(
        &raw,
        "lease_revoke",
        vec![
            format!("{ns}:rev"),
            format!("{ns}:leases"),
            format!("{ns}:lease:{id}"),
            format!("{ns}:attached:{id}"),
        ],
        vec![id.clone()],
    )
    .await
    .unwrap();
    let reply: Vec<i64> = fred::types::FromValue::from_value(reply).unwrap();
    assert_eq!(reply, vec![1, 0], "alive, and attachments left");
    let left = keys(&raw, "{lease_half}:key:*").await.len();
    assert!(left > 0 && left < 1000, "{left} keys left");
    // Dead already: nothing renews it, nothing shows it.
    assert!(matches!(
        client.keep_alive_once(lease.id).await,
        Err(Error::LeaseNotFound { .. })
    ));
    assert!(client.time_to_live(lease.id).await.unwrap().is_none());
    // Any client's renewals sweep the rest.
    let _sweeper = sweep_until_no_keys(&server, &raw, "lease_half").await;
    assert_eq!(zcard(&raw, "{lease_half}:keys").await, 0);
    assert!(!exists(&raw, &format!("{ns}:attached:{id}")).await);
    assert_eq!(
        zcard(&raw, "{lease_half}:leases").await,
        1,
        "only the new session's"
    );
}

#[tokio::test]
async fn an_expired_lease_with_more_attachments_than_a_call_releases_is_swept_entirely() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "lease_exp").await;
    let lease = client.grant(Duration::from_secs(1)).await.unwrap();
    put_keys(&client, lease.id, 1000).await;
    // Nobody renews it; a session of another client sweeps it once it expired.
    let _sweeper = sweep_until_no_keys(&server, &raw, "lease_exp").await;
    assert_eq!(zcard(&raw, "{lease_exp}:keys").await, 0);
    assert!(!exists(&raw, &format!("{{lease_exp}}:attached:{}", lease.id)).await);
}

#[tokio::test]
async fn keep_alive_renews_every_third_of_the_ttl_and_ends_when_the_lease_goes() {
    use futures_util::StreamExt;
    let server = server();
    let client = client(&server, "lease_ka").await;
    let lease = client.grant(Duration::from_secs(1)).await.unwrap();
    let mut renewals = Box::pin(client.keep_alive(lease.id));
    let started = std::time::Instant::now();
    // Well past the TTL: alive only because the stream renews it.
    while started.elapsed() < Duration::from_millis(2500) {
        let ttl = tokio::time::timeout(Duration::from_secs(2), renewals.next())
            .await
            .expect("a renewal every TTL/3")
            .expect("the stream goes on")
            .unwrap();
        assert_eq!(ttl, Duration::from_secs(1));
    }
    assert!(client.time_to_live(lease.id).await.unwrap().is_some());
    client.revoke(lease.id).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(2), renewals.next())
        .await
        .unwrap()
        .expect("the loss is yielded");
    assert!(matches!(end, Err(Error::LeaseNotFound { .. })), "{end:?}");
    assert!(renewals.next().await.is_none(), "and the stream ends");
}
