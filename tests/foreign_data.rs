//! Foreign data at leasehold's keys: a value of the wrong Redis type, or garbage inside the
//! right type. Every operation that touches such a key either fails with `WrongType` /
//! `CorruptData` naming the key, changing nothing, or has a documented tolerant behaviour; it
//! never panics and never surfaces a Lua runtime error as `Error::Redis` or a reply it cannot
//! parse as `Error::Protocol`.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use fred::prelude::KeysInterface;
use futures_util::StreamExt;
use leasehold::{Client, Error, LeaseId, QueueKind, Session, SessionOptions};
use support::*;

type Fut<'a> = Pin<Box<dyn Future<Output = leasehold::Result<()>> + 'a>>;

/// A fresh session and a second, unrenewed lease, per operation run.
struct Ctx {
    client: Client,
    session: Session,
    other: LeaseId,
}

/// Operations that may wait are bounded: nobody live holds anything in these tests.
async fn within<T>(f: impl Future<Output = leasehold::Result<T>>) -> leasehold::Result<T> {
    tokio::time::timeout(Duration::from_secs(3), f)
        .await
        .unwrap_or(Err(Error::Timeout(Duration::from_secs(3))))
}

macro_rules! op {
    ($name:literal, |$c:ident| $body:expr) => {
        ($name, {
            fn f($c: &Ctx) -> Fut<'_> {
                Box::pin(async move { $body })
            }
            f as for<'a> fn(&'a Ctx) -> Fut<'a>
        })
    };
}

type Op = (&'static str, for<'a> fn(&'a Ctx) -> Fut<'a>);

/// Every public operation, on the name "x".
fn ops() -> Vec<Op> {
    vec![
        op!("mutex.lock", |c| {
            within(c.session.mutex("x")?.lock()).await?.unlock().await
        }),
        op!("mutex.try_lock", |c| {
            c.session.mutex("x")?.try_lock().await?.unlock().await
        }),
        op!("mutex.inspect", |c| {
            c.client.inspect(QueueKind::Mutex, "x").await.map(drop)
        }),
        op!("rwlock.read", |c| {
            within(c.session.rwlock("x")?.read()).await?.unlock().await
        }),
        op!("rwlock.try_write", |c| {
            c.session.rwlock("x")?.try_write().await?.unlock().await
        }),
        op!("rwlock.inspect", |c| {
            c.client.inspect(QueueKind::RwLock, "x").await.map(drop)
        }),
        op!("semaphore.acquire", |c| {
            let s = c.session.semaphore("x", 2)?;
            within(s.acquire()).await?.release().await
        }),
        op!("semaphore.try_acquire", |c| {
            let s = c.session.semaphore("x", 2)?;
            s.try_acquire_many(2).await?.release().await
        }),
        op!("semaphore.inspect", |c| {
            c.client.inspect(QueueKind::Semaphore, "x").await.map(drop)
        }),
        op!("election.campaign", |c| {
            let e = c.session.election("x")?;
            within(e.campaign("v")).await?;
            e.proclaim("w").await?;
            e.resign().await
        }),
        op!("election.observe", |c| {
            let e = c.session.election("x")?;
            within(e.campaign("v")).await?;
            let mut events = Box::pin(e.observe());
            let first = within(async { events.next().await.expect("a stream") }).await?;
            assert_eq!(first.leader.map(|l| l.value).as_deref(), Some("v"));
            e.proclaim("w").await?;
            let next = within(async { events.next().await.expect("a stream") }).await?;
            assert_eq!(next.leader.map(|l| l.value).as_deref(), Some("w"));
            e.resign().await
        }),
        op!("election.leader", |c| {
            c.session.election("x")?.leader().await.map(drop)
        }),
        op!("election.inspect", |c| {
            c.client.inspect(QueueKind::Election, "x").await.map(drop)
        }),
        op!("kv.put", |c| c.client.put("x", "v", None).await.map(drop)),
        op!("kv.put_leased", |c| c.session.put("x", "v").await.map(drop)),
        op!("kv.get", |c| c.client.get("x").await.map(drop)),
        op!("kv.delete", |c| c.client.delete("x").await.map(drop)),
        op!("kv.range", |c| {
            c.client.get_prefix("", 100, None).await.map(drop)
        }),
        op!("queue.enqueue", |c| c
            .client
            .queue("x")?
            .enqueue("v")
            .await
            .map(drop)),
        op!("queue.dequeue", |c| {
            c.client.queue("x")?.try_dequeue().await.map(drop)
        }),
        op!("pqueue.enqueue", |c| {
            let q = c.client.priority_queue("x")?;
            q.enqueue_with_priority("v", 3).await.map(drop)
        }),
        op!("pqueue.dequeue", |c| {
            c.client.priority_queue("x")?.try_dequeue().await.map(drop)
        }),
        op!("barrier.hold", |c| {
            let b = c.session.barrier("x")?;
            b.hold().await?;
            b.release().await.map(drop)
        }),
        op!("barrier.release", |c| {
            c.session.barrier("x")?.release().await.map(drop)
        }),
        op!("barrier.wait", |c| within(c.session.barrier("x")?.wait())
            .await),
        op!("dbarrier.enter", |c| {
            let d = c.session.double_barrier("x", 1)?;
            within(d.enter()).await?;
            within(d.leave()).await
        }),
        op!("lease.grant", |c| {
            let l = c.client.grant(Duration::from_secs(5)).await?;
            c.client.revoke(l.id).await
        }),
        op!("lease.keep_alive", |c| {
            c.client.keep_alive_once(c.session.lease()).await.map(drop)
        }),
        op!("lease.ttl", |c| {
            c.client
                .time_to_live_with_keys(c.session.lease())
                .await
                .map(drop)
        }),
        op!("lease.list", |c| c.client.leases().await.map(drop)),
        op!("lease.revoke_other", |c| c.client.revoke(c.other).await),
        op!("lease.adopt_other", |c| {
            let opts = SessionOptions::new().lease(c.other);
            c.client.session_with(opts).await?.close().await
        }),
        op!("session.new", |c| c.client.session().await?.close().await),
        op!("session.close", |c| c.session.close().await),
    ]
}

/// One kind of foreign data. Key templates: `$ns` is the namespace, `$lease` the session's
/// lease, `$other` the second lease.
struct Case {
    /// The keys this case writes (watched for changes).
    keys: &'static [&'static str],
    /// Raw commands that write the foreign data (after `DEL` of every watched key, unless the
    /// first command is `KEEP`: then leasehold's own data is edited in place).
    setup: &'static [&'static [&'static str]],
    /// Operations (by name prefix; `*` = all) that must fail with a typed error naming a key.
    must_fail: &'static [&'static str],
    /// Operations that may change a watched key when they succeed (documented tolerance).
    may_change: &'static [&'static str],
    /// Operations that may report the session's own lease gone.
    lease_gone: &'static [&'static str],
}

const ALL: &[&str] = &["*"];
const NONE: &[&str] = &[];
const LOCK_OPS: &[&str] = &[
    "mutex.lock",
    "mutex.try_lock",
    "rwlock.read",
    "rwlock.try_write",
    "semaphore.acquire",
    "semaphore.try_acquire",
    "election.campaign",
    "election.observe",
    "kv.put_leased",
    "barrier.hold",
    "dbarrier.enter",
];

fn matches(list: &[&str], op: &str) -> bool {
    list.iter()
        .any(|p| *p == "*" || op == *p || (p.ends_with('.') && op.starts_with(p)))
}

fn cases() -> Vec<(&'static str, Case)> {
    let wrong = |keys, setup, must_fail| Case {
        keys,
        setup,
        must_fail,
        may_change: NONE,
        lease_gone: NONE,
    };
    let mut v = vec![
        // Wrong Redis types.
        (
            "rev is a hash",
            wrong(&["{$ns}:rev"], &[&["HSET", "{$ns}:rev", "a", "b"]], ALL),
        ),
        (
            "registry is a string",
            wrong(&["{$ns}:leases"], &[&["SET", "{$ns}:leases", "x"]], ALL),
        ),
        (
            "own lease hash is a string",
            Case {
                keys: &["{$ns}:lease:$lease"],
                setup: &[&["SET", "{$ns}:lease:$lease", "x"]],
                must_fail: &["lease.ttl", "session.close"],
                may_change: NONE,
                // A lease hash leasehold cannot read is not renewed (treated as gone).
                lease_gone: &["lease.keep_alive"],
            },
        ),
        (
            "own attachment set is a string",
            wrong(
                &["{$ns}:attached:$lease"],
                &[&["SET", "{$ns}:attached:$lease", "x"]],
                [LOCK_OPS, &["lease.ttl", "session.close"]].concat().leak(),
            ),
        ),
        (
            "another lease hash is a list",
            wrong(
                &["{$ns}:lease:$other"],
                &[&["RPUSH", "{$ns}:lease:$other", "x"]],
                &["lease.revoke_other", "lease.adopt_other"],
            ),
        ),
        (
            "mutex queue is a string",
            wrong(
                &["{$ns}:mutex:x"],
                &[&["SET", "{$ns}:mutex:x", "x"]],
                &["mutex."],
            ),
        ),
        (
            "rwlock queue is a hash",
            wrong(
                &["{$ns}:rwlock:x"],
                &[&["HSET", "{$ns}:rwlock:x", "a", "b"]],
                &["rwlock."],
            ),
        ),
        (
            "semaphore queue is a list",
            wrong(
                &["{$ns}:semaphore:x"],
                &[&["RPUSH", "{$ns}:semaphore:x", "a"]],
                &["semaphore."],
            ),
        ),
        (
            "semaphore size is a hash",
            wrong(
                &["{$ns}:semaphore-size:x"],
                &[&["HSET", "{$ns}:semaphore-size:x", "a", "b"]],
                &["semaphore.acquire", "semaphore.try_acquire"],
            ),
        ),
        (
            "election queue is a string",
            wrong(
                &["{$ns}:election:x"],
                &[&["SET", "{$ns}:election:x", "x"]],
                &["election."],
            ),
        ),
        (
            "election values are a set",
            wrong(
                &["{$ns}:election-values:x"],
                &[&["SADD", "{$ns}:election-values:x", "a"]],
                &["election.campaign", "election.observe", "election.leader"],
            ),
        ),
        (
            "election log is a hash",
            wrong(
                &["{$ns}:election-log:x"],
                &[&["HSET", "{$ns}:election-log:x", "a", "b"]],
                &["election.campaign", "election.observe", "election.leader"],
            ),
        ),
        (
            "key is a string",
            Case {
                keys: &["{$ns}:key:x"],
                setup: &[&["SET", "{$ns}:key:x", "x"]],
                must_fail: &["kv.put", "kv.put_leased", "kv.get", "kv.delete"],
                may_change: NONE,
                lease_gone: NONE,
            },
        ),
        (
            "key index is a string",
            wrong(
                &["{$ns}:keys"],
                &[&["SET", "{$ns}:keys", "x"]],
                &["kv.put", "kv.put_leased", "kv.delete", "kv.range"],
            ),
        ),
        (
            "queue is a hash",
            wrong(
                &["{$ns}:queue:x"],
                &[&["HSET", "{$ns}:queue:x", "a", "b"]],
                &["queue."],
            ),
        ),
        (
            "priority queue is a string",
            wrong(
                &["{$ns}:pqueue:x"],
                &[&["SET", "{$ns}:pqueue:x", "a"]],
                &["pqueue."],
            ),
        ),
        (
            "barrier is a string",
            wrong(
                &["{$ns}:barrier:x"],
                &[&["SET", "{$ns}:barrier:x", "a"]],
                &["barrier."],
            ),
        ),
        (
            "double barrier is a string",
            wrong(
                &["{$ns}:dbarrier:x"],
                &[&["SET", "{$ns}:dbarrier:x", "a"]],
                &["dbarrier."],
            ),
        ),
        (
            "double barrier flag is a hash",
            wrong(
                &["{$ns}:dbarrier-ready:x"],
                &[&["HSET", "{$ns}:dbarrier-ready:x", "a", "b"]],
                &["dbarrier."],
            ),
        ),
    ];
    // Revision counters that are not a revision: every script refuses them.
    for garbage in [
        "garbage",
        "nan",
        "inf",
        "-inf",
        "1e300",
        "-5",
        "1.5",
        " 12",
        "0x10",
        "99999999999999999999",
    ] {
        let setup: &'static [&'static [&'static str]] =
            vec![vec!["SET", "{$ns}:rev", garbage].leak() as &[&str]].leak();
        v.push((
            format!("rev is {garbage:?}").leak(),
            wrong(&["{$ns}:rev"], setup, ALL),
        ));
    }
    // Semaphore sizes that are not a size.
    for garbage in ["abc", "nan", "inf", "-1", "0", "1.5", "1e300"] {
        let setup: &'static [&'static [&'static str]] =
            vec![vec!["SET", "{$ns}:semaphore-size:x", garbage].leak() as &[&str]].leak();
        v.push((
            format!("semaphore size is {garbage:?}").leak(),
            wrong(
                &["{$ns}:semaphore-size:x"],
                setup,
                &["semaphore.acquire", "semaphore.try_acquire"],
            ),
        ));
    }
    // TTL fields leasehold cannot use: the lease is not renewed (reported gone), nothing else.
    for garbage in [
        "abc",
        "nan",
        "inf",
        "-5",
        "0",
        "1.5",
        "1e300",
        "99999999999999999999",
    ] {
        let setup: &'static [&'static [&'static str]] = vec![
            vec!["KEEP"].leak() as &[&str],
            vec!["HSET", "{$ns}:lease:$lease", "ttl", garbage].leak(),
            vec!["HSET", "{$ns}:lease:$other", "ttl", garbage].leak(),
        ]
        .leak();
        v.push((
            format!("lease ttl is {garbage:?}").leak(),
            Case {
                keys: &["{$ns}:lease:$lease", "{$ns}:lease:$other"],
                setup,
                must_fail: NONE,
                may_change: &["session.close", "lease.revoke_other"],
                lease_gone: &["lease.keep_alive", "lease.adopt_other"],
            },
        ));
    }
    v.extend([
        (
            "lease hash without metadata",
            Case {
                keys: &["{$ns}:lease:$lease"],
                setup: &[
                    &["KEEP"],
                    &[
                        "HDEL",
                        "{$ns}:lease:$lease",
                        "client",
                        "host",
                        "pid",
                        "label",
                    ],
                    &[
                        "HSET",
                        "{$ns}:lease:$lease",
                        "granted",
                        "yesterday",
                        "pid",
                        "-1",
                    ],
                ],
                must_fail: NONE,
                may_change: &["session.close"],
                lease_gone: NONE,
            },
        ),
        (
            "garbage in the attachment set",
            Case {
                keys: &["{$ns}:attached:$lease"],
                setup: &[
                    &["KEEP"],
                    &[
                        "SADD",
                        "{$ns}:attached:$lease",
                        "q",
                        "z",
                        "z nodot",
                        "k ",
                        "z a.b {elsewhere}:mutex:x",
                        "k {elsewhere}:key:x",
                    ],
                ],
                must_fail: NONE,
                may_change: &[
                    "mutex.",
                    "rwlock.",
                    "semaphore.",
                    "election.campaign",
                    "election.observe",
                    "kv.put_leased",
                    "barrier.hold",
                    "dbarrier.",
                    "session.close",
                ],
                lease_gone: NONE,
            },
        ),
        (
            "registry members that are not lease ids",
            Case {
                keys: &[],
                setup: &[
                    &["KEEP"],
                    &["ZADD", "{$ns}:leases", "1", "expired-garbage"],
                    &["ZADD", "{$ns}:leases", "+inf", "immortal-garbage"],
                    &["ZADD", "{$ns}:leases", "+inf", ""],
                ],
                must_fail: NONE,
                may_change: NONE,
                lease_gone: NONE,
            },
        ),
        (
            "garbage members and scores in lock queues",
            Case {
                keys: &["{$ns}:mutex:x", "{$ns}:rwlock:x", "{$ns}:semaphore:x"],
                setup: &[
                    &[
                        "ZADD",
                        "{$ns}:mutex:x",
                        "1.5",
                        "nodot",
                        "-inf",
                        "a.b",
                        "inf",
                        ".",
                    ],
                    &[
                        "ZADD",
                        "{$ns}:rwlock:x",
                        "1.5",
                        "nodot",
                        "-5",
                        "a.w1",
                        "inf",
                        "c.r",
                    ],
                    &[
                        "ZADD",
                        "{$ns}:semaphore:x",
                        "1e300",
                        "nodot",
                        "-5",
                        "a.99.x",
                    ],
                ],
                must_fail: NONE,
                // Entries whose lease is not alive are pruned.
                may_change: &["mutex.lock", "mutex.try_lock", "rwlock.", "semaphore."],
                lease_gone: NONE,
            },
        ),
        (
            "garbage in an election's log and values",
            Case {
                keys: &["{$ns}:election-log:x", "{$ns}:election-values:x"],
                setup: &[
                    &["XADD", "{$ns}:election-log:x", "1-0", "foo", "bar"],
                    &[
                        "XADD",
                        "{$ns}:election-log:x",
                        "2-0",
                        "member",
                        "garbage",
                        "token",
                        "abc",
                        "value",
                        "v",
                    ],
                    &["HSET", "{$ns}:election-values:x", "nobody.c", "v"],
                ],
                must_fail: NONE,
                // The log records the current leader (none) on every read.
                may_change: &["election.campaign", "election.observe", "election.leader"],
                lease_gone: NONE,
            },
        ),
        (
            "an election log entry id beyond any revision",
            wrong(
                &["{$ns}:election-log:x"],
                &[&[
                    "XADD",
                    "{$ns}:election-log:x",
                    "99999999999999999-0",
                    "a",
                    "b",
                ]],
                &["election.campaign", "election.observe", "election.leader"],
            ),
        ),
        (
            "key with garbage revisions",
            Case {
                keys: &["{$ns}:key:x", "{$ns}:keys"],
                setup: &[
                    &[
                        "HSET",
                        "{$ns}:key:x",
                        "v",
                        "val",
                        "lease",
                        "",
                        "crev",
                        "abc",
                        "mrev",
                        "-1",
                        "ver",
                        "1.5",
                    ],
                    &["ZADD", "{$ns}:keys", "0", "x"],
                ],
                must_fail: &["kv.get", "kv.range"],
                may_change: &["kv.put", "kv.put_leased", "kv.delete"],
                lease_gone: NONE,
            },
        ),
        (
            "key with a lease that is not a lease id, and an index without keys",
            Case {
                keys: &["{$ns}:key:x", "{$ns}:keys"],
                setup: &[
                    &["HSET", "{$ns}:key:x", "v", "val", "lease", "garbage"],
                    &["ZADD", "{$ns}:keys", "0", "x", "0", "nokey", "5", "y"],
                ],
                must_fail: NONE,
                // A range read removes index entries whose key is gone.
                may_change: &["kv.put", "kv.put_leased", "kv.delete", "kv.range"],
                lease_gone: NONE,
            },
        ),
        (
            "queue items that are not items",
            Case {
                keys: &["{$ns}:queue:x", "{$ns}:pqueue:x"],
                setup: &[
                    &["ZADD", "{$ns}:queue:x", "inf", "nospace", "-1", "x y"],
                    &["ZADD", "{$ns}:pqueue:x", "1.5", ""],
                ],
                must_fail: NONE,
                may_change: &["queue.", "pqueue."],
                lease_gone: NONE,
            },
        ),
        (
            "barrier held by garbage",
            Case {
                keys: &["{$ns}:barrier:x"],
                setup: &[&["HSET", "{$ns}:barrier:x", "lease", "garbage", "foo", "bar"]],
                must_fail: NONE,
                // A hold whose lease is not alive is replaced; releasing deletes it.
                may_change: &["barrier.hold", "barrier.release"],
                lease_gone: NONE,
            },
        ),
        (
            "stale double barrier flag",
            Case {
                keys: &["{$ns}:dbarrier-ready:x", "{$ns}:dbarrier:x"],
                setup: &[
                    &["SET", "{$ns}:dbarrier-ready:x", "1"],
                    &["ZADD", "{$ns}:dbarrier:x", "1", "nodot"],
                ],
                must_fail: NONE,
                may_change: &["dbarrier."],
                lease_gone: NONE,
            },
        ),
    ]);
    v
}

fn fill(template: &str, ns: &str, c: &Ctx) -> String {
    template
        .replace("$ns", ns)
        .replace("$lease", &c.session.lease().to_string())
        .replace("$other", &c.other.to_string())
}

/// Everything in Redis but the lease registry (the keepalive moves its scores), as
/// (key, type, dump), to compare before and after.
async fn snapshot(raw: &fred::clients::Client, ns: &str) -> Vec<(String, String, String)> {
    let registry = format!("{{{ns}}}:leases");
    let mut out = Vec::new();
    for key in keys(raw, "*").await {
        if key == registry {
            continue;
        }
        let kind: String = cmd(raw, "TYPE", &[&key]).await.unwrap();
        let dump: Option<Vec<u8>> = raw.dump(&key).await.unwrap();
        out.push((key, kind, format!("{dump:?}")));
    }
    out
}

async fn dump(raw: &fred::clients::Client, key: &str) -> Option<Vec<u8>> {
    raw.dump(key).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_on_foreign_data_is_typed_or_tolerated() {
    let server = server();
    let raw = raw(&server).await;
    let ns = "fd";
    let client = client(&server, ns).await;
    let mut failures = Vec::new();
    for (case_name, case) in cases() {
        for (op_name, op) in ops() {
            let ctx = Ctx {
                client: client.clone(),
                session: client.session().await.unwrap(),
                other: client.grant(Duration::from_secs(30)).await.unwrap().id,
            };
            let watched: Vec<String> = case.keys.iter().map(|k| fill(k, ns, &ctx)).collect();
            let edit = case.setup.first() == Some(&&["KEEP"][..]);
            if !edit {
                for k in &watched {
                    let _: i64 = cmd(&raw, "DEL", &[k]).await.unwrap();
                }
            }
            for c in case.setup.iter().filter(|c| c[0] != "KEEP") {
                let args: Vec<String> = c[1..].iter().map(|a| fill(a, ns, &ctx)).collect();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let name: &'static str = c[0];
                let _: fred::types::Value = cmd(&raw, name, &args).await.unwrap();
            }
            let before = snapshot(&raw, ns).await;
            let mut dumps = Vec::new();
            for k in &watched {
                dumps.push(dump(&raw, k).await);
            }
            let result = op(&ctx).await;
            let what = format!("{case_name}: {op_name}");
            let named = |key: &str| key.starts_with(&format!("{{{ns}}}:"));
            let typed = match &result {
                Err(Error::WrongType { key, .. } | Error::CorruptData { key, .. })
                    if named(key) =>
                {
                    true
                }
                Ok(()) => false,
                Err(Error::LeaseNotFound { .. } | Error::SessionLost { .. })
                    if matches(case.lease_gone, op_name) =>
                {
                    false
                }
                Err(e) => {
                    failures.push(format!("{what}: unexpected error {e:?}"));
                    false
                }
            };
            if matches(case.must_fail, op_name) && !typed {
                failures.push(format!("{what}: expected a typed error, got {result:?}"));
            }
            if typed {
                // Nothing changed at all.
                let after = snapshot(&raw, ns).await;
                if after != before {
                    failures.push(format!("{what}: {result:?} but Redis changed"));
                }
            } else if !matches(case.may_change, op_name) {
                for (k, d) in watched.iter().zip(&dumps) {
                    if dump(&raw, k).await != *d {
                        failures.push(format!("{what}: foreign key {k} changed"));
                    }
                }
            }
            // Clean up: the foreign data first, so the session can be revoked.
            for k in &watched {
                let _: i64 = cmd(&raw, "DEL", &[k]).await.unwrap();
            }
            for k in ["{$ns}:rev", "{$ns}:leases"] {
                let k = fill(k, ns, &ctx);
                let kind: String = cmd(&raw, "TYPE", &[&k]).await.unwrap();
                let want = if k.ends_with("rev") { "string" } else { "zset" };
                let bad_rev = want == "string"
                    && kind == "string"
                    && !cmd::<String>(&raw, "GET", &[&k])
                        .await
                        .unwrap()
                        .bytes()
                        .all(|b| b.is_ascii_digit());
                if (kind != "none" && kind != want) || bad_rev {
                    let _: i64 = cmd(&raw, "DEL", &[&k]).await.unwrap();
                }
            }
            let _ = ctx.session.close().await;
            let _ = ctx.client.revoke(ctx.other).await;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Nothing outside the namespace.
    for k in keys(&raw, "*").await {
        assert!(k.starts_with("{fd}:"), "{k}");
    }
}

#[tokio::test]
async fn a_revoke_touches_only_entries_of_its_own_lease() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "fa").await;
    let session = client.session().await.unwrap();
    let jobs = client.queue("jobs").unwrap();
    for j in ["a", "b", "c"] {
        jobs.enqueue(j).await.unwrap();
    }
    // Foreign members, and entries naming them in the session's attachment set: a job queue
    // item without a space, an rwlock member without a lease part.
    let _: i64 = cmd(&raw, "ZADD", &["{fa}:queue:jobs", "0", "nospace"])
        .await
        .unwrap();
    let _: i64 = cmd(&raw, "ZADD", &["{fa}:rwlock:r", "1", "nodot"])
        .await
        .unwrap();
    let akey = format!("{{fa}}:attached:{}", session.lease());
    let _: i64 = cmd(
        &raw,
        "SADD",
        &[&akey, "z nospace {fa}:queue:jobs", "z nodot {fa}:rwlock:r"],
    )
    .await
    .unwrap();
    let queue = dump(&raw, "{fa}:queue:jobs").await;
    let rwlock = dump(&raw, "{fa}:rwlock:r").await;
    session.close().await.unwrap();
    assert_eq!(dump(&raw, "{fa}:queue:jobs").await, queue, "jobs deleted");
    assert_eq!(dump(&raw, "{fa}:rwlock:r").await, rwlock);
    assert!(!exists(&raw, &akey).await);
    assert_eq!(zcard(&raw, "{fa}:queue:jobs").await, 4);
    assert_eq!(jobs.try_dequeue().await.unwrap().as_deref(), Some("a"));
}

#[tokio::test]
async fn keepalive_survives_foreign_data_in_other_leases() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "fk").await;
    let short = || SessionOptions::new().ttl(Duration::from_secs(1));
    let alive = client.session_with(short()).await.unwrap();
    // Renewed in the same batches as `alive`: its lease hash becomes foreign data.
    let spoiled = client.session_with(short()).await.unwrap();
    let spoiled_key = format!("{{fk}}:lease:{}", spoiled.lease());
    let _: i64 = cmd(&raw, "DEL", &[&spoiled_key]).await.unwrap();
    let _: () = cmd(&raw, "SET", &[&spoiled_key, "foreign"]).await.unwrap();
    // Never renewed: swept by `alive`'s renewals, with garbage among its attachments.
    let dead = client.grant(Duration::from_secs(1)).await.unwrap().id;
    let member = format!("{dead}.1.x");
    for (name, args) in [
        ("ZADD", ["{fk}:rwlock:r", "1", "nodot"]),
        ("ZADD", ["{fk}:semaphore:s", "1", &member]),
        ("HSET", ["{fk}:semaphore-size:s", "foreign", "hash"]),
        ("ZADD", ["{fk}:dbarrier:d", "1", &member]),
        ("HSET", ["{fk}:dbarrier-ready:d", "foreign", "hash"]),
        ("ZADD", ["{fk}:queue:q", "0", "nospace"]),
    ] {
        let _: fred::types::Value = cmd(&raw, name, &args).await.unwrap();
    }
    let akey = format!("{{fk}}:attached:{dead}");
    let z = |k: &str| format!("z {member} {k}");
    let entries = [
        "z nodot {fk}:rwlock:r".to_owned(),
        z("{fk}:semaphore:s"),
        z("{fk}:dbarrier:d"),
        "z nospace {fk}:queue:q".to_owned(),
        "z".to_owned(),
        "k".to_owned(),
    ];
    let mut args = vec![akey.as_str()];
    args.extend(entries.iter().map(String::as_str));
    let _: i64 = cmd(&raw, "SADD", &args).await.unwrap();
    let foreign = [
        spoiled_key.as_str(),
        "{fk}:rwlock:r",
        "{fk}:semaphore-size:s",
        "{fk}:dbarrier-ready:d",
        "{fk}:queue:q",
    ];
    let mut before = Vec::new();
    for k in foreign {
        before.push(dump(&raw, k).await);
    }
    // The spoiled session is reported gone, the dead lease swept, and `alive` lives on for
    // three of its TTLs.
    let end = tokio::time::timeout(Duration::from_secs(3), spoiled.done())
        .await
        .expect("the spoiled session ends");
    assert_eq!(end, leasehold::SessionEnd::LeaseNotFound);
    assert!(
        eventually(Duration::from_secs(5), || async {
            let n: Option<f64> = cmd(&raw, "ZSCORE", &["{fk}:leases", &dead.to_string()])
                .await
                .unwrap();
            n.is_none()
        })
        .await,
        "the dead lease is swept"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(3), alive.done())
            .await
            .is_err(),
        "session lost: {:?}",
        alive.state()
    );
    assert!(alive.is_valid());
    for (k, d) in foreign.iter().zip(&before) {
        assert_eq!(&dump(&raw, k).await, d, "{k} changed");
    }
    assert_eq!(
        zcard(&raw, "{fk}:semaphore:s").await,
        0,
        "own entry removed"
    );
}

#[tokio::test]
async fn a_deleted_revision_counter_or_registry_is_recreated() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "fr").await;
    let session = client
        .session_with(SessionOptions::new().ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    let mutex = session.mutex("m").unwrap();
    let g = mutex.lock().await.unwrap();
    let first = g.fencing_token();
    g.unlock().await.unwrap();
    let _: i64 = cmd(&raw, "DEL", &["{fr}:rev"]).await.unwrap();
    let g = mutex.lock().await.unwrap();
    assert!(g.fencing_token() > first, "tokens keep rising");
    g.unlock().await.unwrap();
    assert!(exists(&raw, "{fr}:rev").await);
    // The registry is authoritative: without it the session's lease is gone, as after a
    // restart without data; new sessions work.
    let _: i64 = cmd(&raw, "DEL", &["{fr}:leases"]).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(3), session.done())
        .await
        .expect("the session notices");
    assert_eq!(end, leasehold::SessionEnd::LeaseNotFound);
    let fresh = client.session().await.unwrap();
    let g = fresh.mutex("m").unwrap().lock().await.unwrap();
    assert!(g.fencing_token() > first);
    assert!(exists(&raw, "{fr}:leases").await);
    assert_eq!(client.leases().await.unwrap().len(), 1);
}
