//! The safety checker of `tests/safety.rs` on a spread namespace (`ClientBuilder::spread`) of a
//! local 3-primary Cluster: client processes of several contenders each lock names that live in
//! different sub-namespaces, on every shard, under faults aimed at what a spread session adds
//! (its sub-leases: granted by the first lock call in a sub-namespace, dropped when unused,
//! tombstoned by a revoke from outside). The properties are checked per lock name, as fencing
//! tokens rise per name (`tests/support/checker.rs`): the resource keeps the highest token of
//! each name, holds of one name never overlap, tokens of one name rise in hold order, and some
//! lock is acquired again within TTL + TTL/3 + 1 s of each heal.
//!
//! A hold's belief ends at the earliest of release, the session's validity and the end of the
//! session (`is_valid()` turning false): a spread session ends as soon as any of its leases is
//! lost, and then revokes the others itself, so its locks in healthy sub-namespaces pass on
//! before its validity would have run out (`end_with_session` in the checker).
//!
//! Each node of the cluster announces a [`Proxy`] in front of it (`cluster-announce-port`), so
//! that every client's traffic with one node goes through that proxy: a schedule can lose one
//! reply there. One schedule runs at a time (they share the machine's two CPUs badly).

#[path = "support/checker.rs"]
mod checker;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use checker::{mono_ns, violations_of, ChildConfig, Hold, Outcome, Resource};
use leasehold::Client;
use leasehold_testing::{Proxy, RedisCluster};
use tokio::process::Child;

const NAMESPACE: &str = "ss";
const SPREAD: u16 = 48;

/// Entry point of a client process (not a test of its own: the schedules run it).
#[test]
#[ignore = "run as a child process by the safety schedules"]
fn checker_child() {
    checker::child_main();
}

/// One schedule at a time: each runs a cluster, its proxies and several client processes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a run is made of.
#[derive(Debug, Clone)]
struct Setup {
    processes: usize,
    tasks: usize,
    ttl: Duration,
    hold: Duration,
    /// Lock names, each in its own sub-namespace, as many on each node.
    names: usize,
    groups: usize,
    phase: Duration,
    lock_delay: Duration,
    revoke_one_in: u64,
    /// Extra `redis-server` arguments of every node.
    node_args: &'static [&'static str],
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            processes: 3,
            tasks: 3,
            ttl: Duration::from_secs(1),
            hold: Duration::from_millis(10),
            names: 12,
            groups: 1,
            phase: Duration::ZERO,
            lock_delay: Duration::ZERO,
            revoke_one_in: 0,
            node_args: &[],
        }
    }
}

struct SpreadRun {
    cluster: RedisCluster,
    /// One in front of each node (same index); the nodes announce them.
    proxies: Vec<Proxy>,
    resource: Resource,
    children: Vec<Child>,
    /// The parent's client of the spread namespace: where names live.
    client: Client,
    names: Vec<String>,
    ttl: Duration,
    heals: Vec<u64>,
    started: Instant,
}

impl SpreadRun {
    async fn start(setup: &Setup) -> SpreadRun {
        let started = Instant::now();
        let args = setup.node_args;
        let mut cluster = tokio::task::spawn_blocking(move || RedisCluster::start_with(3, args))
            .await
            .unwrap()
            .expect("a local cluster");
        let mut proxies = Vec::new();
        for n in cluster.nodes() {
            proxies.push(Proxy::start(n.port()).await.unwrap());
        }
        let ports: Vec<u16> = proxies.iter().map(Proxy::port).collect();
        let cluster =
            tokio::task::spawn_blocking(move || cluster.announce_ports(&ports).map(|()| cluster))
                .await
                .unwrap()
                .expect("the nodes announce their proxies");
        let client = Client::builder()
            .url(cluster.url())
            .namespace(NAMESPACE)
            .spread(SPREAD)
            .command_timeout(Duration::from_secs(3))
            .build()
            .await
            .expect("the parent's client");
        let names = names_on_every_node(&client, &cluster, setup.names);
        let resource = Resource::start().await;
        let children = (0..setup.processes)
            .map(|id| {
                checker::spawn_child(&ChildConfig {
                    spread: SPREAD,
                    names: names.clone(),
                    groups: setup.groups,
                    phase: setup.phase,
                    ttl: setup.ttl,
                    hold: setup.hold,
                    tasks: setup.tasks,
                    end_with_session: true,
                    lock_delay: setup.lock_delay,
                    revoke_one_in: setup.revoke_one_in,
                    ..ChildConfig::single(cluster.url(), NAMESPACE, resource.port, id)
                })
            })
            .collect();
        SpreadRun {
            cluster,
            proxies,
            resource,
            children,
            client,
            names,
            ttl: setup.ttl,
            heals: Vec::new(),
            started,
        }
    }

    fn acquisitions(&self) -> usize {
        self.resource.ledger.lock().unwrap().holds.len()
    }

    /// Wait (blocking the cluster's helpers off the runtime) until every node agrees the
    /// cluster is ok.
    async fn wait_cluster_ok(self) -> SpreadRun {
        let SpreadRun {
            cluster,
            proxies,
            resource,
            children,
            client,
            names,
            ttl,
            heals,
            started,
        } = self;
        let cluster = tokio::task::spawn_blocking(move || {
            cluster.wait_ok(Duration::from_secs(30)).map(|()| cluster)
        })
        .await
        .unwrap()
        .expect("the cluster heals");
        SpreadRun {
            cluster,
            proxies,
            resource,
            children,
            client,
            names,
            ttl,
            heals,
            started,
        }
    }

    async fn finish(mut self, what: &str) -> Outcome {
        let o = self
            .resource
            .finish(&mut self.children, &self.heals, self.ttl)
            .await;
        let acquired: BTreeMap<String, usize> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let count = self
                    .resource
                    .ledger
                    .lock()
                    .unwrap()
                    .holds
                    .iter()
                    .filter(|h| h.name == i)
                    .count();
                (format!("{n}@{}", self.client.sub_namespace_of(n)), count)
            })
            .collect();
        let metric = |m: &str| o.counter(m);
        println!(
            "{what}: {:.1} s, {} acquisitions of {} names, {} stale writes rejected, {} faults \
             healed, {} violations\n  per name@sub-namespace: {acquired:?}\n  sub-leases granted \
             {}, dropped {}; sessions lost {}; revoke races (failed, ended, won) {:?}",
            self.started.elapsed().as_secs_f64(),
            o.acquisitions,
            o.names.len(),
            o.rejected,
            self.heals.len(),
            o.violations.len(),
            metric(leasehold::metrics::SUB_LEASES_GRANTED),
            metric(leasehold::metrics::SUB_LEASES_DROPPED),
            metric(leasehold::metrics::SESSION_LOST),
            o.races,
        );
        let of = |m: &str| -> Vec<(&String, &u64)> {
            o.metrics.iter().filter(|(k, _)| k.starts_with(m)).collect()
        };
        println!(
            "  {:?}\n  {:?}",
            of(leasehold::metrics::SESSION_LOST),
            of(leasehold::metrics::REDIS_ERRORS)
        );
        if !o.race_log.is_empty() {
            // How the races ended, by how much later the lock call started (0.5 ms buckets).
            let mut table: BTreeMap<&str, BTreeMap<i64, u64>> = BTreeMap::new();
            for (how, skew) in &o.race_log {
                *table
                    .entry(how)
                    .or_default()
                    .entry(skew.div_euclid(500_000) * 500)
                    .or_default() += 1;
            }
            println!("  revoke races, how they ended by lock-call skew (µs bucket: count):");
            for (how, buckets) in table {
                println!("    {how}: {buckets:?}");
            }
        }
        for v in o.violations.iter().take(20) {
            println!("  VIOLATION {v}");
        }
        o
    }
}

/// `count` lock names `n<i>`, each in its own sub-namespace, as many served by each node.
fn names_on_every_node(client: &Client, cluster: &RedisCluster, count: usize) -> Vec<String> {
    let nodes = cluster.nodes().len();
    let mut per_node = vec![0; nodes];
    let mut subs = HashSet::new();
    let mut names = Vec::new();
    for i in 0.. {
        if names.len() == count {
            break;
        }
        let name = format!("n{i}");
        let sub = client.sub_namespace_of(&name).to_owned();
        let node = cluster.node_of(&sub).unwrap();
        if per_node[node] < count.div_ceil(nodes) && subs.insert(sub) {
            per_node[node] += 1;
            names.push(name);
        }
    }
    names
}

fn check(o: &Outcome, what: &str, min_acquisitions: usize) {
    assert!(
        o.acquisitions >= min_acquisitions,
        "{what}: the clients made progress ({} acquisitions)",
        o.acquisitions
    );
    assert!(o.violations.is_empty(), "{what}: {:#?}", o.violations);
}

/// 1. A revoke from another client (`Client::revoke(session.lease())`) lands while the session
///    makes its first lock call in a sub-namespace: each contender, about one lock call in 2,
///    races such a call (on a name in a sub-namespace its session has not used) with a revoke
///    of its session, skewed by up to 2 ms either way, half the time holding another lock
///    meanwhile. Besides the checker's properties: once the revoke returned and the lock call
///    is done, nothing of the session is left in that sub-namespace nor in the held lock's
///    (no sub-lease, attachment or queue entry). The mutexes have a lock-delay, longer than
///    the session takes to learn of the revoke (a ring, or its next renewal, every 333 ms):
///    without one, a revoke passes the lock on as it tells the holder, and the next holder may
///    get it first (`GUARANTEES.md`, 9). The printout shows how the races ended by skew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revokes_racing_first_lock_calls_in_sub_namespaces() {
    let _one = ONE_AT_A_TIME.lock().await;
    let setup = Setup {
        names: 18,
        revoke_one_in: 2,
        lock_delay: Duration::from_millis(700),
        ..Setup::default()
    };
    let run = SpreadRun::start(&setup).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let o = run.finish("revokes racing first lock calls").await;
    check(&o, "revokes", 50);
    let races: u64 = o.races.iter().sum();
    assert!(races >= 50, "the contenders raced revokes: {:?}", o.races);
    assert!(
        o.races[0] > 0 && o.races[1] + o.races[2] > 0,
        "the races went both ways: {:?}",
        o.races
    );
}

/// Whether `bytes` hold a renewal's flag that drops an idle sub-lease: the argument
/// `d<16 hex digits>` (`RenewAs::DropIfIdle`), as RESP: `$17\r\nd…\r\n`.
fn asks_a_drop(bytes: &[u8]) -> bool {
    bytes.windows(24).any(|w| {
        w.starts_with(b"$17\r\nd")
            && w[6..22].iter().all(u8::is_ascii_hexdigit)
            && w.ends_with(b"\r\n")
    })
}

/// 2. The reply of the renewal that drops an idle sub-lease is lost: the contenders lock names
///    of one half of the sub-namespaces for 1.5 s, then of the other half, so every session's
///    sub-leases in the half it left are dropped (unused for a renewal interval), and granted
///    again when it comes back. The proxy of one node at a time, in turn, lets the next
///    renewal asking a drop reach Redis, which drops the sub-lease, then either swallows its
///    reply and every later one on that connection and closes it (in a Cluster, fred sends a
///    call cut off that way again on a new connection: the drop is asked twice), or holds the
///    replies on that connection for 600 ms, past the renewal's timeout (the supervisor asks
///    again at a later tick; the late reply is dropped). TTL 1 s (the least a session may
///    have; renewals every 333 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replies_of_renewals_that_drop_idle_sub_leases() {
    let _one = ONE_AT_A_TIME.lock().await;
    let setup = Setup {
        hold: Duration::from_millis(5),
        names: 12,
        groups: 2,
        phase: Duration::from_millis(1500),
        ..Setup::default()
    };
    let mut run = SpreadRun::start(&setup).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let until = Instant::now() + Duration::from_secs(9);
    let (mut round, mut cuts, mut stalls) = (0, 0, 0);
    // Held past the renewal's attempt timeout (TTL/4) and the lock calls' (TTL/2).
    let stall = Duration::from_millis(600);
    while Instant::now() < until {
        let proxy = &run.proxies[round % run.proxies.len()];
        let cut = round % 2 == 0;
        round += 1;
        let before = proxy.cuts_after();
        if cut {
            proxy.cut_after(asks_a_drop);
        } else {
            proxy.stall_after(asks_a_drop, stall);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while proxy.cuts_after() == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proxy.disarm();
        if proxy.cuts_after() > before {
            // A cut closes the connection 50 ms after the drop went up.
            tokio::time::sleep(if cut {
                Duration::from_millis(60)
            } else {
                stall
            })
            .await;
            run.heals.push(mono_ns());
            if cut {
                cuts += 1;
            } else {
                stalls += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(setup.ttl * 3).await;
    let o = run.finish("lost replies of sub-lease drops").await;
    println!("  replies of drops lost: {cuts} with the connection, {stalls} held past the timeout");
    check(&o, "lost drop replies", 100);
    assert!(
        cuts >= 4 && stalls >= 4,
        "drops whose reply was lost: {cuts} cut, {stalls} stalled"
    );
    assert!(
        o.counter(leasehold::metrics::SUB_LEASES_DROPPED) >= 10,
        "idle sub-leases were dropped"
    );
}

/// 3. One shard dies while the contenders hold locks on every shard (holds of 200 ms), and
///    comes back: first SIGKILLed and started again 2.5 s later with its data (AOF, fsync
///    always), then another SIGSTOPped for 2.5 s (past the TTL) and resumed. While one is down
///    the other nodes soon answer CLUSTERDOWN too (full coverage required). Safety throughout;
///    progress once the cluster is ok again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_killed_or_stopped_past_the_ttl_then_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let setup = Setup {
        hold: Duration::from_millis(200),
        names: 9,
        // Node timeout 1 s: the others mark a node down 1 s into its silence (the whole cluster
        // answers CLUSTERDOWN), and take it back 2 s after.
        node_args: &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--cluster-node-timeout",
            "1000",
        ],
        ..Setup::default()
    };
    let mut run = SpreadRun::start(&setup).await;
    let home = run.cluster.node_of(NAMESPACE).unwrap();
    // A node that is not the home namespace's: sessions are still granted while it is down,
    // until the cluster is.
    let victim = (home + 1) % 3;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = run.acquisitions();

    let mut phases = Vec::new();
    let t = Instant::now();
    run.cluster.nodes_mut()[victim].kill();
    let down = cluster_down_within(&run.cluster, home, Duration::from_millis(2500)).await;
    let during_kill = run.acquisitions() - before;
    run.cluster.nodes_mut()[victim]
        .start_again()
        .expect("the node starts again");
    run = run.wait_cluster_ok().await;
    run.heals.push(mono_ns());
    phases.push(format!(
        "node {victim} killed (cluster down: {down}), ok again after {:?}",
        t.elapsed()
    ));
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let victim = (home + 2) % 3;
    let t = Instant::now();
    run.cluster.nodes()[victim].pause().unwrap();
    let down = cluster_down_within(&run.cluster, home, Duration::from_millis(2500)).await;
    run.cluster.nodes()[victim].resume().unwrap();
    run = run.wait_cluster_ok().await;
    run.heals.push(mono_ns());
    phases.push(format!(
        "node {victim} stopped (cluster down: {down}), ok again after {:?}",
        t.elapsed()
    ));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let o = run.finish("a shard killed, then one stopped").await;
    println!("  {phases:?}; acquisitions while the first node was down: {during_kill}");
    check(&o, "shard down", 30);
}

/// Wait `d`; whether node `asked` said `cluster_state:fail` meanwhile.
async fn cluster_down_within(cluster: &RedisCluster, asked: usize, d: Duration) -> bool {
    let until = Instant::now() + d;
    let mut down = false;
    while Instant::now() < until {
        let info =
            tokio::task::block_in_place(|| cluster.nodes()[asked].command(&["CLUSTER", "INFO"]));
        down |= info.is_ok_and(|i| i.contains("cluster_state:fail"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    down
}

/// 4. The slots of sub-namespaces move to another node under load
///    (`RedisCluster::move_namespace`: IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE) while the
///    contenders lock names in them: every 1.5 s the sub-namespace of the next name moves,
///    then the home namespace's (the session leases). Progress after each move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_namespaces_migrated_under_load() {
    let _one = ONE_AT_A_TIME.lock().await;
    let setup = Setup {
        names: 6,
        ..Setup::default()
    };
    let mut run = SpreadRun::start(&setup).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut moved = Vec::new();
    let mut targets: Vec<String> = run.names[..5]
        .iter()
        .map(|n| run.client.sub_namespace_of(n).to_owned())
        .collect();
    targets.push(NAMESPACE.to_owned());
    for ns in targets {
        let from = run.cluster.node_of(&ns).unwrap();
        let to = (from + 1) % 3;
        let SpreadRun { cluster, .. } = &run;
        tokio::task::block_in_place(|| cluster.move_namespace(&ns, to)).expect("move");
        assert_eq!(run.cluster.node_of(&ns).unwrap(), to);
        run.heals.push(mono_ns());
        moved.push(format!("{ns}: {from} -> {to}"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let moved_names: Vec<usize> = (0..5).collect();
    let after = run.heals[0];
    let held_after: HashSet<usize> = run
        .resource
        .ledger
        .lock()
        .unwrap()
        .holds
        .iter()
        .filter(|h| h.start > after)
        .map(|h| h.name)
        .collect();
    let o = run.finish("sub-namespaces migrated").await;
    println!("  moved {moved:?}");
    check(&o, "migrations", 100);
    for i in moved_names {
        assert!(
            held_after.contains(&i),
            "name {i} was locked after its move"
        );
    }
}

#[test]
fn the_checker_compares_holds_of_one_name_only() {
    let ttl = Duration::from_secs(1);
    let h = |client, name, token, start, end| Hold {
        client,
        name,
        token,
        start,
        end,
    };
    // Two names held at once, with tokens of unrelated counters: fine.
    assert!(violations_of(&[h(0, 0, 50, 0, 10), h(1, 1, 7, 5, 20)], &[], ttl).is_empty());
    // One name: an overlap, and a token that fell.
    assert_eq!(
        violations_of(&[h(0, 1, 50, 0, 10), h(1, 1, 7, 5, 20)], &[], ttl).len(),
        2
    );
    // Interleaved names: each checked on its own.
    let holds = [
        h(0, 0, 1, 0, 10),
        h(1, 1, 100, 2, 12),
        h(2, 0, 2, 10, 20),
        h(0, 1, 99, 12, 30),
    ];
    let v = violations_of(&holds, &[], ttl);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].starts_with("token did not rise"));
}

/// A sub-lease whose grant's reply comes back after a later renewal of the session's own
/// lease lowers the session's shared validity to its own: `Session::valid_until()`, and
/// `is_valid()` by the clock, never outlive the sub-lease's expiry at the server, also when the
/// supervisor cannot run. Deterministic: the reply of the
/// grant (`lease_touch`) is held 900 ms by the proxy of its shard, across a renewal of the
/// session's own lease on another shard (renewals every 1 s for a TTL of 3 s); then every
/// connection is blackholed (no renewal gets through, so nothing corrects the status) and the
/// runtime is blocked (the supervisor cannot run) until just after the sub-lease expired at
/// the server. An unspread session's `is_valid()` is false by then by the clock alone.
#[tokio::test]
async fn a_sub_lease_granted_late_does_not_outlive_its_validity() {
    let setup = Setup {
        processes: 0,
        ..Setup::default()
    };
    let run = SpreadRun::start(&setup).await;
    let home = run.cluster.node_of(NAMESPACE).unwrap();
    let (name, node) = (0..)
        .map(|i| format!("late-{i}"))
        .map(|n| {
            let node = run
                .cluster
                .node_of(run.client.sub_namespace_of(&n))
                .unwrap();
            (n, node)
        })
        .find(|(_, node)| *node != home)
        .unwrap();
    let ttl = Duration::from_secs(3);
    let s = run
        .client
        .session_with(leasehold::SessionOptions::new().ttl(ttl))
        .await
        .unwrap();
    let granted = Instant::now();
    // Half-way between two renewals of the session's lease (granted, then every TTL/3).
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.proxies[node].stall_after(
        |b| b.windows(11).any(|w| w == b"lease_touch"),
        Duration::from_millis(900),
    );
    let g = s.mutex(&name).unwrap().lock().await.unwrap();
    let locked = granted.elapsed();
    let valid_until = s.valid_until();
    for p in &run.proxies {
        p.blackhole();
    }
    let sub = run.client.sub_namespace_of(&name).to_owned();
    let key = format!("{{{sub}}}:lease:{}", g.session().lease());
    let pttl = |node: usize| -> i64 {
        let reply = run.cluster.nodes()[node].command(&["PTTL", &key]).unwrap();
        reply.trim_start_matches(':').trim().parse().unwrap()
    };
    let left = pttl(node);
    let expires = Instant::now() + Duration::from_millis(left.max(0) as u64);
    println!(
        "locked {locked:?} after the grant; the sub-lease expires at the server in {left} ms, \
         the session says it is valid for {:?}",
        valid_until.saturating_duration_since(Instant::now())
    );
    // Block the runtime (the supervisor with it) until just after that expiry.
    std::thread::sleep(
        expires.saturating_duration_since(Instant::now()) + Duration::from_millis(30),
    );
    let gone = pttl(node) == -2;
    let still_valid = g.is_valid();
    for p in &run.proxies {
        p.heal();
    }
    let mut wrong = Vec::new();
    if valid_until > expires {
        wrong.push(format!(
            "valid_until() outlives the sub-lease's expiry at the server by {:?}",
            valid_until - expires
        ));
    }
    if gone && still_valid {
        wrong.push("the sub-lease expired at the server, and the guard is still valid".into());
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
