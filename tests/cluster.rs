//! leasehold on a real 3-primary Redis Cluster: namespaces on different shards work side by side,
//! the doorbell (sharded pub/sub) hands locks over without polling, scripts reload after SCRIPT
//! FLUSH, and a namespace whose slot moves to another shard keeps working (MOVED/ASK).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::interfaces::ClientLike;
use futures_util::StreamExt;
use leasehold::{Client, SessionOptions};
use leasehold_testing::RedisCluster;

fn cluster() -> RedisCluster {
    RedisCluster::start(3).unwrap_or_else(|e| panic!("cannot start a local cluster: {e}"))
}

async fn cluster_client(cluster: &RedisCluster, ns: &str) -> Client {
    Client::builder()
        .url(cluster.url())
        .namespace(ns)
        .command_timeout(Duration::from_secs(3))
        .build()
        .await
        .expect("connect to the cluster")
}

/// Long TTLs: a waiter that got the lock quickly was woken by the doorbell, not by the holder's
/// lease running out.
fn long() -> SessionOptions {
    SessionOptions::default().ttl(Duration::from_secs(30))
}

/// Mutex FIFO + fencing + prompt handoff, then an election with an observer, in namespace `ns`.
async fn mutex_and_election(cluster: &RedisCluster, ns: String) {
    let client = cluster_client(cluster, &ns).await;
    let holder_session = client.session_with(long()).await.unwrap();
    let holder = holder_session.mutex("job").unwrap().lock().await.unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..4u64 {
        let session = client.session_with(long()).await.unwrap();
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            let guard = session.mutex("job").unwrap().lock().await.unwrap();
            let acquired = Instant::now();
            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
            tokio::time::sleep(Duration::from_millis(10)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            let token = guard.fencing_token();
            guard.unlock().await.unwrap();
            (i, token, acquired)
        }));
        // Queue them in a known order.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = holder.fencing_token();
    let released = Instant::now();
    holder.unlock().await.unwrap();
    let mut last = first;
    for (want, t) in tasks.into_iter().enumerate() {
        let (i, token, acquired) = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("every contender gets the lock well before any lease expires")
            .unwrap();
        assert_eq!(i, want as u64, "{ns}: FIFO order");
        assert!(token > last, "{ns}: tokens rise ({token} after {last})");
        assert!(acquired >= released);
        last = token;
    }
    println!(
        "{ns}: 4 handoffs done {:?} after the first release",
        released.elapsed()
    );

    // Election: leader, observer, resign, next leader.
    let (s1, s2, s3) = (
        client.session_with(long()).await.unwrap(),
        client.session_with(long()).await.unwrap(),
        client.session_with(long()).await.unwrap(),
    );
    let e1 = s1.election("lead").unwrap();
    e1.campaign("one").await.unwrap();
    let mut observer = Box::pin(s3.election("lead").unwrap().observe());
    let ev = next(&mut observer).await;
    assert_eq!(ev.leader.unwrap().value, "one");
    let e2 = s2.election("lead").unwrap();
    let second = tokio::spawn(async move { e2.campaign("two").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    e1.resign().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("next leader promptly")
        .unwrap()
        .unwrap();
    let ev = next(&mut observer).await;
    assert_eq!(ev.leader.expect("a leader").value, "two", "{ns}");

    // Keys with a lease go with it.
    s2.put("members/a", "x").await.unwrap();
    assert_eq!(
        client
            .get("members/a")
            .await
            .unwrap()
            .map(|kv| kv.value)
            .as_deref(),
        Some("x")
    );
    s2.close().await.unwrap();
    assert!(client.get("members/a").await.unwrap().is_none());
}

async fn next<S>(s: &mut S) -> leasehold::LeaderEvent
where
    S: futures_util::Stream<Item = leasehold::Result<leasehold::LeaderEvent>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("an event within 5 s")
        .expect("stream goes on")
        .expect("no error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutexes_and_elections_work_on_every_shard_at_once() {
    let cluster = cluster();
    let namespaces: Vec<String> = (0..3)
        .map(|i| cluster.namespace_on(i, "shard").unwrap())
        .collect();
    let nodes: Vec<usize> = namespaces
        .iter()
        .map(|ns| cluster.node_of(ns).unwrap())
        .collect();
    assert_eq!(nodes, vec![0, 1, 2], "one namespace per shard");
    let cluster = &cluster;
    futures_util::future::join_all(
        namespaces
            .into_iter()
            .map(|ns| mutex_and_election(cluster, ns)),
    )
    .await;
    // Each namespace's keys stayed on its own shard.
    for (i, node) in cluster.nodes().iter().enumerate() {
        let ns = cluster.namespace_on(i, "shard").unwrap();
        let reply = node.command(&["KEYS", "*"]).unwrap();
        for line in reply.lines().filter(|l| l.starts_with('{')) {
            assert!(line.starts_with(&format!("{{{ns}}}:")), "stray key {line}");
        }
    }
}

/// The function library is loaded on every primary, and loaded again on every primary after
/// a flush (as after a restart without persistence); scripts too.
#[tokio::test]
async fn functions_and_scripts_reload_after_a_flush_on_every_node() {
    let cluster = cluster();
    let ns = cluster.namespace_on(2, "flush").unwrap();
    let client = cluster_client(&cluster, &ns).await;
    let library = leasehold::function_library_name();
    let loaded_everywhere = || {
        cluster.nodes().iter().all(|node| {
            let list = node.command(&["FUNCTION", "LIST", "LIBRARYNAME", library]);
            list.unwrap().contains(library)
        })
    };
    assert!(client.uses_functions());
    assert!(loaded_everywhere(), "loaded on every primary");
    let session = client.session_with(long()).await.unwrap();
    let m = session.mutex("m").unwrap();
    let t1 = m.lock().await.unwrap();
    let first = t1.fencing_token();
    t1.unlock().await.unwrap();
    for node in cluster.nodes() {
        for flush in [&["SCRIPT", "FLUSH"], &["FUNCTION", "FLUSH"]] {
            assert!(node.command(flush).unwrap().starts_with("+OK"));
        }
    }
    let t2 = m.lock().await.expect("reloaded and retried");
    assert!(t2.fencing_token() > first);
    t2.unlock().await.unwrap();
    assert!(client.uses_functions());
    assert!(loaded_everywhere(), "loaded again on every primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_moved_to_another_shard_keeps_its_lock_and_queue() {
    let cluster = cluster();
    let ns = cluster.namespace_on(0, "moving").unwrap();
    let client = cluster_client(&cluster, &ns).await;
    let holder_session = client.session_with(long()).await.unwrap();
    let waiter_session = client.session_with(long()).await.unwrap();
    let holder = holder_session.mutex("job").unwrap().lock().await.unwrap();
    let waiter = {
        let m = waiter_session.mutex("job").unwrap();
        tokio::spawn(async move { m.lock().await.map(|g| g.fencing_token()) })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());

    // Reshard the namespace's slot (with its keys) to node 1 while the lock is held.
    cluster.move_namespace(&ns, 1).unwrap();
    assert_eq!(cluster.node_of(&ns).unwrap(), 1);

    // The holder's lease is still there and still its own; release hands over on the new shard.
    assert!(
        holder.is_owner().await.unwrap(),
        "holder still owns after the move"
    );
    let first = holder.fencing_token();
    let released = Instant::now();
    holder.unlock().await.unwrap();
    let token = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("waiter gets the lock well before the 30 s TTL")
        .unwrap()
        .unwrap();
    assert!(token > first);
    println!("handoff after a reshard: {:?}", released.elapsed());
    // Renewals keep working on the new shard.
    let info = client
        .time_to_live(waiter_session.lease())
        .await
        .unwrap()
        .expect("lease alive");
    assert!(info.remaining > Duration::from_secs(20));
}

/// A caller's fred pool in a Cluster must not follow redirections (see
/// `ClientBuilder::fred_pool`): one that does is refused, one that does not works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_cluster_pool_must_not_follow_redirections() {
    let cluster = cluster();
    let pool = |redirections: u32| {
        let config = fred::types::config::Config::from_url(&cluster.url()).unwrap();
        fred::types::Builder::from_config(config)
            .with_connection_config(|c| {
                c.max_command_attempts = 1;
                c.max_redirections = redirections;
            })
            .build_pool(2)
            .unwrap()
    };
    let following = pool(5);
    following.init().await.unwrap();
    match Client::builder().fred_pool(following).build().await {
        Err(leasehold::Error::InvalidArgument(why)) => {
            assert!(why.contains("max_redirections = 0"), "{why}")
        }
        other => panic!("a pool that follows redirections was accepted: {other:?}"),
    }
    let refusing = pool(0);
    refusing.init().await.unwrap();
    let client = Client::builder()
        .fred_pool(refusing)
        .namespace("byo")
        .build()
        .await
        .unwrap();
    let session = client.session().await.unwrap();
    let guard = session.mutex("job").unwrap().lock().await.unwrap();
    guard.unlock().await.unwrap();
}
