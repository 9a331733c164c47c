//! A Redis that can evict lock keys, or that is out of memory, against a real redis-server.

mod support;

use std::time::Duration;

use leasehold::{Client, Error, SessionOptions};
use support::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn config_set(server: &RedisServer, name: &str, value: &str) {
    let reply = server.command(&["CONFIG", "SET", name, value]).unwrap();
    assert_eq!(reply, "+OK\r\n", "CONFIG SET {name} {value}");
}

async fn build(server: &RedisServer, allow: bool) -> leasehold::Result<Client> {
    Client::builder()
        .url(server.url())
        .namespace("evict")
        .allow_eviction(allow)
        .build()
        .await
}

/// Every policy but noeviction can evict a lock's queue entry (two holders) or a lease hash:
/// the client refuses such a server, naming the policy, unless told to accept it.
#[tokio::test]
async fn a_server_that_can_evict_lock_keys_is_refused_unless_allowed() {
    let server = server();
    for policy in ["allkeys-lru", "volatile-lfu"] {
        config_set(&server, "maxmemory-policy", policy);
        let err = build(&server, false).await.unwrap_err();
        assert!(
            matches!(err, Error::EvictionPolicy { policy: ref p, .. } if p == policy),
            "{err}"
        );
        assert!(
            err.to_string().contains("noeviction"),
            "names the fix: {err}"
        );
        let client = build(&server, true).await.unwrap();
        assert_eq!(client.maxmemory_policy().as_deref(), Some(policy));
        client.session().await.unwrap().close().await.unwrap();
    }
    config_set(&server, "maxmemory-policy", "noeviction");
    let client = build(&server, false).await.unwrap();
    assert_eq!(client.maxmemory_policy().as_deref(), Some("noeviction"));
}

/// A policy set while the client runs (`CONFIG SET`, a failover to a server configured
/// otherwise) is seen by the next renewal: new sessions are refused from then on.
#[tokio::test]
async fn a_policy_set_at_run_time_is_seen_by_the_next_renewal() {
    let server = server();
    let client = build(&server, false).await.unwrap();
    // A 1 s TTL renews every ~333 ms.
    let _renewed = client
        .session_with(SessionOptions::new().ttl(secs(1)))
        .await
        .unwrap();
    config_set(&server, "maxmemory-policy", "allkeys-lfu");
    let refused = eventually(secs(3), || async {
        matches!(
            client.session().await,
            Err(Error::EvictionPolicy { ref policy, .. }) if policy == "allkeys-lfu"
        )
    })
    .await;
    assert!(refused, "a new session was still granted");
    assert_eq!(client.maxmemory_policy().as_deref(), Some("allkeys-lfu"));
}

/// Out of memory under noeviction: a call Redis refuses (here a lease grant, whose first write
/// needs memory) fails with a typed error and writes nothing; it works once memory is back.
#[tokio::test]
async fn out_of_memory_is_a_typed_error_and_writes_nothing() {
    let server = server();
    let raw = raw(&server).await;
    let client = build(&server, false).await.unwrap();
    // Any limit below what Redis already uses: every write that needs memory is refused.
    config_set(&server, "maxmemory", "1");
    let err = client.session().await.unwrap_err();
    assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
    assert!(!err.is_transient());
    assert!(
        keys(&raw, "{evict}:lease:*").await.is_empty(),
        "nothing written"
    );
    config_set(&server, "maxmemory", "0");
    let session = client.session().await.unwrap();
    let guard = session.mutex("m").unwrap().lock().await.unwrap();
    guard.unlock().await.unwrap();
}

/// The CLI refuses such a server with a message naming the policy (not "cannot reach Redis"),
/// and `--allow-eviction` accepts it.
#[tokio::test]
async fn the_cli_names_the_policy_and_takes_allow_eviction() {
    let server = server();
    config_set(&server, "maxmemory-policy", "allkeys-random");
    let run = |extra: &'static [&'static str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_leasehold"));
        c.env("REDIS_URL", server.url())
            .env_remove("LEASEHOLD_ALLOW_EVICTION")
            .args(["--namespace", "evict"])
            .args(extra)
            .args(["lease", "list"]);
        c
    };
    let out = run(&[]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("maxmemory-policy is allkeys-random"),
        "{stderr}"
    );
    let out = run(&["--allow-eviction"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // Accepted, and still said.
    assert!(
        stderr.contains("warning: Redis maxmemory-policy is allkeys-random"),
        "{stderr}"
    );
}
