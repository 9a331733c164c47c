//! Keys put with a lease against a real redis-server.

mod support;

use std::time::Duration;

use leasehold::{Attachment, Error, SessionOptions};
use support::*;

#[tokio::test]
async fn a_key_put_with_a_lease_goes_when_the_lease_is_revoked() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "k1").await;
    let s = client.session().await.unwrap();
    let rev = s.put("svc/a", "10.0.0.1:80").await.unwrap();
    let kv = client.get("svc/a").await.unwrap().unwrap();
    assert_eq!(kv.value, "10.0.0.1:80");
    assert_eq!(kv.lease, Some(s.lease()));
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (rev, rev, 1)
    );
    let info = client
        .time_to_live_with_keys(s.lease())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        info.attached,
        vec![Attachment::Key("{k1}:key:svc/a".into())]
    );

    client.revoke(s.lease()).await.unwrap();
    assert_eq!(client.get("svc/a").await.unwrap(), None);
    assert!(client
        .get_prefix("svc/", 10, None)
        .await
        .unwrap()
        .kvs
        .is_empty());
    assert!(keys(&raw, "{k1}:key:*").await.is_empty());
    assert_eq!(zcard(&raw, "{k1}:keys").await, 0);
    assert!(matches!(
        s.put("svc/b", "x").await,
        Err(Error::SessionLost { .. })
    ));
}

#[tokio::test]
async fn a_key_of_an_orphaned_session_goes_after_its_ttl() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "k2").await;
    let ttl = Duration::from_secs(1);
    let dying = client
        .session_with(SessionOptions::new().ttl(ttl))
        .await
        .unwrap();
    let _live = client
        .session_with(SessionOptions::new().ttl(ttl))
        .await
        .unwrap(); // its renewals sweep
    dying.put("members/dying", "x").await.unwrap();
    dying.orphan();
    // Reads as absent as soon as the lease expires...
    assert!(
        eventually(Duration::from_secs(2), || async {
            client.get("members/dying").await.unwrap().is_none()
        })
        .await
    );
    // ...and is deleted by the next sweep (one renewal interval later).
    assert!(
        eventually(Duration::from_secs(2), || async {
            keys(&raw, "{k2}:key:*").await.is_empty()
        })
        .await
    );
    assert_eq!(zcard(&raw, "{k2}:keys").await, 0);
}

#[tokio::test]
async fn get_prefix_is_ordered_bounded_and_pages() {
    let server = server();
    let client = client(&server, "k3").await;
    for name in ["b/2", "a/1", "b/1", "b/3", "b", "bb/1", "c"] {
        client.put(name, name, None).await.unwrap();
    }
    let page = client.get_prefix("b/", 2, None).await.unwrap();
    let names: Vec<_> = page.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(names, ["b/1", "b/2"]);
    assert!(page.more);
    let page = client.get_prefix("b/", 2, Some("b/2")).await.unwrap();
    let names: Vec<_> = page.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(names, ["b/3"]);
    assert!(!page.more);
    let all = client.get_prefix("", 100, None).await.unwrap();
    assert_eq!(all.kvs.len(), 7);
    assert!(all.kvs.windows(2).all(|w| w[0].key < w[1].key));
    assert!(matches!(
        client.get_prefix("", 0, None).await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn put_without_a_lease_stays_and_revisions_follow_etcd() {
    let server = server();
    let client = client(&server, "k4").await;
    let r1 = client.put("cfg", "1", None).await.unwrap();
    let r2 = client.put("cfg", "2", None).await.unwrap();
    assert!(r2 > r1);
    let kv = client.get("cfg").await.unwrap().unwrap();
    assert_eq!(kv.value, "2");
    assert_eq!(kv.lease, None);
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r2, 2)
    );
    assert!(client.delete("cfg").await.unwrap());
    assert!(!client.delete("cfg").await.unwrap());
    assert_eq!(client.get("cfg").await.unwrap(), None);
}

#[tokio::test]
async fn moving_a_key_to_another_lease_detaches_it_from_the_first() {
    let server = server();
    let client = client(&server, "k5").await;
    let a = client.session().await.unwrap();
    let b = client.session().await.unwrap();
    a.put("k", "from a").await.unwrap();
    b.put("k", "from b").await.unwrap();
    client.revoke(a.lease()).await.unwrap();
    let kv = client
        .get("k")
        .await
        .unwrap()
        .expect("still there: it belongs to b now");
    assert_eq!(kv.value, "from b");
    assert_eq!(kv.lease, Some(b.lease()));
    let bad = leasehold::LeaseId::from(uuid::Uuid::now_v7());
    assert!(matches!(
        client.put("k", "x", Some(bad)).await,
        Err(Error::LeaseNotFound { .. })
    ));
}

#[tokio::test]
async fn oversized_values_bad_names_and_wrong_types_are_typed_errors() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "k6").await;
    let huge = "v".repeat(leasehold::MAX_VALUE_LEN + 1);
    let err = client.put("k", &huge, None).await.unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
    assert!(matches!(
        client.put("", "v", None).await,
        Err(Error::InvalidName { .. })
    ));
    let _: () = cmd(&raw, "SET", &["{k6}:key:taken", "foreign"])
        .await
        .unwrap();
    let err = client.put("taken", "v", None).await.unwrap_err();
    assert!(
        matches!(err, Error::WrongType { ref key, .. } if key == "{k6}:key:taken"),
        "{err}"
    );
    assert!(matches!(
        client.get("taken").await,
        Err(Error::WrongType { .. })
    ));
    let v: String = cmd(&raw, "GET", &["{k6}:key:taken"]).await.unwrap();
    assert_eq!(v, "foreign");
    assert_eq!(zcard(&raw, "{k6}:keys").await, 0);
}

/// An index full of entries whose key is gone (deleted or evicted behind leasehold's back):
/// get_prefix still returns exactly the live keys, reads the index in bounded steps, and
/// removes the dead entries on the way.
#[tokio::test]
async fn get_prefix_over_many_dead_index_entries_returns_the_live_ones_and_prunes() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "k9").await;
    client.put("d/0-first", "a", None).await.unwrap();
    client.put("d/zz-last", "b", None).await.unwrap();
    for (size, limit) in [(10_000u32, 10usize), (100_000, 1)] {
        let script = "for i = 1, tonumber(ARGV[1]) do \
                      redis.call('ZADD', KEYS[1], 0, 'd/5-dead-' .. i) end";
        let _: fred::types::Value =
            cmd(&raw, "EVAL", &[script, "1", "{k9}:keys", &size.to_string()])
                .await
                .unwrap();
        assert_eq!(zcard(&raw, "{k9}:keys").await, u64::from(size) + 2);
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = client
                .get_prefix("d/", limit, after.as_deref())
                .await
                .unwrap();
            keys.extend(page.kvs.iter().map(|kv| kv.key.clone()));
            after = page.kvs.last().map(|kv| kv.key.clone());
            if !page.more {
                break;
            }
        }
        assert_eq!(keys, ["d/0-first", "d/zz-last"], "{size} dead entries");
        assert_eq!(zcard(&raw, "{k9}:keys").await, 2, "dead entries pruned");
    }
}

/// A page stops at about MAX_PAGE_BYTES of keys and values, whatever the limit; paging reads
/// the rest.
#[tokio::test]
async fn get_prefix_pages_are_bounded_in_bytes() {
    let server = server();
    let client = client(&server, "k10").await;
    let big = "v".repeat(leasehold::MAX_VALUE_LEN);
    for i in 0..12 {
        client
            .put(&format!("big/{i:02}"), &big, None)
            .await
            .unwrap();
    }
    let first = client.get_prefix("big/", 100, None).await.unwrap();
    let bytes: usize = first
        .kvs
        .iter()
        .map(|kv| kv.key.len() + kv.value.len())
        .sum();
    assert!(first.more);
    assert!(
        bytes < leasehold::MAX_PAGE_BYTES + leasehold::MAX_VALUE_LEN + 64,
        "{bytes}"
    );
    let last = first.kvs.last().unwrap().key.clone();
    let rest = client.get_prefix("big/", 100, Some(&last)).await.unwrap();
    assert_eq!(first.kvs.len() + rest.kvs.len(), 12);
    assert!(!rest.more);
}
