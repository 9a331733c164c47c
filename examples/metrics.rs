//! leasehold's metrics in Prometheus: serves `/metrics` over HTTP while a small, continuous
//! workload gives every metric in `leasehold::metrics` a sample. Workers with their own sessions
//! take turns on a mutex, a sweeper takes a dozen shard locks at once (its lock calls share
//! script calls: lock batches), two candidates trade leadership, readers and a writer share a
//! rwlock, users queue for a semaphore, a task takes locks in turn over a spread namespace
//! (sub-leases granted and dropped); every 20 s an "incident": a session orphaned while it holds a
//! lock (its lease expires and the lock passes on), a lease revoked by an operator (a session
//! loss), a key of the wrong type (a Redis error). With faults on, also `SCRIPT FLUSH` and `FUNCTION
//! FLUSH` (reloads) and `CLIENT PAUSE` (renewals time out: jeopardy, then an expired session).
//!
//! ```sh
//! cargo run --example metrics                   # throwaway redis-server, faults on
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example metrics -- --listen 127.0.0.1:9464
//! curl -s http://127.0.0.1:9464/metrics | grep '^leasehold_'
//! ```
//!
//! `docker-compose --profile monitoring up -d` runs it with Prometheus and Grafana.

use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::config::Config;
use fred::types::{ClusterHash, CustomCommand};
use leasehold::metrics::{Kind, ALL};
use leasehold::{Client, Error as LockError, RwLock, RwMode, Semaphore, Session, SessionOptions};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};
use tokio::task::JoinSet;

const NAMESPACE: &str = "metrics-example";
/// A namespace spread over sub-namespaces (`ClientBuilder::spread`).
const SPREAD_NAMESPACE: &str = "metrics-example-spread";
/// TTL of the workers' sessions: short, so incidents resolve in seconds, yet long enough that
/// a 1.5 s `CLIENT PAUSE` only puts them in jeopardy.
const TTL: Duration = Duration::from_secs(5);
const INCIDENT_EVERY: Duration = Duration::from_secs(20);

#[derive(Parser)]
struct Args {
    /// Address to serve /metrics on.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9464")]
    listen: SocketAddr,
    /// Exit (with status 0) after this many seconds instead of running until Ctrl-C.
    #[arg(long = "for", value_name = "SECONDS")]
    run_for: Option<u64>,
    /// Inject faults into the Redis at REDIS_URL: SCRIPT FLUSH and FUNCTION FLUSH, and CLIENT
    /// PAUSE, which stalls every client of that server for 1.5 s. Always on for a throwaway server.
    #[arg(long)]
    faults: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    // Install before the first Client is built: that is when leasehold describes its metrics.
    exporter()?.with_http_listener(args.listen).install()?;
    println!("serving metrics at http://{}/metrics", args.listen);

    // Keep the server (if we started one) alive until the end.
    let (server, url) = leasehold_testing::url_or_start()?;
    if server.is_some() {
        println!("started a throwaway redis-server at {url}");
    }
    let faults = args.faults || server.is_some();

    let stop = async move {
        match args.run_for {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    run(&url, faults, stop).await?;
    println!("stopped");
    Ok(())
}

/// The Prometheus exporter with fixed buckets for every leasehold histogram. Without buckets
/// the exporter renders summaries, whose quantiles can't be aggregated across processes;
/// with them `histogram_quantile()` works over `_bucket` series. (Public: `tests/deploy.rs`
/// checks this exact configuration with promtool.)
pub fn exporter() -> Result<PrometheusBuilder, BuildError> {
    let mut builder = PrometheusBuilder::new();
    for m in ALL.iter().filter(|m| m.kind == Kind::Histogram) {
        builder = builder.set_buckets_for_metric(Matcher::Full(m.name.to_owned()), m.buckets)?;
    }
    Ok(builder)
}

/// Run the workload against `url` until `stop` resolves.
pub async fn run(
    url: &str,
    faults: bool,
    stop: impl Future<Output = ()>,
) -> Result<(), Box<dyn Error>> {
    // Counters without labels are exported at 0 from the start, so the first increment shows
    // up in rate() and a counter that never moves (clock steps, we hope) is still visible.
    for m in ALL
        .iter()
        .filter(|m| m.kind == Kind::Counter && m.labels.is_empty())
    {
        metrics::counter!(m.name).increment(0);
    }

    let client = Client::builder()
        .url(url)
        .namespace(NAMESPACE)
        .build()
        .await?;
    println!("client {} in namespace {NAMESPACE:?}", client.id());

    let mut tasks = JoinSet::new();
    for n in 1..=3 {
        let hold = Duration::from_millis(20 * n);
        tasks.spawn(with_sessions(
            client.clone(),
            format!("worker-{n}"),
            move |s| mutex_worker(s, hold),
        ));
    }
    tasks.spawn(with_sessions(client.clone(), "sweeper".into(), sweeper));
    for n in 1..=2 {
        tasks.spawn(with_sessions(
            client.clone(),
            format!("candidate-{n}"),
            move |s| candidate(s, n),
        ));
    }
    tasks.spawn(with_sessions(
        client.clone(),
        "catalog".into(),
        readers_and_writer,
    ));
    tasks.spawn(with_sessions(
        client.clone(),
        "db-users".into(),
        semaphore_users,
    ));
    let spread = Client::builder()
        .url(url)
        .namespace(SPREAD_NAMESPACE)
        .spread(8)
        .build()
        .await?;
    tasks.spawn(with_sessions(spread, "rounds".into(), spread_rounds));
    let admin = admin_client(url).await?;
    tasks.spawn(incidents(client.clone(), admin, faults));

    tokio::select! {
        _ = stop => {}
        // The tasks only end on a bug; surface it.
        Some(ended) = tasks.join_next() => {
            return Err(format!("a workload task ended: {ended:?}").into());
        }
    }
    // Dropping the tasks drops their guards and sessions: released and revoked in the
    // background, which the client finishes when it is dropped.
    tasks.shutdown().await;
    Ok(())
}

/// Run `body` with a session; when the session ends (lost, or Redis unreachable), say why and
/// start over with a new one, as a long-running service would.
async fn with_sessions<F, Fut>(client: Client, label: String, mut body: F)
where
    F: FnMut(Session) -> Fut,
    Fut: Future<Output = leasehold::Result<()>>,
{
    loop {
        let options = SessionOptions::new().ttl(TTL).label(&label);
        let result = match client.session_with(options).await {
            Ok(session) => body(session).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            println!("[{label}] {e}; starting over with a new session");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Lock, work for `hold`, unlock, rest: three of these make waits and handoffs.
async fn mutex_worker(session: Session, hold: Duration) -> leasehold::Result<()> {
    let mutex = session.mutex("jobs")?;
    loop {
        let guard = mutex.lock().await?;
        tokio::time::sleep(hold).await;
        guard.unlock().await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Once a second, lock and unlock the next of 8 names of a spread namespace: each lives in
/// its own sub-namespace, where the session's sub-lease is granted on use and dropped once
/// unused for a renewal interval.
async fn spread_rounds(session: Session) -> leasehold::Result<()> {
    for round in 0u64.. {
        let guard = session
            .mutex(&format!("round-{}", round % 8))?
            .lock()
            .await?;
        guard.unlock().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Every 2 s, lock 12 shards at once, then unlock them at once: more lock calls than a client
/// keeps in flight, so the rest go out together in one script call.
async fn sweeper(session: Session) -> leasehold::Result<()> {
    let shards = (0..12)
        .map(|i| session.mutex(&format!("shard-{i}")))
        .collect::<leasehold::Result<Vec<_>>>()?;
    loop {
        let guards = futures_util::future::try_join_all(shards.iter().map(|m| m.lock())).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        futures_util::future::try_join_all(guards.into_iter().map(|g| g.unlock())).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Campaign, lead for a while, resign so the other candidate takes over.
async fn candidate(session: Session, n: u64) -> leasehold::Result<()> {
    let election = session.election("scheduler")?;
    loop {
        election.campaign(&format!("candidate-{n}")).await?;
        tokio::time::sleep(Duration::from_millis(700 + 300 * n)).await;
        election.resign().await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three readers share the rwlock; a writer takes it alone now and then.
async fn readers_and_writer(session: Session) -> leasehold::Result<()> {
    let rwlock = session.rwlock("catalog")?;
    // Each loop only returns on an error; the first one ends this session's run.
    tokio::try_join!(
        use_rwlock(&rwlock, RwMode::Read, 30, 40),
        use_rwlock(&rwlock, RwMode::Read, 30, 70),
        use_rwlock(&rwlock, RwMode::Read, 30, 110),
        use_rwlock(&rwlock, RwMode::Write, 50, 400),
    )
    .map(|_| ())
}

async fn use_rwlock(rwlock: &RwLock, mode: RwMode, hold: u64, pause: u64) -> leasehold::Result<()> {
    loop {
        let guard = match mode {
            RwMode::Read => rwlock.read().await?,
            RwMode::Write => rwlock.write().await?,
        };
        tokio::time::sleep(Duration::from_millis(hold)).await;
        guard.unlock().await?;
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Four users for two permits.
async fn semaphore_users(session: Session) -> leasehold::Result<()> {
    let semaphore = session.semaphore("db", 2)?;
    tokio::try_join!(
        use_permit(&semaphore, 60),
        use_permit(&semaphore, 90),
        use_permit(&semaphore, 120),
        use_permit(&semaphore, 150),
    )
    .map(|_| ())
}

async fn use_permit(semaphore: &Semaphore, hold: u64) -> leasehold::Result<()> {
    loop {
        let permit = semaphore.acquire().await?;
        tokio::time::sleep(Duration::from_millis(hold)).await;
        permit.release().await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain fred client for what leasehold would never do itself: write a key of the wrong
/// type, flush scripts, pause the server.
async fn admin_client(url: &str) -> Result<fred::clients::Client, Box<dyn Error>> {
    let admin = fred::clients::Client::new(Config::from_url(url)?, None, None, None);
    admin.init().await?;
    Ok(admin)
}

/// Every `INCIDENT_EVERY`, the things that should show on a dashboard but rarely happen.
async fn incidents(client: Client, admin: fred::clients::Client, faults: bool) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    loop {
        if let Err(e) = incident(&client, &admin, faults).await {
            println!("[incident] failed: {e}");
        }
        tokio::time::sleep(INCIDENT_EVERY).await;
    }
}

async fn incident(
    client: &Client,
    admin: &fred::clients::Client,
    faults: bool,
) -> Result<(), Box<dyn Error>> {
    let short = |label: &str| SessionOptions::new().ttl(leasehold::MIN_TTL).label(label);
    let survivor = client
        .session_with(SessionOptions::new().ttl(TTL).label("survivor"))
        .await?;

    // A process "freezes" while holding a lock: its lease expires, the next waiter gets it
    // (a handoff), and a renewal sweeps the expired lease.
    let frozen = client.session_with(short("frozen")).await?;
    let stale = frozen.mutex("reports")?.lock().await?;
    frozen.orphan();
    let since = Instant::now();
    let guard = survivor.mutex("reports")?.lock().await?;
    println!(
        "[incident] orphaned a session holding \"reports\"; the lock passed on after {:.2} s \
         (fencing token {} > {})",
        since.elapsed().as_secs_f64(),
        guard.fencing_token(),
        stale.fencing_token()
    );
    drop(stale); // its release finds the entry gone: harmless
    guard.unlock().await?;

    // An operator revokes a lease (e.g. `leasehold lease revoke`): its session is lost.
    let victim = client.session_with(short("revoked")).await?;
    client.revoke(victim.lease()).await?;
    let end = tokio::time::timeout(Duration::from_secs(5), victim.done()).await?;
    println!("[incident] revoked a session's lease: {end}");

    // Someone wrote a plain string where leasehold keeps a mutex queue.
    let key = format!("{{{NAMESPACE}}}:mutex:not-a-queue");
    admin
        .set::<(), _, _>(&key, "oops", None, None, false)
        .await?;
    match survivor.mutex("not-a-queue")?.try_lock().await {
        Err(e @ LockError::WrongType { .. }) => println!("[incident] {e}"),
        other => println!("[incident] expected a wrong-type error, got {other:?}"),
    }
    admin.del::<(), _>(&key).await?;

    if faults {
        // Scripts and functions vanish (as after a restart without persistence): the next
        // call reloads what it calls. (No FUNCTION before Redis 7: then only scripts.)
        for command in ["SCRIPT", "FUNCTION"] {
            let flush = CustomCommand::new_static(command, ClusterHash::Random, false);
            if admin.custom::<(), _>(flush, vec!["FLUSH"]).await.is_ok() {
                println!("[incident] {command} FLUSH");
            }
        }

        // Redis stalls longer than a 1 s session's validity: its renewals time out (jeopardy),
        // then it expires locally. The 5 s sessions ride it out.
        let stalled = client.session_with(short("stalled")).await?;
        admin
            .custom::<(), _>(
                CustomCommand::new_static("CLIENT", ClusterHash::Random, false),
                vec!["PAUSE", "1500"],
            )
            .await?;
        let end = tokio::time::timeout(Duration::from_secs(5), stalled.done()).await?;
        println!("[incident] CLIENT PAUSE 1500: {end}");
    }
    survivor.close().await?;
    Ok(())
}
