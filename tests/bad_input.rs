//! Bad input never panics, is rejected with the error its documented limit names, and touches
//! nothing outside the namespace. Property tests over the public API; each test function runs
//! its cases against one throwaway redis-server and one runtime.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use leasehold::{
    Client, Error, LeaseId, QueueKind, SessionOptions, MAX_LABEL_LEN, MAX_NAMESPACE_LEN,
    MAX_NAME_LEN, MAX_TTL, MAX_VALUE_LEN, MIN_TTL,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::*;

/// Cases per property: enough to hit every boundary strategy several times, small enough for
/// the file to run in seconds on two cores.
const CASES: u32 = 96;

/// Panics raised in the library's own code, wherever they happen (a spawned task's panic
/// would otherwise only be logged).
static LIBRARY_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_library_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info
                .location()
                .is_some_and(|l| l.file().starts_with("src/"))
            {
                LIBRARY_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Run `test` on `CASES` values of `strategy`, then check no library code panicked.
fn check<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    count_library_panics();
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
    assert_eq!(
        LIBRARY_PANICS.load(Ordering::SeqCst),
        0,
        "library code panicked"
    );
}

/// Keys that exist outside the `{ns}:` prefix of every namespace in `namespaces`.
async fn outside(raw: &fred::clients::Client, namespaces: &[String]) -> Vec<String> {
    keys(raw, "*")
        .await
        .into_iter()
        .filter(|k| {
            !namespaces
                .iter()
                .any(|ns| k.starts_with(&format!("{{{ns}}}:")))
        })
        .collect()
}

async fn connect(server: &RedisServer, ns: &str) -> leasehold::Result<Client> {
    Client::builder()
        .url(server.url())
        .namespace(ns)
        .pool_size(1)
        .command_timeout(Duration::from_secs(2))
        .build()
        .await
}

/// Strings that stress key building: empty, key syntax (`{`, `}`, `:`, glob characters),
/// control characters and NUL, any Unicode, and lengths around the limits in bytes.
fn text(limit: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        any::<String>(),
        "[{}:*?\\[\\] \\x00-\\x1f\\\\.-]{1,16}",
        "\\PC{1,40}",
        (limit - 2..=limit + 2).prop_map(|n| "n".repeat(n)),
        // Two-byte characters: the byte length straddles the limit on an odd count.
        (limit / 2 - 1..=limit / 2 + 1).prop_map(|n| "é".repeat(n)),
        // A four-byte character at the end pushes the length just past the limit.
        (1usize..=4).prop_map(move |d| format!("{}𝄞", "n".repeat(limit + d - 4))),
        Just("x".repeat(limit * 50)),
    ]
}

fn name_error(r: &leasehold::Result<impl Sized>, ns: &str, kind: &str) -> bool {
    matches!(r, Err(Error::InvalidName { namespace, kind: k, .. }) if namespace == ns && *k == kind)
}

#[test]
fn names_are_checked_and_any_valid_name_works() {
    let rt = runtime();
    let server = server();
    let ns = "bi-names";
    let (raw, client, session) = rt.block_on(async {
        let client = client(&server, ns).await;
        let session = client.session().await.unwrap();
        (raw(&server).await, client, session)
    });
    check(text(MAX_NAME_LEN), |name| {
        rt.block_on(async {
            let valid = !name.is_empty() && name.len() <= MAX_NAME_LEN;
            let bad = |r: &leasehold::Result<()>, kind: &str| {
                if valid {
                    assert!(r.is_ok(), "{kind} {name:?}: {r:?}");
                } else {
                    assert!(name_error(r, ns, kind), "{kind} {name:?}: {r:?}");
                }
            };
            let mutex = async {
                session.mutex(&name)?.try_lock().await?.unlock().await?;
                client.inspect(QueueKind::Mutex, &name).await.map(drop)
            };
            bad(&mutex.await, "mutex");
            let rwlock = async {
                session.rwlock(&name)?.try_write().await?.unlock().await?;
                client.inspect(QueueKind::RwLock, &name).await.map(drop)
            };
            bad(&rwlock.await, "rwlock");
            let semaphore = async {
                session
                    .semaphore(&name, 2)?
                    .try_acquire()
                    .await?
                    .release()
                    .await?;
                client.inspect(QueueKind::Semaphore, &name).await.map(drop)
            };
            bad(&semaphore.await, "semaphore");
            let election = async {
                let e = session.election(&name)?;
                e.campaign("v").await?;
                let leader = e.leader().await?.expect("a leader");
                assert_eq!(leader.value, "v");
                assert_eq!(leader.lease, session.lease());
                e.resign().await?;
                client.inspect(QueueKind::Election, &name).await.map(drop)
            };
            bad(&election.await, "election");
            let barrier = async {
                let b = session.barrier(&name)?;
                b.hold().await?;
                assert!(b.is_held().await?);
                assert!(b.release().await?);
                Ok(())
            };
            bad(&barrier.await, "barrier");
            let dbarrier = async {
                let d = session.double_barrier(&name, 1)?;
                d.enter().await?;
                d.leave().await
            };
            bad(&dbarrier.await, "double barrier");
            for q in [client.queue(&name), client.priority_queue(&name)] {
                let queue = async {
                    let q = q?;
                    q.enqueue("item").await?;
                    assert_eq!(q.try_dequeue().await?.as_deref(), Some("item"));
                    Ok(())
                };
                bad(&queue.await, "queue");
            }
            let kv = async {
                client.put(&name, "v", None).await?;
                let kv = client.get(&name).await?.expect("the key");
                assert_eq!((kv.key.as_str(), kv.value.as_str()), (name.as_str(), "v"));
                let page = client.get_prefix(&name, 10, None).await?;
                assert_eq!(
                    page.kvs.first().map(|kv| kv.key.as_str()),
                    Some(name.as_str())
                );
                session.put(&name, "w").await?;
                assert_eq!(
                    client.get(&name).await?.map(|kv| kv.lease),
                    Some(Some(session.lease()))
                );
                assert!(client.delete(&name).await?);
                assert!(client.get(&name).await?.is_none());
                Ok(())
            };
            bad(&kv.await, "key");
            // A prefix may be empty (every key); past the name limit it is refused.
            let range = client.get_prefix(&name, 1, None).await;
            if name.len() > MAX_NAME_LEN {
                assert!(matches!(range, Err(Error::InvalidArgument(_))), "{range:?}");
            } else {
                assert!(range.is_ok(), "{range:?}");
            }
            let out = outside(&raw, &[ns.to_owned()]).await;
            prop_assert!(out.is_empty(), "keys outside the namespace: {out:?}");
            Ok(())
        })
    });
    assert!(session.is_valid());
}

#[test]
fn namespaces_are_checked_and_keys_stay_inside_them() {
    let rt = runtime();
    let server = server();
    let raw = rt.block_on(raw(&server));
    let used = Mutex::new(Vec::<String>::new());
    let namespace = prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_.-]{1,8}",
        "[A-Za-z0-9_.-]{62,66}",
        "[A-Za-z0-9_.{}:*\\x00 é-]{0,8}",
    ];
    check(namespace, |ns| {
        rt.block_on(async {
            let valid = (1..=MAX_NAMESPACE_LEN).contains(&ns.len())
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            match connect(&server, &ns).await {
                Ok(client) => {
                    prop_assert!(valid, "accepted {ns:?}");
                    used.lock().unwrap().push(ns.clone());
                    assert_eq!(client.namespace(), ns);
                    let session = client.session().await.unwrap();
                    let guard = session.mutex("m").unwrap().lock().await.unwrap();
                    assert!(guard.key().starts_with(&format!("{{{ns}}}:")));
                    guard.unlock().await.unwrap();
                    session.put("k", "v").await.unwrap();
                    client.queue("q").unwrap().enqueue("x").await.unwrap();
                    session.close().await.unwrap();
                }
                Err(Error::InvalidNamespace { namespace, .. }) => {
                    prop_assert!(!valid, "refused {ns:?}");
                    prop_assert_eq!(namespace, ns);
                }
                Err(e) => panic!("{ns:?}: {e:?}"),
            }
            let namespaces = used.lock().unwrap().clone();
            let out = outside(&raw, &namespaces).await;
            prop_assert!(out.is_empty(), "keys outside the namespaces: {out:?}");
            Ok(())
        })
    });
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        any::<String>(),
        "[\\x00-\\x7f]{1,64}",
        (MAX_VALUE_LEN - 2..=MAX_VALUE_LEN + 2).prop_map(|n| "v".repeat(n)),
        (MAX_VALUE_LEN / 2 - 1..=MAX_VALUE_LEN / 2 + 1).prop_map(|n| "é".repeat(n)),
        Just("v".repeat(2 * MAX_VALUE_LEN)),
    ]
}

#[test]
fn values_up_to_the_limit_round_trip_and_larger_ones_are_refused() {
    let rt = runtime();
    let server = server();
    let ns = "bi-values";
    let (raw, client, session, election) = rt.block_on(async {
        let client = client(&server, ns).await;
        let session = client.session().await.unwrap();
        let election = session.election("e").unwrap();
        election.campaign("first").await.unwrap();
        (raw(&server).await, client, session, election)
    });
    check(value(), |value| {
        rt.block_on(async {
            let fits = value.len() <= MAX_VALUE_LEN;
            let expect = |r: leasehold::Result<()>, kind: &str| {
                if fits {
                    assert!(r.is_ok(), "{kind} of {} bytes: {r:?}", value.len());
                } else {
                    assert!(
                        matches!(&r, Err(Error::ValueTooLarge { namespace, kind: k, len, max, .. })
                            if namespace == ns && *k == kind && *len == value.len()
                                && *max == MAX_VALUE_LEN),
                        "{kind} of {} bytes: {r:?}",
                        value.len()
                    );
                }
            };
            let put = async {
                client.put("k", &value, None).await?;
                assert_eq!(
                    client.get("k").await?.map(|kv| kv.value),
                    Some(value.clone())
                );
                session.put("k", &value).await?;
                assert_eq!(
                    client.get("k").await?.map(|kv| kv.value),
                    Some(value.clone())
                );
                Ok(())
            };
            expect(put.await, "key");
            let proclaim = async {
                election.proclaim(&value).await?;
                assert_eq!(
                    election.leader().await?.map(|l| l.value),
                    Some(value.clone())
                );
                Ok(())
            };
            expect(proclaim.await, "election");
            // Campaigning again with the same lease resumes the candidacy with the new value.
            let campaign = async {
                let again = session.election("e")?;
                again.campaign(&value).await?;
                assert_eq!(again.leader().await?.map(|l| l.value), Some(value.clone()));
                Ok(())
            };
            expect(campaign.await, "election");
            let queue = async {
                let q = client.priority_queue("q")?;
                q.enqueue_with_priority(&value, u16::MAX).await?;
                assert_eq!(q.try_dequeue().await?, Some(value.clone()));
                Ok(())
            };
            expect(queue.await, "queue");
            let out = outside(&raw, &[ns.to_owned()]).await;
            prop_assert!(out.is_empty(), "keys outside the namespace: {out:?}");
            Ok(())
        })
    });
}

fn ttl() -> impl Strategy<Value = Duration> {
    let ns = Duration::from_nanos;
    prop_oneof![
        Just(Duration::ZERO),
        (1u64..1_000_000).prop_map(ns),
        Just(MIN_TTL - ns(1)),
        Just(MIN_TTL),
        Just(MIN_TTL + ns(1)),
        Just(MIN_TTL + ns(999_999)),
        Just(MAX_TTL - ns(1)),
        Just(MAX_TTL),
        Just(MAX_TTL + ns(1)),
        Just(Duration::MAX),
        (1u64..120_000).prop_map(Duration::from_millis),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

#[test]
fn ttls_and_labels_are_checked_and_granted_in_whole_milliseconds() {
    let rt = runtime();
    let server = server();
    let ns = "bi-ttls";
    let (raw, client) = rt.block_on(async { (raw(&server).await, client(&server, ns).await) });
    let label = prop_oneof![
        Just(String::new()),
        "\\PC{0,20}",
        (MAX_LABEL_LEN - 1..=MAX_LABEL_LEN + 1).prop_map(|n| "l".repeat(n)),
        (MAX_LABEL_LEN / 2..=MAX_LABEL_LEN / 2 + 1).prop_map(|n| "é".repeat(n)),
    ];
    check((ttl(), label), |(ttl, label)| {
        rt.block_on(async {
            let ttl_ok = (MIN_TTL..=MAX_TTL).contains(&ttl);
            let whole = Duration::from_millis(ttl.as_millis() as u64);
            let ttl_error = |r: &leasehold::Result<()>| {
                matches!(r, Err(Error::InvalidTtl { ttl: t, min, max, .. })
                    if *t == ttl && *min == MIN_TTL && *max == MAX_TTL)
            };
            let granted = async {
                let lease = client.grant(ttl).await?;
                assert_eq!(lease.ttl, whole);
                let info = client.time_to_live(lease.id).await?.expect("alive");
                assert_eq!(info.granted_ttl, whole);
                assert!(info.remaining <= whole);
                assert_eq!(client.keep_alive_once(lease.id).await?, whole);
                client.revoke(lease.id).await
            }
            .await;
            if ttl_ok {
                prop_assert!(granted.is_ok(), "{ttl:?}: {granted:?}");
            } else {
                prop_assert!(ttl_error(&granted), "{ttl:?}: {granted:?}");
            }
            let opts = SessionOptions::new().ttl(ttl).label(label.clone());
            let session = async {
                let s = client.session_with(opts).await?;
                assert_eq!(s.ttl(), whole);
                let info = client.time_to_live(s.lease()).await?.expect("alive");
                assert_eq!(info.label, label);
                s.close().await
            }
            .await;
            if !ttl_ok {
                prop_assert!(ttl_error(&session), "{ttl:?}: {session:?}");
            } else if label.len() > MAX_LABEL_LEN {
                prop_assert!(
                    matches!(session, Err(Error::InvalidArgument(_))),
                    "label of {} bytes: {session:?}",
                    label.len()
                );
            } else {
                prop_assert!(session.is_ok(), "{ttl:?} {label:?}: {session:?}");
            }
            let out = outside(&raw, &[ns.to_owned()]).await;
            prop_assert!(out.is_empty(), "keys outside the namespace: {out:?}");
            Ok(())
        })
    });
    // Nothing granted is left behind.
    assert!(rt.block_on(client.leases()).unwrap().is_empty());
}

fn hyphenated(n: u128) -> String {
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[test]
fn lease_ids_parse_or_are_refused_and_unknown_ones_are_not_found() {
    let rt = runtime();
    let server = server();
    let ns = "bi-leases";
    let (raw, client) = rt.block_on(async { (raw(&server).await, client(&server, ns).await) });
    let text = prop_oneof![
        any::<String>(),
        "[0-9a-fA-F-]{30,40}",
        "\\{?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\\}?",
        "(urn:uuid:)?[0-9a-fA-F]{32}",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{11}[g-z\\x00 ]",
    ];
    let id = prop_oneof![Just(0u128), Just(u128::MAX), any::<u128>()];
    check((text, id), |(text, n)| {
        rt.block_on(async {
            match text.parse::<LeaseId>() {
                Ok(id) => {
                    // Whatever form was accepted, it prints as the one the key layout uses.
                    let shown = id.to_string();
                    prop_assert_eq!(shown.len(), 36);
                    prop_assert_eq!(shown.parse::<LeaseId>().unwrap(), id);
                }
                Err(Error::InvalidArgument(m)) => prop_assert!(m.contains("lease id"), "{m}"),
                Err(e) => panic!("{text:?}: {e:?}"),
            }
            let s = hyphenated(n);
            let id: LeaseId = s.parse().unwrap();
            prop_assert_eq!(id.to_string(), s.clone());
            prop_assert_eq!(s.to_uppercase().parse::<LeaseId>().unwrap(), id);
            // A well-formed id nobody granted: not found, and nothing is written.
            let before: BTreeSet<String> = keys(&raw, "*").await.into_iter().collect();
            let not_found = |r: leasehold::Result<()>| {
                matches!(r, Err(Error::LeaseNotFound { lease, ref namespace, .. })
                    if lease == id && namespace == ns)
            };
            prop_assert!(not_found(client.keep_alive_once(id).await.map(drop)));
            prop_assert!(not_found(client.revoke(id).await));
            prop_assert!(not_found(client.put("k", "v", Some(id)).await.map(drop)));
            let adopt = client.session_with(SessionOptions::new().lease(id)).await;
            prop_assert!(not_found(adopt.map(drop)));
            prop_assert!(client.time_to_live(id).await.unwrap().is_none());
            prop_assert!(client.time_to_live_with_keys(id).await.unwrap().is_none());
            let after: BTreeSet<String> = keys(&raw, "*").await.into_iter().collect();
            prop_assert_eq!(&after, &before);
            let out = outside(&raw, &[ns.to_owned()]).await;
            prop_assert!(out.is_empty(), "keys outside the namespace: {out:?}");
            Ok(())
        })
    });
}

#[test]
fn counts_and_limits_are_checked() {
    let rt = runtime();
    let server = server();
    let ns = "bi-counts";
    let (raw, client, session) = rt.block_on(async {
        let client = client(&server, ns).await;
        let session = client.session().await.unwrap();
        (raw(&server).await, client, session)
    });
    let count = || {
        prop_oneof![
            Just(0u32),
            1u32..8,
            Just(leasehold::MAX_PERMITS + 1),
            any::<u32>()
        ]
    };
    let limit = prop_oneof![
        Just(0usize),
        1usize..4,
        Just(leasehold::MAX_RANGE + 1),
        any::<usize>()
    ];
    check(
        (count(), count(), count(), limit),
        |(size, n, parties, limit)| {
            rt.block_on(async {
                let permits = async {
                    let s = session.semaphore("s", size)?;
                    s.try_acquire_many(n).await?.release().await
                }
                .await;
                let size_ok = (1..=leasehold::MAX_PERMITS).contains(&size);
                if size_ok && (1..=size).contains(&n) {
                    prop_assert!(permits.is_ok(), "{size} {n}: {permits:?}");
                } else {
                    prop_assert!(
                        matches!(permits, Err(Error::InvalidArgument(_))),
                        "{permits:?}"
                    );
                }
                let barrier = session.double_barrier("d", parties).map(drop);
                prop_assert_eq!(
                    parties == 0,
                    matches!(barrier, Err(Error::InvalidArgument(_)))
                );
                let range = client.get_prefix("", limit, None).await.map(drop);
                if (1..=leasehold::MAX_RANGE).contains(&limit) {
                    prop_assert!(range.is_ok(), "{limit}: {range:?}");
                } else {
                    prop_assert!(matches!(range, Err(Error::InvalidArgument(_))), "{range:?}");
                }
                let out = outside(&raw, &[ns.to_owned()]).await;
                prop_assert!(out.is_empty(), "keys outside the namespace: {out:?}");
                Ok(())
            })
        },
    );
}
