//! Shared test support: a throwaway redis-server per test, a leasehold client on it, and a raw
//! fred client to inspect what leasehold left in Redis.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, KeysInterface, LuaInterface};
use leasehold::Client;
pub use leasehold_testing::RedisServer;

pub mod tls;

pub fn server() -> RedisServer {
    RedisServer::start().unwrap_or_else(|e| panic!("cannot start redis-server for tests: {e}"))
}

/// A replica of `primary`, in sync when this returns.
pub fn start_replica(primary: &RedisServer) -> RedisServer {
    let port = primary.port().to_string();
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]).expect("start a replica");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replica
        .command(&["INFO", "replication"])
        .is_ok_and(|i| i.contains("master_link_status:up"))
    {
        assert!(Instant::now() < deadline, "replica never synced");
        std::thread::sleep(Duration::from_millis(20));
    }
    replica
}

pub async fn client(server: &RedisServer, namespace: &str) -> Client {
    client_at(&server.url(), namespace).await
}

/// A client on `url` (a proxy in front of a test server, say), as [`client`] makes them.
pub async fn client_at(url: &str, namespace: &str) -> Client {
    Client::builder()
        .url(url)
        .namespace(namespace)
        .command_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("connect")
}

/// A plain fred client for looking at Redis state directly.
pub async fn raw(server: &RedisServer) -> fred::clients::Client {
    let config = fred::types::config::Config::from_url(&server.url()).unwrap();
    let c = fred::clients::Client::new(config, None, None, None);
    c.init().await.expect("raw connect");
    c
}

/// Run any command, e.g. `cmd(&raw, "ZCARD", &["k"])`.
pub async fn cmd<R: fred::types::FromValue>(
    raw: &fred::clients::Client,
    name: &'static str,
    args: &[&str],
) -> Result<R, fred::error::Error> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    raw.custom(
        fred::types::CustomCommand::new_static(name, fred::types::ClusterHash::FirstKey, false),
        args,
    )
    .await
}

/// All keys matching `pattern`, sorted.
pub async fn keys(raw: &fred::clients::Client, pattern: &str) -> Vec<String> {
    let mut k: Vec<String> = cmd(raw, "KEYS", &[pattern]).await.unwrap();
    k.sort();
    k
}

pub async fn zcard(raw: &fred::clients::Client, key: &str) -> u64 {
    cmd(raw, "ZCARD", &[key]).await.unwrap()
}

pub async fn exists(raw: &fred::clients::Client, key: &str) -> bool {
    let n: u64 = raw.exists(key).await.unwrap();
    n == 1
}

/// Run a leasehold script straight from `lua/`, as the library does (preludes + operation).
pub async fn eval_script(
    raw: &fred::clients::Client,
    name: &str,
    keys: Vec<String>,
    args: Vec<String>,
) -> Result<fred::types::Value, fred::error::Error> {
    let lua = concat!(env!("CARGO_MANIFEST_DIR"), "/lua");
    let read = |path: &str| std::fs::read_to_string(path).unwrap();
    // Scripts live in one folder per area (lua/lock/, lua/lease/, ...).
    let script = std::fs::read_dir(lua)
        .unwrap()
        .map(|dir| dir.unwrap().path().join(format!("{name}.lua")))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("no lua/*/{name}.lua"));
    // The lean scripts (src/redis/scripts.rs) leave the queue prelude out; with it they run
    // the same.
    let source = read(&format!("{lua}/prelude/core.lua"))
        + &read(&format!("{lua}/prelude/queues.lua"))
        + "begin(KEYS) begin_queues()\n"
        + &read(script.to_str().unwrap());
    raw.eval(source, keys, args).await
}

/// Whether the server has sharded pub/sub (Redis >= 7; leasehold publishes its doorbell
/// messages with SPUBLISH there, PUBLISH before).
pub async fn sharded_pubsub(raw: &fred::clients::Client) -> bool {
    let info: String = cmd(raw, "INFO", &["server"]).await.unwrap();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("0");
    version
        .split('.')
        .next()
        .and_then(|major| major.trim().parse::<u32>().ok())
        .is_some_and(|major| major >= 7)
}

/// Subscribe `listener` to a doorbell channel the way leasehold publishes on it.
pub async fn subscribe_doorbell(listener: &fred::clients::Client, channel: String) {
    use fred::prelude::PubsubInterface;
    if sharded_pubsub(listener).await {
        listener.ssubscribe(channel).await.unwrap();
    } else {
        listener.subscribe(channel).await.unwrap();
    }
}

/// Publish `msg` on a doorbell channel the way leasehold does.
pub async fn publish_doorbell(raw: &fred::clients::Client, channel: &str, msg: &str) {
    let command = if sharded_pubsub(raw).await {
        "SPUBLISH"
    } else {
        "PUBLISH"
    };
    cmd::<i64>(raw, command, &[channel, msg]).await.unwrap();
}

/// Script calls that ran since the last `CONFIG RESETSTAT`: `FCALL` and `EVALSHA` alike (leasehold
/// calls its function library where the server has functions). A call that found the script or
/// library missing failed, and was sent again: it is not counted.
pub async fn script_calls(raw: &fred::clients::Client) -> u64 {
    let mut ran = 0;
    for command in ["fcall", "evalsha"] {
        let (calls, failed) = command_calls(raw, command).await;
        ran += calls - failed;
    }
    ran
}

/// What a restart or failover to an empty replica does to leasehold's code in Redis: `SCRIPT
/// FLUSH`, and `FUNCTION FLUSH` where the server has functions.
pub async fn flush_scripts(raw: &fred::clients::Client) {
    let _: () = cmd(raw, "SCRIPT", &["FLUSH"]).await.unwrap();
    if has_functions(raw).await {
        let _: () = cmd(raw, "FUNCTION", &["FLUSH"]).await.unwrap();
    }
}

/// Whether the server has Redis functions (Redis 7, Valkey): leasehold then uses `FCALL`.
pub async fn has_functions(raw: &fred::clients::Client) -> bool {
    cmd::<fred::types::Value>(raw, "FUNCTION", &["LIST"])
        .await
        .is_ok()
}

/// `(calls, failed_calls)` of `command` from `INFO commandstats` (`"evalsha"`,
/// `"script|load"`), `(0, 0)` when it was never called since the last `CONFIG RESETSTAT`.
pub async fn command_calls(raw: &fred::clients::Client, command: &str) -> (u64, u64) {
    let info: String = cmd(raw, "INFO", &["commandstats"]).await.unwrap();
    // Redis 6.2 counts SCRIPT LOAD as `script`, 7.0 as `script|load`.
    let command = match command {
        "script|load" if !info.contains("cmdstat_script|") => "script",
        c => c,
    };
    let prefix = format!("cmdstat_{command}:");
    let Some(line) = info.lines().find_map(|l| l.strip_prefix(prefix.as_str())) else {
        return (0, 0);
    };
    let field = |name: &str| -> u64 {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map_or(0, |n| n.parse().unwrap())
    };
    (field("calls"), field("failed_calls"))
}

/// Poll `cond` every 10 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait for `mutex` in a task; the task returns the fencing token it got.
pub fn spawn_lock(mutex: leasehold::Mutex) -> tokio::task::JoinHandle<leasehold::Result<u64>> {
    tokio::spawn(async move { mutex.lock().await.map(|g| g.fencing_token()) })
}

/// Take mutex `name` in `session` and release it (so its scripts have run once).
pub async fn lock_and_unlock(session: &leasehold::Session, name: &str) {
    let guard = session.mutex(name).unwrap().lock().await.unwrap();
    guard.unlock().await.unwrap();
}

/// An unlock whose connection is cut after Redis ran it but before the reply came back: the
/// caller gets a transient error (it must not be sent again: a second run would answer "not
/// held" for the lock it had just released), the lock is free, and the client goes on working
/// on its new connections. `client` talks to Redis through `proxy`.
pub async fn assert_an_unlock_cut_in_flight_is_not_sent_twice(
    client: &Client,
    raw: &fred::clients::Client,
    proxy: &leasehold_testing::Proxy,
) {
    let queue = format!("{{{}}}:mutex:cut", client.namespace());
    let session = client.session().await.unwrap();
    let guard = session.mutex("cut").unwrap().lock().await.unwrap();
    // Every chunk waits 300 ms in the proxy, each way: the release reaches Redis after 300 ms
    // and its reply would come back after 600 ms.
    proxy.delay(Duration::from_millis(300));
    let unlock = tokio::spawn(guard.unlock());
    assert!(
        eventually(Duration::from_secs(3), || async {
            zcard(raw, &queue).await == 0
        })
        .await,
        "the release ran"
    );
    proxy.cut();
    proxy.heal();
    let result = tokio::time::timeout(Duration::from_secs(10), unlock)
        .await
        .expect("unlock returned")
        .unwrap();
    match result {
        Err(e) => assert!(e.is_transient(), "{e}"),
        Ok(()) => panic!("the reply was cut off, yet the unlock reported success"),
    }
    assert_eq!(zcard(raw, &queue).await, 0);
    lock_and_unlock(&session, "cut").await;
}

/// Start `session.close()` while `proxy` (between its client and Redis) moves no bytes, drop
/// it unfinished, then cut the proxy's connections so that the revoke it sent is lost, and
/// heal. The session reads closed; nothing reached Redis.
pub async fn close_losing_its_revoke(
    proxy: &leasehold_testing::Proxy,
    session: &leasehold::Session,
) {
    proxy.blackhole();
    let dropped = tokio::time::timeout(Duration::from_millis(300), session.close()).await;
    assert!(dropped.is_err(), "close could not finish: {dropped:?}");
    assert_eq!(
        session.state(),
        leasehold::SessionState::Ended(leasehold::SessionEnd::Closed)
    );
    proxy.cut();
    proxy.heal();
}
