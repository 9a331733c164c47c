//! The least-privilege ACL user of docs/acl.md against a real redis-server: its one line is
//! enough for everything leasehold does in its namespace (the server logs no denial), and it
//! confines the user to that namespace.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fred::interfaces::{ClientLike, PubsubInterface};
use futures_util::StreamExt;
use leasehold::{Client, Error, QueueKind, SessionOptions};
use support::*;

const DOC: &str = include_str!("../docs/acl.md");
const PASSWORD: &str = "s3cret-pw";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The one `ACL SETUSER` line of docs/acl.md.
fn documented_line() -> &'static str {
    let lines: Vec<&str> = DOC
        .lines()
        .filter(|l| l.starts_with("ACL SETUSER "))
        .collect();
    assert_eq!(lines.len(), 1, "docs/acl.md has one ACL SETUSER line");
    lines[0]
}

/// The grants of sharded pub/sub (Redis >= 7).
const SHARDED: [&str; 3] = ["+ssubscribe", "+sunsubscribe", "+spublish"];
/// What Redis 6.2 does not know either (docs/acl.md says to leave it out there).
const FUNCTIONS: [&str; 1] = ["+fcall"];

/// The documented line for `user` in namespace `ns`, as words.
fn acl_words(user: &str, ns: &str) -> Vec<String> {
    documented_line()
        .replace("<user>", user)
        .replace("<password>", PASSWORD)
        .replace("<ns>", ns)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The documented line for `user` in namespace `ns`, without `grant`.
fn acl_words_without(user: &str, ns: &str, grant: &str) -> Vec<String> {
    acl_words(user, ns)
        .into_iter()
        .filter(|w| w != grant)
        .collect()
}

fn setuser(server: &RedisServer, words: &[String]) {
    // Redis 6.2 has no sharded pub/sub and no functions, and refuses to grant them
    // (docs/acl.md says so).
    let info = server.command(&["INFO", "server"]).unwrap();
    let v6 = info.contains("redis_version:6.");
    let words: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .filter(|w| !(v6 && (SHARDED.contains(w) || FUNCTIONS.contains(w))))
        .collect();
    let reply = server.command(&words).unwrap();
    assert_eq!(reply, "+OK\r\n", "{words:?}");
}

/// Create `user` for namespace `ns` with exactly the documented line.
fn create_user(server: &RedisServer, user: &str, ns: &str) {
    setuser(server, &acl_words(user, ns));
}

/// `(reason, object)` of each ACL LOG entry, e.g. `("command", "info")`, `("key", "{a}:x")`.
fn acl_log(server: &RedisServer) -> Vec<(String, String)> {
    let raw = server.command(&["ACL", "LOG"]).unwrap();
    // Each entry is a flat map reply: a field name line is followed by a length and a value.
    let lines: Vec<&str> = raw.split("\r\n").collect();
    let value = |i: usize, field: &str| {
        (lines.get(i) == Some(&field)).then(|| lines.get(i + 2).copied().unwrap_or_default())
    };
    let mut out = Vec::new();
    let mut reason = None;
    for i in 0..lines.len() {
        if let Some(r) = value(i, "reason") {
            reason = Some(r.to_owned());
        }
        if let Some(o) = value(i, "object") {
            out.push((reason.take().unwrap_or_default(), o.to_owned()));
        }
    }
    out
}

/// What fred's connection setup asks and carries on without (docs/acl.md says so).
fn only_fred_probes(log: &[(String, String)]) -> bool {
    log.iter()
        // `client|id` on Redis 7, `client` on 6.2.
        .all(|(reason, object)| {
            reason == "command" && matches!(object.as_str(), "info" | "client|id" | "client")
        })
}

fn url(server: &RedisServer, user: &str) -> String {
    format!("redis://{user}:{PASSWORD}@127.0.0.1:{}", server.port())
}

async fn user_client(server: &RedisServer, user: &str, ns: &str) -> leasehold::Result<Client> {
    Client::builder()
        .url(url(server, user))
        .namespace(ns)
        .connect_timeout(secs(3))
        .command_timeout(secs(2))
        .build()
        .await
}

/// A raw fred client logged in as `user`.
async fn raw_as(server: &RedisServer, user: &str) -> fred::clients::Client {
    let config = fred::types::config::Config::from_url(&url(server, user)).unwrap();
    let c = fred::clients::Client::new(config, None, None, None);
    c.init().await.expect("raw connect");
    c
}

fn denied(e: &fred::error::Error) -> bool {
    e.details().starts_with("NOPERM") || e.details().contains("The user executing the script can't")
}

/// Every command a script calls, every command leasehold sends itself, and nothing else.
#[test]
fn the_documented_line_grants_exactly_what_leasehold_uses() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut used = BTreeSet::new();
    // lua/prelude/ and one folder per area.
    let files = std::fs::read_dir(format!("{root}/lua"))
        .unwrap()
        .flat_map(|dir| std::fs::read_dir(dir.unwrap().path()).unwrap())
        .map(|file| file.unwrap().path());
    let mut read = 0;
    for path in files {
        read += 1;
        let lua = std::fs::read_to_string(&path).unwrap();
        for call in ["redis.call(", "redis.pcall("] {
            for (at, _) in lua.match_indices(call) {
                let rest = &lua[at + call.len()..];
                let name = match rest.chars().next() {
                    Some(q @ ('\'' | '"')) => rest[1..].split(q).next().unwrap().to_lowercase(),
                    // A command chosen at run time: the publish command (sharded or not).
                    _ if rest.starts_with("PUBLISH") => "publish".to_owned(),
                    // The prelude's `typed` helper, which passes its command on.
                    _ if rest.starts_with("...)") => continue,
                    _ => panic!("{path:?}: a command through a variable: {:.40}", rest),
                };
                used.insert(name);
            }
        }
        // typed(key, want, 'COMMAND', ...): the prelude's redis.pcall with a typed error.
        for (at, _) in lua.match_indices("typed(") {
            let args: Vec<&str> = lua[at + "typed(".len()..].splitn(4, ',').collect();
            let command = args.get(2).map(|a| a.trim()).unwrap_or_default();
            if command.starts_with("...)") {
                continue; // its definition
            }
            match command
                .strip_prefix('\'')
                .and_then(|c| c.strip_suffix('\''))
            {
                Some(name) => used.insert(name.to_lowercase()),
                None => panic!("{path:?}: typed() with a command through a variable: {command}"),
            };
        }
    }
    assert!(read > 30, "only {read} Lua files found");
    // Outside scripts: the commands leasehold itself sends (pub/sub either way, the lease
    // listing, script loading) and the ping of a password-less connection.
    for c in [
        "ping",
        // Connection names (src/redis/names.rs).
        "client|setname",
        // The function library where an operator loaded it (docs/acl.md), else EVALSHA.
        "fcall",
        "evalsha",
        "script|load",
        "subscribe",
        "unsubscribe",
        "ssubscribe",
        "sunsubscribe",
        "zrange",
        // The registry's type, when the lease listing finds foreign data there.
        "type",
        "publish",
        "spublish",
        "wait",
    ] {
        used.insert(c.to_owned());
    }
    let words = acl_words("u", "ns");
    let granted: BTreeSet<String> = words
        .iter()
        .filter_map(|w| w.strip_prefix('+'))
        .map(str::to_owned)
        .collect();
    assert_eq!(granted, used, "granted vs used");
    let rules: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .filter(|w| !w.starts_with('+'))
        .collect();
    assert_eq!(
        rules,
        [
            "ACL",
            "SETUSER",
            "u",
            "on",
            &format!(">{PASSWORD}"),
            "resetkeys",
            "~{ns}:*",
            "resetchannels",
            "&{ns}:*",
            "-@all"
        ]
    );
}

/// Where an operator loaded the function library, the documented user calls it (`FCALL`).
#[tokio::test]
async fn the_documented_user_can_do_everything_in_its_namespace() {
    let server = server();
    let raw = raw(&server).await;
    let functions = has_functions(&raw).await;
    // The operator's load, as `leasehold functions load` does it (the default user may).
    let operator = support::client(&server, "ops").await;
    operator.load_functions().await.unwrap_or_else(|e| {
        assert!(!functions, "{e}");
    });
    everything_in_its_namespace(&server, functions).await;
    if functions {
        assert_eq!(command_calls(&raw, "evalsha").await.0, 0, "no script call");
    }
}

/// Where the library is not loaded, the documented user (who may not load it) calls scripts
/// with EVALSHA, and works the same.
#[tokio::test]
async fn the_documented_user_can_do_everything_without_the_library() {
    let server = server();
    let raw = raw(&server).await;
    everything_in_its_namespace(&server, false).await;
    assert_eq!(
        command_calls(&raw, "fcall").await.0 - command_calls(&raw, "fcall").await.1,
        0
    );
    let log = acl_log(&server);
    if has_functions(&raw).await {
        assert!(
            log.contains(&("command".to_owned(), "function|load".to_owned())),
            "it tried to load the library: {log:?}"
        );
    }
}

/// A namespace's user cannot replace the library other namespaces' clients call (docs/acl.md,
/// "Functions, and who loads them").
#[tokio::test]
async fn the_documented_user_cannot_load_or_replace_functions() {
    let server = server();
    let raw = raw(&server).await;
    if !has_functions(&raw).await {
        return;
    }
    create_user(&server, "lh-f", "acl-f");
    let user = raw_as(&server, "lh-f").await;
    let library = leasehold::function_library_name();
    let fake =
        format!("#!lua name={library}\nredis.register_function('x', function() return 1 end)");
    for args in [
        &["LOAD", "REPLACE", &fake][..],
        &["LOAD", &fake],
        &["FLUSH"],
        &["DELETE", library],
    ] {
        let e = cmd::<fred::types::Value>(&user, "FUNCTION", args)
            .await
            .expect_err("refused");
        assert!(e.details().starts_with("NOPERM"), "{args:?}: {e:?}");
    }
}

/// Everything a namespace's client does, through two clients of the documented user; `functions`:
/// whether they call the library.
async fn everything_in_its_namespace(server: &RedisServer, functions: bool) {
    create_user(server, "lh-a", "acl-a");
    let (c1, c2) = (
        user_client(server, "lh-a", "acl-a").await.unwrap(),
        user_client(server, "lh-a", "acl-a").await.unwrap(),
    );
    assert_eq!(
        (c1.uses_functions(), c2.uses_functions()),
        (functions, functions)
    );
    let (s1, s2) = (c1.session().await.unwrap(), c2.session().await.unwrap());

    // Mutex, with a handoff to a waiter of another client (its doorbell channel).
    let held = s1.mutex("m").unwrap().lock().await.unwrap();
    assert!(held.is_owner().await.unwrap());
    let waiting = spawn_lock(s2.mutex("m").unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    assert_eq!(c1.inspect(QueueKind::Mutex, "m").await.unwrap().len(), 2);
    held.unlock().await.unwrap();
    let token = tokio::time::timeout(secs(5), waiting)
        .await
        .expect("handed off")
        .unwrap()
        .unwrap();
    assert!(token > 0);

    // RwLock: readers share, a writer waits for them.
    let (r1, r2) = (
        s1.rwlock("rw").unwrap().read().await.unwrap(),
        s2.rwlock("rw").unwrap().read().await.unwrap(),
    );
    assert!(matches!(
        s2.rwlock("rw").unwrap().try_write().await,
        Err(Error::Locked { .. })
    ));
    let rw = s2.rwlock("rw").unwrap();
    let writer = tokio::spawn(async move { rw.write().await });
    r1.unlock().await.unwrap();
    r2.unlock().await.unwrap();
    let w = tokio::time::timeout(secs(5), writer)
        .await
        .expect("writer woken")
        .unwrap()
        .unwrap();
    w.unlock().await.unwrap();

    // Semaphore.
    let p1 = s1.semaphore("sem", 2).unwrap().acquire().await.unwrap();
    let p2 = s2.semaphore("sem", 2).unwrap().acquire().await.unwrap();
    assert!(matches!(
        s1.semaphore("sem", 2).unwrap().try_acquire().await,
        Err(Error::Locked { .. })
    ));
    p1.release().await.unwrap();
    p2.release().await.unwrap();

    // Election: observe from one client, campaign, proclaim and resign from the other.
    let mut observer = Box::pin(s1.election("lead").unwrap().observe());
    let election = s2.election("lead").unwrap();
    election.campaign("two").await.unwrap();
    election.proclaim("two again").await.unwrap();
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("two again") {
        let ev = tokio::time::timeout(secs(5), observer.next())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap();
        if let Some(leader) = ev.leader {
            seen.push(leader.value);
        }
    }
    let leader = s1.election("lead").unwrap().leader().await.unwrap();
    assert_eq!(leader.unwrap().value, "two again");
    election.resign().await.unwrap();
    drop(observer);

    // Keys.
    c1.put("cfg/a", "1", None).await.unwrap();
    s1.put("cfg/b", "2").await.unwrap();
    assert_eq!(c2.get("cfg/a").await.unwrap().unwrap().value, "1");
    let range = c2.get_prefix("cfg/", 10, None).await.unwrap();
    assert_eq!(range.kvs.len(), 2);
    assert!(c2.delete("cfg/a").await.unwrap());

    // Queues: a blocked dequeue is woken through the queue's change channel.
    let q = c2.queue("jobs").unwrap();
    let dequeue = tokio::spawn(async move { q.dequeue().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    c1.queue("jobs").unwrap().enqueue("job-1").await.unwrap();
    let got = tokio::time::timeout(secs(5), dequeue)
        .await
        .expect("dequeue woken")
        .unwrap()
        .unwrap();
    assert_eq!(got, "job-1");
    let pq = c1.priority_queue("pjobs").unwrap();
    pq.enqueue_with_priority("low", 9).await.unwrap();
    pq.enqueue_with_priority("high", 1).await.unwrap();
    assert_eq!(pq.try_dequeue().await.unwrap().as_deref(), Some("high"));

    // Barriers.
    let barrier = s1.barrier("go").unwrap();
    barrier.hold().await.unwrap();
    assert!(barrier.is_held().await.unwrap());
    let b2 = s2.barrier("go").unwrap();
    let wait = tokio::spawn(async move { b2.wait().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(barrier.release().await.unwrap());
    tokio::time::timeout(secs(5), wait)
        .await
        .expect("barrier wait woken")
        .unwrap()
        .unwrap();
    let (d1, d2) = (
        s1.double_barrier("db", 2).unwrap(),
        s2.double_barrier("db", 2).unwrap(),
    );
    let (e1, e2) = tokio::join!(d1.enter(), d2.enter());
    e1.unwrap();
    e2.unwrap();
    let (l1, l2) = tokio::join!(d1.leave(), d2.leave());
    l1.unwrap();
    l2.unwrap();

    // Leases: grant, renew, time to live, adopt, list, revoke.
    let lease = c1.grant(secs(30)).await.unwrap();
    c1.keep_alive_once(lease.id).await.unwrap();
    assert!(c1.time_to_live(lease.id).await.unwrap().is_some());
    let adopted = c2
        .session_with(SessionOptions::new().lease(lease.id))
        .await
        .unwrap();
    let listed = c1.leases().await.unwrap();
    assert!(listed.iter().any(|l| l.id == s1.lease()));
    assert!(listed.iter().any(|l| l.id == lease.id));
    adopted.orphan();
    c1.revoke(lease.id).await.unwrap();

    s1.close().await.unwrap();
    s2.close().await.unwrap();
    drop((c1, c2));
    // The server refused nothing but fred's two connection probes, and the library's load
    // where it was not loaded.
    let log = acl_log(server);
    assert!(
        !log.is_empty(),
        "the log parser sees fred's probes: {log:?}"
    );
    let log: Vec<_> = log
        .into_iter()
        .filter(|(reason, object)| {
            functions || (reason, object.as_str()) != (&"command".to_owned(), "function|load")
        })
        .collect();
    assert!(only_fred_probes(&log), "ACL denials: {log:?}");
}

#[tokio::test]
async fn another_namespace_is_refused_with_a_typed_error_naming_it() {
    let server = server();
    create_user(&server, "lh-a", "acl-a");
    let started = Instant::now();
    let e = user_client(&server, "lh-a", "acl-b").await.unwrap_err();
    assert!(started.elapsed() < secs(3), "fails at once");
    match e {
        Error::PermissionDenied(m) => {
            let m = m.message();
            assert!(m.contains("NOPERM"), "{m}");
            assert!(m.contains("channel"), "says what was denied: {m}");
            assert!(m.contains("{acl-b}:wake:"), "names the channel: {m}");
            assert!(m.contains("\"acl-b\""), "names the namespace: {m}");
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

/// Redis 7 gives a new user no channels by default: a grant with the keys but without the
/// channels would leave the doorbell dead (fred reports no SUBSCRIBE refusal), so `build`
/// checks and refuses.
#[tokio::test]
async fn a_user_without_the_channels_is_refused_at_build() {
    let server = server();
    let words: Vec<String> = acl_words("lh-nochannels", "acl-a")
        .into_iter()
        .filter(|w| !w.starts_with('&'))
        .collect();
    setuser(&server, &words);
    match user_client(&server, "lh-nochannels", "acl-a").await {
        Err(Error::PermissionDenied(m)) => {
            let m = m.message();
            assert!(m.contains("channel") && m.contains("{acl-a}:wake:"), "{m}");
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

/// A command missing from a user's grant, met inside a script, is a typed error naming the
/// operation and namespace (Redis 7.0 words it "ERR The user executing the script can't …").
#[tokio::test]
async fn a_denial_inside_a_script_is_permission_denied() {
    let server = server();
    setuser(&server, &acl_words_without("lh-noxadd", "acl-a", "+xadd"));
    let client = user_client(&server, "lh-noxadd", "acl-a").await.unwrap();
    let session = client.session().await.unwrap();
    match session.election("lead").unwrap().campaign("x").await {
        Err(Error::PermissionDenied(m)) => {
            let m = m.message();
            assert!(
                m.contains("can't run this command") || m.contains("no permissions to run"),
                "{m}"
            );
            assert!(m.contains("election_campaign"), "names the operation: {m}");
            assert!(m.contains("\"acl-a\""), "names the namespace: {m}");
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    session.close().await.unwrap();
}

/// A user whose line predates `+zmscore` (renewals read the registry with it) still renews:
/// each lease is then looked up alone, and held locks stay held past several TTLs.
#[tokio::test]
async fn a_user_without_zmscore_still_renews_each_lease_alone() {
    let server = server();
    setuser(&server, &acl_words_without("lh-nozms", "acl-a", "+zmscore"));
    let client = user_client(&server, "lh-nozms", "acl-a").await.unwrap();
    let ttl = Duration::from_millis(1500);
    let session = client
        .session_with(SessionOptions::new().ttl(ttl))
        .await
        .unwrap();
    let held = session.mutex("m").unwrap().lock().await.unwrap();
    tokio::time::sleep(ttl * 3).await;
    assert!(session.is_valid(), "{:?}", session.state());
    assert!(held.is_owner().await.unwrap());
    let log = acl_log(&server);
    assert!(
        log.contains(&("command".to_owned(), "zmscore".to_owned())),
        "the renewals tried ZMSCORE first: {log:?}"
    );
    held.unlock().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_user_cannot_touch_another_namespace_nor_disturb_its_locks() {
    let server = server();
    create_user(&server, "lh-a", "acl-a");
    create_user(&server, "lh-b", "acl-b");
    let b = user_client(&server, "lh-b", "acl-b").await.unwrap();
    let sb = b.session().await.unwrap();
    let held = sb.mutex("shared-name").unwrap().lock().await.unwrap();
    let token = held.fencing_token();
    let b_key = held.key().to_owned();
    assert!(b_key.starts_with("{acl-b}:"), "{b_key}");

    // A's own namespace works, and a lock of the same name there is another lock.
    let a = user_client(&server, "lh-a", "acl-a").await.unwrap();
    let sa = a.session().await.unwrap();
    let mine = sa.mutex("shared-name").unwrap().try_lock().await.unwrap();

    // Raw commands as A against B's keys and channels: refused.
    let raw_a = raw_as(&server, "lh-a").await;
    let sharded = sharded_pubsub(&raw_a).await;
    let b_lease = format!("{{acl-b}}:lease:{}", sb.lease());
    for (name, args) in [
        ("GET", vec!["{acl-b}:rev"]),
        ("ZRANGE", vec![b_key.as_str(), "0", "-1"]),
        ("DEL", vec![b_key.as_str()]),
        ("ZADD", vec![b_key.as_str(), "0", "intruder"]),
        ("ZREM", vec![b_key.as_str(), "x"]),
        ("PEXPIRE", vec![b_lease.as_str(), "1"]),
        ("HSET", vec![b_lease.as_str(), "ttl", "1"]),
        ("PUBLISH", vec!["{acl-b}:wake:x", "hi"]),
        ("SPUBLISH", vec!["{acl-b}:wake:x", "hi"]),
        // Commands the line does not grant at all, even in A's namespace.
        ("KEYS", vec!["*"]),
        ("FLUSHALL", vec![]),
        ("EVAL", vec!["return 1", "0"]),
        ("CONFIG", vec!["GET", "*"]),
        ("SCRIPT", vec!["FLUSH"]),
    ] {
        if name == "SPUBLISH" && !sharded {
            continue;
        }
        let e = cmd::<fred::types::Value>(&raw_a, name, &args)
            .await
            .expect_err(name);
        assert!(denied(&e), "{name} {args:?}: {e:?}");
    }
    // A leasehold script run by A with B's keys is refused before it runs...
    let release =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/lua/prelude/core.lua"))
            .unwrap()
            + "return redis.call('DEL', ARGV[1])";
    let sha: String = cmd(&raw_a, "SCRIPT", &["LOAD", &release]).await.unwrap();
    let e = cmd::<fred::types::Value>(&raw_a, "EVALSHA", &[&sha, "1", &b_key, "x"])
        .await
        .expect_err("declared key of B");
    assert!(e.details().starts_with("NOPERM"), "{e:?}");
    // ...and one that reaches B's key or channel from inside is stopped there.
    for inside in [
        "return redis.call('DEL', ARGV[1])",
        "return redis.call('PUBLISH', '{acl-b}:wake:x', 'hi')",
        "return redis.call('SPUBLISH', '{acl-b}:wake:x', 'hi')",
    ] {
        if inside.contains("SPUBLISH") && !sharded {
            continue;
        }
        let sha: String = cmd(&raw_a, "SCRIPT", &["LOAD", inside]).await.unwrap();
        let e = cmd::<fred::types::Value>(&raw_a, "EVALSHA", &[&sha, "0", &b_key])
            .await
            .expect_err(inside);
        // Redis 7.0's words, and Valkey 8's.
        assert!(
            e.details().contains("The user executing the script can't")
                || e.details().contains("ACL failure in script"),
            "{inside}: {e:?}"
        );
    }
    // Sharded and plain pub/sub in A's own namespace are granted, from scripts too.
    let publish = if sharded { "SPUBLISH" } else { "PUBLISH" };
    let sha: String = cmd(
        &raw_a,
        "SCRIPT",
        &[
            "LOAD",
            &format!("return redis.call('{publish}', ARGV[1], 'x')"),
        ],
    )
    .await
    .unwrap();
    let n: i64 = cmd(&raw_a, "EVALSHA", &[&sha, "0", "{acl-a}:wake:nobody"])
        .await
        .unwrap();
    assert_eq!(n, 0);
    let sub = fred::types::Builder::from_config(
        fred::types::config::Config::from_url(&url(&server, "lh-a")).unwrap(),
    )
    .build_subscriber_client()
    .unwrap();
    sub.init().await.unwrap();
    if sharded {
        sub.ssubscribe("{acl-a}:wake:x").await.unwrap();
        assert!(denied(&sub.ssubscribe("{acl-b}:wake:x").await.unwrap_err()));
    }
    sub.subscribe("{acl-a}:wake:y").await.unwrap();
    // fred does not wait for a SUBSCRIBE reply, so it reports no refusal: ask the server
    // who listens instead.
    let _ = sub.subscribe("{acl-b}:wake:y").await;
    let admin = raw(&server).await;
    let listening = |channel: &'static str| {
        let admin = admin.clone();
        async move {
            cmd::<i64>(&admin, "PUBLISH", &[channel, "probe"])
                .await
                .unwrap()
        }
    };
    assert_eq!(listening("{acl-a}:wake:y").await, 1);
    assert_eq!(listening("{acl-b}:wake:y").await, 0);
    let _ = sub.quit().await;

    // Nothing A did reached B's lock.
    assert!(held.is_owner().await.unwrap());
    assert_eq!(held.fencing_token(), token);
    assert_eq!(zcard(&admin, &b_key).await, 1);
    assert!(sb.is_valid());
    mine.unlock().await.unwrap();
    held.unlock().await.unwrap();
    sa.close().await.unwrap();
    sb.close().await.unwrap();
}

/// The CLI reports a denial as one, with its own exit code (3), not as "cannot reach Redis".
#[tokio::test]
async fn the_cli_reports_a_denial_with_its_own_exit_code() {
    let server = server();
    create_user(&server, "lh-cli", "acl-a");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .env_remove("REDIS_URL")
        .args(["--url", &url(&server, "lh-cli"), "--namespace", "acl-b"])
        .args(["lease", "list"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(!stderr.contains("cannot reach"), "{stderr}");
}
