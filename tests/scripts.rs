//! Script loading (the function library, NOSCRIPT and "function not found" paths), Redis
//! restarts, and foreign data at leasehold's keys.

mod support;

use std::time::Duration;

use fred::prelude::{HashesInterface, KeysInterface};
use leasehold::Error;
use support::*;

#[tokio::test]
async fn operations_survive_script_flush() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "f1").await;
    let session = client.session().await.unwrap();
    let t1 = session.mutex("a").unwrap().lock().await.unwrap();
    let before = t1.fencing_token();
    t1.unlock().await.unwrap();
    flush_scripts(&raw).await;
    let t2 = session.mutex("a").unwrap().lock().await.unwrap();
    assert!(t2.fencing_token() > before);
    assert!(t2.is_owner().await.unwrap());
    t2.unlock().await.unwrap();
    flush_scripts(&raw).await;
    // The supervisor's renewals reload too: the session stays alive across renewals.
    let short = client
        .session_with(leasehold::SessionOptions::new().ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    flush_scripts(&raw).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(short.is_valid());
    assert!(client.leases().await.unwrap().len() >= 2);
}

/// After a SCRIPT FLUSH every call in flight meets NOSCRIPT at once; the client loads each
/// script once, not once per call (after a failover that would be every task of every
/// process compiling the same script).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_after_a_script_flush_load_each_script_once() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "f8").await;
    let session = client.session().await.unwrap();
    lock_and_unlock(&session, "warm").await;
    flush_scripts(&raw).await;
    let _: () = cmd(&raw, "CONFIG", &["RESETSTAT"]).await.unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let mutex = session.mutex(&format!("m{i}")).unwrap();
            tokio::spawn(async move { mutex.lock().await?.unlock().await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (loads, _) = command_calls(&raw, "script|load").await;
    let (library_loads, _) = command_calls(&raw, "function|load").await;
    if has_functions(&raw).await {
        // The function library, once.
        assert_eq!((library_loads, loads), (1, 0));
    } else {
        // mutex_acquire, mutex_release and (for the calls that queued behind the first ones)
        // mutex_batch, once each.
        assert!((2..=3).contains(&loads), "{loads} script loads");
    }
}

/// Where the server has functions (Redis 7, Valkey) every call goes by `FCALL` of the
/// library, else by EVALSHA.
#[tokio::test]
async fn calls_go_by_fcall_where_the_server_has_functions() {
    let server = server();
    let raw = raw(&server).await;
    let functions = has_functions(&raw).await;
    let client = client(&server, "fn1").await;
    assert_eq!(client.uses_functions(), functions);
    let _: () = cmd(&raw, "CONFIG", &["RESETSTAT"]).await.unwrap();
    let session = client.session().await.unwrap();
    let guard = session.mutex("m").unwrap().lock().await.unwrap();
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
    let (fcalls, evalshas) = (
        command_calls(&raw, "fcall").await.0,
        command_calls(&raw, "evalsha").await.0,
    );
    if functions {
        assert_eq!((fcalls >= 4, evalshas), (true, 0));
    } else {
        assert_eq!((fcalls, evalshas >= 4), (0, true));
    }
}

/// Two leasehold versions share a server during a rolling deploy: each calls its own library
/// (named by the digest of its scripts), and loading one leaves the other alone.
#[tokio::test]
async fn another_versions_library_is_left_alone() {
    let server = server();
    let raw = raw(&server).await;
    if !has_functions(&raw).await {
        return;
    }
    let other = "#!lua name=leasehold_0123456789ab\n\
                 redis.register_function('lh_0123456789ab_version', function() return 'old' end)";
    let _: String = cmd(&raw, "FUNCTION", &["LOAD", other]).await.unwrap();
    let client = client(&server, "fn2").await;
    assert!(client.uses_functions());
    let session = client.session().await.unwrap();
    lock_and_unlock(&session, "m").await;
    let list: fred::types::Value = cmd(&raw, "FUNCTION", &["LIST"]).await.unwrap();
    let list = format!("{list:?}");
    assert!(list.contains("leasehold_0123456789ab"), "{list}");
    assert!(list.contains(leasehold::function_library_name()), "{list}");
    let old: String = cmd(&raw, "FCALL", &["lh_0123456789ab_version", "0"])
        .await
        .unwrap();
    assert_eq!(old, "old");
}

/// A library lost while a client runs (a restart without persistence, `FUNCTION FLUSH`) is
/// loaded again once, and the client keeps calling it.
#[tokio::test]
async fn a_lost_library_is_loaded_again() {
    let server = server();
    let raw = raw(&server).await;
    if !has_functions(&raw).await {
        return;
    }
    let client = client(&server, "fn3").await;
    let session = client.session().await.unwrap();
    let _: String = cmd(&raw, "FUNCTION", &["FLUSH"]).await.unwrap();
    let _: () = cmd(&raw, "CONFIG", &["RESETSTAT"]).await.unwrap();
    for _ in 0..3 {
        lock_and_unlock(&session, "m").await;
    }
    assert!(client.uses_functions());
    assert_eq!(command_calls(&raw, "function|load").await.0, 1);
    assert_eq!(command_calls(&raw, "evalsha").await.0, 0);
}

#[tokio::test]
async fn redis_restart_loses_the_lease_but_tokens_keep_rising() {
    let mut server = server();
    let client = client(&server, "f2").await;
    let session = client
        .session_with(leasehold::SessionOptions::new().ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    let g = session.mutex("a").unwrap().lock().await.unwrap();
    let before = g.fencing_token();
    server.restart().unwrap(); // empty: all data and scripts gone
    let end = tokio::time::timeout(Duration::from_secs(4), session.done())
        .await
        .expect("session notices the restart");
    assert!(end.is_loss(), "{end:?}");
    drop(g);
    // A new session works on the fresh server (scripts reloaded), and the fencing token is
    // still greater than before the restart (revision floor = server time in µs).
    let mut fresh = None;
    for _ in 0..50 {
        match client.session().await {
            Ok(s) => {
                fresh = Some(s);
                break;
            }
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    let fresh = fresh.expect("session after restart");
    let g = fresh.mutex("a").unwrap().lock().await.unwrap();
    assert!(
        g.fencing_token() > before,
        "{} <= {before}",
        g.fencing_token()
    );
    // The doorbell subscription came back too: a handoff is rung, not found by timeout
    // (the holder's lease has 60 s left).
    let other = client.session().await.unwrap();
    let m = other.mutex("a").unwrap();
    let waiter = spawn_lock(m);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = g.fencing_token();
    g.unlock().await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("handoff rung after the restart")
        .unwrap()
        .unwrap();
    assert!(next > t);
}

/// Everything in Redis, as (key, type, dump of the value), to compare before and after.
async fn snapshot(raw: &fred::clients::Client) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for key in keys(raw, "*").await {
        let kind: String = cmd(raw, "TYPE", &[&key]).await.unwrap();
        let dump: Option<Vec<u8>> = raw.dump(&key).await.unwrap();
        out.push((key, kind, format!("{dump:?}")));
    }
    out
}

#[tokio::test]
async fn foreign_key_of_wrong_type_is_a_typed_error_and_nothing_changes() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "f3").await;
    let session = client.session().await.unwrap();
    // Someone else's data, inside and outside the namespace.
    let _: () = raw
        .set("{f3}:mutex:taken", "not a queue", None, None, false)
        .await
        .unwrap();
    let _: () = raw.set("unrelated", "x", None, None, false).await.unwrap();
    let before = snapshot(&raw).await;
    let err = session.mutex("taken").unwrap().lock().await.unwrap_err();
    match &err {
        Error::WrongType {
            key,
            found,
            expected,
            ..
        } => {
            assert_eq!(key, "{f3}:mutex:taken");
            assert_eq!(found, "string");
            assert_eq!(expected, "zset");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("{f3}:mutex:taken"));
    let err = session
        .mutex("taken")
        .unwrap()
        .try_lock()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongType { .. }), "{err}");
    tokio::time::sleep(Duration::from_millis(100)).await; // let background withdrawals run
    assert_eq!(snapshot(&raw).await, before, "nothing modified");
    assert!(session.is_valid());
}

#[tokio::test]
async fn wrong_types_at_internal_keys_are_typed_errors() {
    let server = server();
    let raw = raw(&server).await;
    // Registry of the wrong type: no session can be opened, nothing is written.
    let _: () = raw
        .set("{f4}:leases", "x", None, None, false)
        .await
        .unwrap();
    let client = client(&server, "f4").await;
    let before = snapshot(&raw).await;
    let err = client.session().await.unwrap_err();
    assert!(
        matches!(err, Error::WrongType { ref key, .. } if key == "{f4}:leases"),
        "{err}"
    );
    assert!(matches!(
        client.leases().await,
        Err(Error::Redis(_)) | Err(Error::WrongType { .. })
    ));
    assert_eq!(snapshot(&raw).await, before);

    // Revision counter holding a hash, or garbage.
    let _: () = raw.hset("{f5}:rev", ("a", "b")).await.unwrap();
    let c5 = support::client(&server, "f5").await;
    let err = c5.session().await.unwrap_err();
    assert!(
        matches!(err, Error::WrongType { ref key, .. } if key == "{f5}:rev"),
        "{err}"
    );
    let _: () = raw
        .set("{f6}:rev", "garbage", None, None, false)
        .await
        .unwrap();
    let c6 = support::client(&server, "f6").await;
    let err = c6.session().await.unwrap_err();
    assert!(
        matches!(err, Error::CorruptData { ref key, .. } if key == "{f6}:rev"),
        "{err}"
    );
}

#[tokio::test]
async fn garbage_in_a_lease_hash_is_not_renewed_and_does_not_panic() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "f7").await;
    let lease = client.grant(Duration::from_secs(10)).await.unwrap();
    let key = format!("{{f7}}:lease:{}", lease.id);
    let _: () = raw.hset(&key, ("ttl", "zzz")).await.unwrap();
    assert!(matches!(
        client.keep_alive_once(lease.id).await,
        Err(Error::LeaseNotFound { .. })
    ));
    let info = client.time_to_live(lease.id).await.unwrap().unwrap();
    assert_eq!(
        info.granted_ttl,
        Duration::ZERO,
        "unreadable TTL shown as zero"
    );
    // A session on it is refused rather than trusted.
    let err = client
        .session_with(leasehold::SessionOptions::new().lease(lease.id))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { .. }), "{err}");
    // Attachment set of the wrong type: locking is refused, nothing changes.
    let s = client.session().await.unwrap();
    let akey = format!("{{f7}}:attached:{}", s.lease());
    let _: () = raw.set(&akey, "x", None, None, false).await.unwrap();
    let before = snapshot(&raw).await;
    let err = s.mutex("m").unwrap().lock().await.unwrap_err();
    assert!(
        matches!(err, Error::WrongType { ref key, .. } if *key == akey),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = snapshot(&raw).await;
    // Only the registry score moved (the supervisor may have renewed in between).
    let strip = |v: Vec<(String, String, String)>| {
        v.into_iter()
            .filter(|(k, _, _)| k != "{f7}:leases" && !k.starts_with("{f7}:lease:"))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(after), strip(before));
    assert_eq!(s.state(), leasehold::SessionState::Alive);
}

#[tokio::test]
async fn bad_namespace_is_rejected_before_io() {
    let server = server();
    for ns in ["", "a b", "{x}", &"n".repeat(65)] {
        let err = leasehold::Client::builder()
            .url(server.url())
            .namespace(ns)
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidNamespace { .. }), "{err}");
    }
    let err = leasehold::Client::connect("not a url").await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[tokio::test]
async fn unreachable_redis_is_a_clear_error() {
    let mut server = server();
    let url = server.url();
    server.kill();
    let err = leasehold::Client::builder()
        .url(url)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
}
