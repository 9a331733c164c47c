//! The safety checker shared by `tests/safety.rs` (one mutex on one Redis) and
//! `tests/safety_spread.rs` (many mutexes of a spread namespace on a Cluster): the client
//! processes, the fencing-aware resource they write to, and the checks of what they report.
//!
//! A client process is the test binary re-run as its `checker_child` test (ignored when run
//! normally), which calls [`child_main`]; [`spawn_child`] starts one with a [`ChildConfig`].
//! Each process runs `tasks` contenders (each with its own session, sharing one `Client`) that
//! lock one of the configured names, write to the [`Resource`] under the fencing token, hold,
//! report the hold, unlock. The checks, per lock name (tokens of different names are not
//! comparable):
//!
//! 1. the resource never accepts a write whose token is lower than one it already accepted
//!    for that name (it rejects them, as a fencing-aware store does; rejections are counted);
//! 2. no two contenders believe, by their local validity, that they hold the same lock at the
//!    same instant (holds are intervals on the machine-wide monotonic clock, from `lock()`
//!    returning to the earlier of release and the session's validity);
//! 3. every acquisition's fencing token is greater than every earlier one of that name;
//! 4. progress: after a fault heals, some lock is acquired again within TTL + the renewal
//!    interval (TTL/3), plus 1 s of slack for process scheduling.
//!
//! Children may also report violations they see themselves (`X` lines), e.g. what a revoked
//! session left behind.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::cmd;
use leasehold::{Client, Session, SessionOptions};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

pub const CHILD_ENV: &str = "LEASEHOLD_CHECKER_CHILD";

/// Nanoseconds on CLOCK_MONOTONIC: the same clock in every process of the machine, so holds
/// reported by different processes compare.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An `Instant` on the monotonic clock, in [`mono_ns`] units.
pub fn instant_ns(t: Instant) -> u64 {
    let (now, now_ns) = (Instant::now(), mono_ns());
    if t >= now {
        now_ns + (t - now).as_nanos() as u64
    } else {
        now_ns.saturating_sub((now - t).as_nanos() as u64)
    }
}

/// A small seeded generator (xorshift64), for schedules and contenders.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

// ---------------------------------------------------------------------------------------------
// The client process.

/// What a child is told (encoded as `key=value` words in [`CHILD_ENV`]).
#[derive(Debug, Clone)]
pub struct ChildConfig {
    pub url: String,
    pub namespace: String,
    /// Sub-namespaces of a spread namespace (`ClientBuilder::spread`); 1: unspread.
    pub spread: u16,
    /// The lock names (no spaces or commas); a hold reports its name's index here.
    pub names: Vec<String>,
    /// Names are split into this many groups (name `i` in group `i % groups`). A contender
    /// locks names of one group for [`phase`](Self::phase), then of the next, so that the
    /// sub-namespaces of the other groups go unused (a spread session's sub-leases there are
    /// dropped) and are used again later.
    pub groups: usize,
    /// How long a contender stays with one group; zero: every name, always.
    pub phase: Duration,
    pub ttl: Duration,
    pub hold: Duration,
    pub resource: u16,
    pub id: usize,
    pub max: Duration,
    /// Report holds as lasting until release, ignoring the session's validity: what a client
    /// that does not check `is_valid()` believes. Only for the negative control.
    pub careless: bool,
    /// Contenders in this process, each with its own session, sharing one `Client`. With more
    /// than the client keeps in flight, their lock calls go out in batches.
    pub tasks: usize,
    /// A hold's belief also ends when its session ends (`is_valid()` turns false: a loss the
    /// client learned of before the validity ran out, e.g. a spread session that lost one of
    /// its sub-leases, or a revoke); a lock returned to an already ended session is no hold.
    /// Without it the belief lasts until the validity, whatever ended the session (stricter,
    /// and right for single-lease sessions under the faults of `tests/safety.rs`).
    pub end_with_session: bool,
    /// The mutexes' lock-delay (`ClientBuilder::lock_delay`).
    pub lock_delay: Duration,
    /// 0: no revokes. Otherwise, one lock call in this many (on average) is raced by a revoke
    /// of its session from another client of the process, on a name in a sub-namespace the
    /// session has not used yet (its first touch there); see `Race`.
    pub revoke_one_in: u64,
}

impl ChildConfig {
    /// One contender process on `url` of one mutex named `resource` in an unspread namespace.
    pub fn single(url: String, namespace: &str, resource: u16, id: usize) -> ChildConfig {
        ChildConfig {
            url,
            namespace: namespace.to_owned(),
            spread: 1,
            names: vec!["resource".to_owned()],
            groups: 1,
            phase: Duration::ZERO,
            ttl: Duration::from_secs(2),
            hold: Duration::from_millis(5),
            resource,
            id,
            max: Duration::from_secs(3600),
            careless: false,
            tasks: 1,
            end_with_session: false,
            lock_delay: Duration::ZERO,
            revoke_one_in: 0,
        }
    }

    fn encode(&self) -> String {
        let ms = |d: Duration| d.as_millis().to_string();
        [
            ("url", self.url.clone()),
            ("ns", self.namespace.clone()),
            ("spread", self.spread.to_string()),
            ("names", self.names.join(",")),
            ("groups", self.groups.to_string()),
            ("phase", ms(self.phase)),
            ("ttl", ms(self.ttl)),
            ("hold", ms(self.hold)),
            ("resource", self.resource.to_string()),
            ("id", self.id.to_string()),
            ("max", ms(self.max)),
            ("careless", (self.careless as u8).to_string()),
            ("tasks", self.tasks.to_string()),
            (
                "end_with_session",
                (self.end_with_session as u8).to_string(),
            ),
            ("lock_delay", ms(self.lock_delay)),
            ("revoke_one_in", self.revoke_one_in.to_string()),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
    }

    fn decode(s: &str) -> Option<ChildConfig> {
        let f: HashMap<&str, &str> = s.split(' ').filter_map(|w| w.split_once('=')).collect();
        let ms =
            |k: &str| -> Option<Duration> { Some(Duration::from_millis(f.get(k)?.parse().ok()?)) };
        let num = |k: &str| -> Option<u64> { f.get(k)?.parse().ok() };
        Some(ChildConfig {
            url: f.get("url")?.to_string(),
            namespace: f.get("ns")?.to_string(),
            spread: num("spread")? as u16,
            names: f.get("names")?.split(',').map(str::to_owned).collect(),
            groups: num("groups")? as usize,
            phase: ms("phase")?,
            ttl: ms("ttl")?,
            hold: ms("hold")?,
            resource: num("resource")? as u16,
            id: num("id")? as usize,
            max: ms("max")?,
            careless: num("careless")? == 1,
            tasks: num("tasks")? as usize,
            end_with_session: num("end_with_session")? == 1,
            lock_delay: ms("lock_delay")?,
            revoke_one_in: num("revoke_one_in")?,
        })
    }
}

/// Start a client process: this test binary re-run as its `checker_child` test.
/// (`--nocapture`: a child that panics says why on the test's stderr.)
pub fn spawn_child(config: &ChildConfig) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "checker_child",
            "--quiet",
            "--nocapture",
        ])
        .env(CHILD_ENV, config.encode())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn a checker client")
}

/// The body of every test binary's `checker_child` test: runs the contenders when the process
/// was started by [`spawn_child`], returns at once otherwise.
pub fn child_main() {
    let Ok(env) = std::env::var(CHILD_ENV) else {
        return;
    };
    let config = ChildConfig::decode(&env).unwrap_or_else(|| panic!("a child config: {env}"));
    // Counts the lock batches and other events of this process, for the parent's report.
    let recorder = DebuggingRecorder::new();
    let snapshots = recorder.snapshotter();
    metrics::set_global_recorder(recorder).expect("the child's only recorder");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(child_loop(config, snapshots));
}

async fn build_client(c: &ChildConfig, stop_at: Instant) -> Client {
    loop {
        let mut builder = Client::builder()
            .url(&c.url)
            .namespace(&c.namespace)
            .command_timeout(c.ttl / 2)
            .connect_timeout(c.ttl)
            .lock_delay(c.lock_delay);
        if c.spread > 1 {
            builder = builder.spread(c.spread);
        }
        match builder.build().await {
            Ok(client) => return client,
            Err(_) if Instant::now() < stop_at => tokio::time::sleep(c.ttl / 10).await,
            Err(e) => panic!("child {} cannot connect: {e}", c.id),
        }
    }
}

/// What the revoke races of a process use: another client of the namespace (its own
/// connections and supervisor), and a raw connection to look at what a revoked session left.
struct Operator {
    client: Client,
    raw: fred::clients::Client,
}

async fn child_loop(c: ChildConfig, snapshots: Snapshotter) {
    let stop_at = Instant::now() + c.max; // bounded even if the parent dies
    let client = build_client(&c, stop_at).await;
    let operator = if c.revoke_one_in > 0 {
        use fred::prelude::ClientLike;
        let config = fred::types::config::Config::from_url(&c.url).expect("a fred URL");
        let raw = fred::clients::Client::new(config, None, None, None);
        raw.init().await.expect("raw connect");
        Some(Arc::new(Operator {
            client: build_client(&c, stop_at).await,
            raw,
        }))
    } else {
        None
    };
    let c = Arc::new(c);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..c.tasks {
        tasks.spawn(contender(
            client.clone(),
            operator.clone(),
            c.clone(),
            c.id * c.tasks + t,
            stop_at,
        ));
    }
    tasks.spawn(report_metrics(c.clone(), snapshots, stop_at));
    while tasks.join_next().await.is_some() {}
}

/// Every 200 ms, tell the resource how many lock batches (and calls in them) this process has
/// sent so far, `B <process> <batches> <calls>`, and the value of every counter,
/// `M <process> <metric{labels}> <value>`.
async fn report_metrics(c: Arc<ChildConfig>, snapshotter: Snapshotter, stop_at: Instant) {
    let Ok(mut resource) = TcpStream::connect(("127.0.0.1", c.resource)).await else {
        return;
    };
    let (mut sent, mut calls) = (0u64, 0u64);
    // A snapshot holds what happened since the one before: the counters' totals are summed here.
    let mut counters: BTreeMap<String, u64> = BTreeMap::new();
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            match (key.key().name(), value) {
                (leasehold::metrics::LOCK_BATCH, DebugValue::Histogram(sizes)) => {
                    sent += sizes.len() as u64;
                    calls += sizes.iter().map(|s| s.into_inner() as u64).sum::<u64>();
                }
                (name, DebugValue::Counter(n)) => {
                    let labels: Vec<String> = key
                        .key()
                        .labels()
                        .map(|l| format!("{}={}", l.key(), l.value()))
                        .collect();
                    let metric = if labels.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{name}{{{}}}", labels.join(","))
                    };
                    *counters.entry(metric.replace(' ', "_")).or_default() += n;
                }
                _ => {}
            }
        }
        let mut lines = String::new();
        for (metric, n) in &counters {
            lines.push_str(&format!("M {} {metric} {n}\n", c.id));
        }
        lines.push_str(&format!("B {} {sent} {calls}\n", c.id));
        if resource.write_all(lines.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A contender's line to the resource.
struct ResourceConn {
    write: OwnedWriteHalf,
    replies: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
}

impl ResourceConn {
    async fn send(&mut self, line: String) -> bool {
        self.write.write_all(line.as_bytes()).await.is_ok()
    }

    /// `W`: write under `token`; whether the resource accepted it.
    async fn write(&mut self, name: usize, token: u64, id: usize) -> Option<bool> {
        if !self.send(format!("W {name} {token} {id}\n")).await {
            return None;
        }
        Some(matches!(self.replies.next_line().await, Ok(Some(r)) if r == "OK"))
    }
}

/// A contender's session, and (with [`ChildConfig::end_with_session`]) the instant it ended,
/// recorded by a task that waits for it (`u64::MAX` while it has not).
#[derive(Clone)]
struct Tracked {
    session: Session,
    ended: Arc<AtomicU64>,
}

impl Tracked {
    fn new(session: Session, watch: bool) -> Tracked {
        let ended = Arc::new(AtomicU64::new(u64::MAX));
        if watch {
            let (s, e) = (session.clone(), ended.clone());
            tokio::spawn(async move {
                s.done().await;
                e.store(mono_ns(), Ordering::SeqCst);
            });
        }
        Tracked { session, ended }
    }
}

/// One contender: lock, write to the resource under the token, hold, report, unlock; a new
/// session whenever the last one is no longer valid.
async fn contender(
    client: Client,
    operator: Option<Arc<Operator>>,
    c: Arc<ChildConfig>,
    id: usize,
    stop_at: Instant,
) {
    let resource = TcpStream::connect(("127.0.0.1", c.resource))
        .await
        .expect("resource");
    let (read, write) = resource.into_split();
    let mut conn = ResourceConn {
        write,
        replies: BufReader::new(read).lines(),
    };
    let mut rng = Rng::new(mono_ns() ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let started = Instant::now();
    let mut session: Option<Tracked> = None;
    // The sub-namespaces the current session has used.
    let mut used: HashSet<String> = HashSet::new();
    while Instant::now() < stop_at {
        if session.as_ref().is_some_and(|t| !t.session.is_valid()) {
            session = None;
        }
        let t = match &session {
            Some(t) => t.clone(),
            None => match client
                .session_with(SessionOptions::default().ttl(c.ttl))
                .await
            {
                Ok(s) => {
                    used.clear();
                    session.insert(Tracked::new(s, c.end_with_session)).clone()
                }
                Err(_) => {
                    tokio::time::sleep(c.ttl / 20).await;
                    continue;
                }
            },
        };
        if let Some(op) = &operator {
            if rng.below(c.revoke_one_in) == 0 {
                let race = Race {
                    client: &client,
                    op,
                    c: &c,
                    id,
                };
                if !race.run(&t, &mut used, &mut rng, &mut conn).await {
                    return;
                }
                continue;
            }
        }
        let name = pick_name(&c, id, started, &mut rng);
        let Ok(mutex) = t.session.mutex(&c.names[name]) else {
            return;
        };
        used.insert(client.sub_namespace_of(&c.names[name]).to_owned());
        let guard = match tokio::time::timeout(c.ttl, mutex.lock()).await {
            Ok(Ok(guard)) => guard,
            _ => {
                tokio::time::sleep(c.ttl / 100).await;
                continue;
            }
        };
        let returned = (mono_ns(), guard.is_valid());
        let Some(held) = Held::begin(&c, &guard, (name, id), returned, &mut conn).await else {
            return;
        };
        if !held.end(&c, &t, c.hold, &mut conn).await {
            return;
        }
        let _ = guard.unlock().await;
    }
}

/// The index of the next name to lock: any name, or one of the group of the current phase.
fn pick_name(c: &ChildConfig, id: usize, started: Instant, rng: &mut Rng) -> usize {
    let groups = c.groups.clamp(1, c.names.len());
    if c.phase.is_zero() || groups == 1 {
        return rng.below(c.names.len() as u64) as usize;
    }
    let phase = (started.elapsed().as_millis() / c.phase.as_millis()) as usize;
    let group = (id + phase) % groups;
    let in_group: Vec<usize> = (group..c.names.len()).step_by(groups).collect();
    in_group[rng.below(in_group.len() as u64) as usize]
}

/// A hold begun: `lock()` returned at `start`.
struct Held {
    contender: usize,
    name: usize,
    token: u64,
    start: u64,
    accepted: bool,
    /// Whether it is one at all: with [`ChildConfig::end_with_session`], a guard returned to
    /// a session that had ended is none (the client knows it holds nothing).
    real: bool,
}

impl Held {
    /// `lock()` returned `guard` at `start`, to a session then `valid`: write under its token
    /// if it was. `None` when the resource is gone.
    async fn begin(
        c: &ChildConfig,
        guard: &leasehold::MutexGuard,
        (name, id): (usize, usize),
        (start, valid): (u64, bool),
        conn: &mut ResourceConn,
    ) -> Option<Held> {
        let token = guard.fencing_token();
        // Write to the resource only while the session is locally valid.
        let accepted = if c.careless || valid {
            conn.write(name, token, id).await?
        } else {
            false
        };
        Some(Held {
            contender: id,
            name,
            token,
            start,
            accepted,
            real: valid || !c.end_with_session,
        })
    }

    /// Hold for `hold` (less if the session ends first, with
    /// [`ChildConfig::end_with_session`]), then report the hold as
    /// `H <contender> <name> <token> <start> <end> <accepted>`: its belief ends now, or at
    /// the end of the session's validity, or when it ended. False when the resource is gone.
    async fn end(
        self,
        c: &ChildConfig,
        t: &Tracked,
        hold: Duration,
        conn: &mut ResourceConn,
    ) -> bool {
        let s = &t.session;
        if c.end_with_session {
            tokio::select! {
                _ = tokio::time::sleep(hold) => {}
                _ = s.done() => {}
            }
        } else {
            tokio::time::sleep(hold).await;
        }
        let mut end = mono_ns();
        if !c.careless {
            end = end.min(instant_ns(s.valid_until()));
        }
        if c.end_with_session {
            end = end.min(t.ended.load(Ordering::SeqCst));
        }
        if !self.real {
            return true;
        }
        conn.send(format!(
            "H {} {} {} {} {end} {}\n",
            self.contender, self.name, self.token, self.start, self.accepted as u8
        ))
        .await
    }
}

/// A revoke of a session, from the process's other client, racing the session's first lock
/// call in a sub-namespace it has not used: the lock call starts up to 2 ms before or after
/// the revoke, which covers its every step (the session's own lease, then the sub-lease in
/// every sub-namespace, leaving tombstones). Half the time the session holds one of its locks
/// meanwhile (a hold like any other: its belief ends when the session learns of the revoke).
/// Reported: `R <outcome> <how> <skew ns>` (0: the lock call failed, `how` says with what
/// error; 1: it returned a guard to a session that had already ended; 2: it returned a guard
/// of a session that still believed itself valid: a hold like any other; the skew is how much
/// later the lock call started than the revoke). And checked, once both calls are done: nothing of the session is left
/// in the raced sub-namespace (no sub-lease, no attachment, no queue entry), else an `X` line.
struct Race<'a> {
    client: &'a Client,
    op: &'a Operator,
    c: &'a ChildConfig,
    id: usize,
}

impl Race<'_> {
    /// False when the resource is gone.
    async fn run(
        &self,
        t: &Tracked,
        used: &mut HashSet<String>,
        rng: &mut Rng,
        conn: &mut ResourceConn,
    ) -> bool {
        let (c, s) = (self.c, &t.session);
        let sub_of = |i: usize| self.client.sub_namespace_of(&c.names[i]).to_owned();
        let fresh: Vec<usize> = (0..c.names.len())
            .filter(|&i| !used.contains(&sub_of(i)))
            .collect();
        if fresh.is_empty() {
            return true;
        }
        // Sometimes hold a lock of a sub-namespace already used (or about to be) while the
        // revoke lands.
        let mut held = None;
        if rng.below(2) == 0 {
            let i = (0..c.names.len())
                .find(|i| !fresh.contains(i))
                .unwrap_or(fresh[0]);
            let Ok(mutex) = s.mutex(&c.names[i]) else {
                return true;
            };
            used.insert(sub_of(i));
            if let Ok(Ok(guard)) = tokio::time::timeout(c.ttl, mutex.lock()).await {
                let returned = (mono_ns(), guard.is_valid());
                let Some(h) = Held::begin(c, &guard, (i, self.id), returned, conn).await else {
                    return false;
                };
                held = Some((h, guard));
            }
        }
        let fresh: Vec<usize> = fresh
            .into_iter()
            .filter(|&i| !used.contains(&sub_of(i)))
            .collect();
        let Some(&name) = fresh.get(rng.below(fresh.len().max(1) as u64) as usize) else {
            return true;
        };
        let Ok(mutex) = s.mutex(&c.names[name]) else {
            return true;
        };
        let sub_id = mutex.session().lease().to_string();
        let sub = sub_of(name);
        used.insert(sub.clone());
        let skew_ns = rng.below(4_000_000) as i64 - 2_000_000;
        let lock = async {
            spin(skew_ns.max(0) as u64).await;
            let guard = match tokio::time::timeout(c.ttl, mutex.lock()).await {
                Ok(Ok(guard)) => guard,
                Ok(Err(leasehold::Error::SessionLost { reason, .. })) => {
                    return Err(format!("session-lost:{reason:?}"))
                }
                Ok(Err(e)) => {
                    let e = format!("{e:?}");
                    return Err(e.split([' ', '{', '(']).next().unwrap_or("").to_owned());
                }
                Err(_) => return Err("timeout".to_owned()),
            };
            // Written to at once, as any holder does.
            let returned = (mono_ns(), guard.is_valid());
            let held = Held::begin(c, &guard, (name, self.id), returned, conn).await;
            Ok((guard, held))
        };
        let revoke = async {
            spin((-skew_ns).max(0) as u64).await;
            self.op.client.revoke(s.lease()).await
        };
        let (locked, revoked) = tokio::join!(lock, revoke);
        let (outcome, why) = match &locked {
            Ok((_, Some(h))) if h.real && c.end_with_session => (2, "won".to_owned()),
            Ok((_, Some(_))) => (1, "ended".to_owned()),
            Ok((_, None)) => return false,
            Err(why) => (0, why.clone()),
        };
        let mut report = format!("R {outcome} {why} {skew_ns}\n");
        if let Err(e) = revoked {
            report.push_str(&format!("X the revoke of {} failed: {e}\n", s.lease()));
        }
        // The revoke has returned and the lock call is done: nothing of the session may be
        // left in the raced sub-namespace, nor in that of the lock it held.
        let mut checked = vec![(sub, sub_id, name)];
        if let Some((h, guard)) = &held {
            let sub = sub_of(h.name);
            checked.push((sub, guard.session().lease().to_string(), h.name));
        }
        for (sub, sub_id, name) in checked {
            let left = leftovers(&self.op.raw, &sub, &sub_id, &c.names[name]).await;
            if !left.is_empty() {
                report.push_str(&format!(
                    "X revoked session {} (sub-lease {sub_id}) left in {sub} after the revoke \
                     returned (lock call outcome {outcome}, skew {skew_ns} ns): {}\n",
                    s.lease(),
                    left.join("; ")
                ));
            }
        }
        if !conn.send(report).await {
            return false;
        }
        if let Some((h, guard)) = held {
            if !h.end(c, t, Duration::ZERO, conn).await {
                return false;
            }
            drop(guard);
        }
        if let Ok((guard, Some(h))) = locked {
            if !h.end(c, t, c.hold, conn).await {
                return false;
            }
            let _ = guard.unlock().await;
        }
        true
    }
}

/// Busy-wait `ns` (yielding), for sub-millisecond skews that timers do not give.
async fn spin(ns: u64) {
    let until = mono_ns() + ns;
    while mono_ns() < until {
        tokio::task::yield_now().await;
    }
}

/// What lease `sub_id` has in sub-namespace `sub`: its hash (other than a drop's marker), its
/// registry entry, attachments, and entries in the queue of mutex `name`.
async fn leftovers(
    raw: &fred::clients::Client,
    sub: &str,
    sub_id: &str,
    name: &str,
) -> Vec<String> {
    let mut left = Vec::new();
    let lease_key = format!("{{{sub}}}:lease:{sub_id}");
    match cmd::<Option<String>>(raw, "HGET", &[&lease_key, "client"]).await {
        Ok(None) => {}
        other => left.push(format!("{lease_key} client = {other:?}")),
    }
    let reg = format!("{{{sub}}}:leases");
    match cmd::<Option<String>>(raw, "ZSCORE", &[&reg, sub_id]).await {
        Ok(None) => {}
        other => left.push(format!("{reg} score = {other:?}")),
    }
    let attached = format!("{{{sub}}}:attached:{sub_id}");
    match cmd::<u64>(raw, "SCARD", &[&attached]).await {
        Ok(0) => {}
        other => left.push(format!("{attached} has {other:?}")),
    }
    let queue = format!("{{{sub}}}:mutex:{name}");
    match cmd::<Vec<String>>(raw, "ZRANGE", &[&queue, "0", "-1"]).await {
        Ok(members) => {
            let mine: Vec<&String> = members
                .iter()
                .filter(|m| m.starts_with(&format!("{sub_id}.")))
                .collect();
            if !mine.is_empty() {
                left.push(format!("{queue} holds {mine:?}"));
            }
        }
        Err(e) => left.push(format!("{queue}: {e}")),
    }
    left
}

// ---------------------------------------------------------------------------------------------
// The resource and the checks.

#[derive(Debug, Clone, Copy)]
pub struct Hold {
    /// The contender: `process * tasks + task`.
    pub client: usize,
    /// The lock name's index in [`ChildConfig::names`].
    pub name: usize,
    pub token: u64,
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Default)]
pub struct Ledger {
    /// The contender that wrote last: most likely the one holding a lock now.
    pub last_writer: usize,
    /// Per client process: lock batches sent so far, and the calls in them.
    pub batches: BTreeMap<usize, (u64, u64)>,
    /// Per client process and counter: its value.
    pub metrics: BTreeMap<(usize, String), u64>,
    /// Per lock name: the highest token accepted.
    pub highest: HashMap<usize, u64>,
    pub accepted: u64,
    pub rejected: u64,
    pub holds: Vec<Hold>,
    /// Violations the children saw themselves.
    pub reported: Vec<String>,
    /// Revoke races by outcome (see `Race`).
    pub races: [u64; 3],
    /// Every revoke race: how it ended (outcome and the lock call's error), and its skew (ns).
    pub race_log: Vec<(String, i64)>,
}

/// A fencing-aware store: accepts a write only if its token is at least the highest accepted
/// for its lock name.
pub struct Resource {
    pub port: u16,
    pub ledger: Arc<Mutex<Ledger>>,
    task: tokio::task::JoinHandle<()>,
}

impl Resource {
    pub async fn start() -> Resource {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let l = ledger.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, l.clone()));
            }
        });
        Resource { port, ledger, task }
    }

    /// Stop the clients and check every property; `heals` are the instants faults healed.
    pub async fn finish(&self, children: &mut [Child], heals: &[u64], ttl: Duration) -> Outcome {
        for c in children.iter_mut() {
            let _ = c.kill().await;
        }
        let ledger = self.ledger.lock().unwrap();
        let mut metrics: BTreeMap<String, u64> = BTreeMap::new();
        for ((_, name), v) in &ledger.metrics {
            *metrics.entry(name.clone()).or_default() += v;
        }
        let mut violations = ledger.reported.clone();
        violations.extend(violations_of(&ledger.holds, heals, ttl));
        Outcome {
            acquisitions: ledger.holds.len(),
            names: ledger.holds.iter().map(|h| h.name).collect(),
            rejected: ledger.rejected,
            batches: ledger.batches.values().map(|b| b.0).sum(),
            batched_calls: ledger.batches.values().map(|b| b.1).sum(),
            metrics,
            races: ledger.races,
            race_log: ledger.race_log.clone(),
            violations,
        }
    }
}

impl Drop for Resource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(conn: TcpStream, ledger: Arc<Mutex<Ledger>>) {
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split(' ').collect();
        let f: Vec<u64> = words
            .iter()
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect();
        match (words[0], f.as_slice()) {
            ("W", [name, token, client]) => {
                let ok = {
                    let mut l = ledger.lock().unwrap();
                    l.last_writer = *client as usize;
                    let highest = l.highest.entry(*name as usize).or_default();
                    let ok = *token >= *highest;
                    if ok {
                        *highest = *token;
                        l.accepted += 1;
                    } else {
                        l.rejected += 1;
                    }
                    ok
                };
                let reply: &[u8] = if ok { b"OK\n" } else { b"STALE\n" };
                if write.write_all(reply).await.is_err() {
                    return;
                }
            }
            ("B", [process, sent, calls]) => {
                ledger
                    .lock()
                    .unwrap()
                    .batches
                    .insert(*process as usize, (*sent, *calls));
            }
            ("M", _) if words.len() == 4 => {
                if let (Ok(process), Ok(value)) = (words[1].parse(), words[3].parse()) {
                    ledger
                        .lock()
                        .unwrap()
                        .metrics
                        .insert((process, words[2].to_owned()), value);
                }
            }
            ("H", [client, name, token, start, end, _accepted]) => {
                ledger.lock().unwrap().holds.push(Hold {
                    client: *client as usize,
                    name: *name as usize,
                    token: *token,
                    start: *start,
                    end: *end,
                });
            }
            ("R", [outcome, ..]) if *outcome < 3 && words.len() == 4 => {
                let skew: i64 = words[3].parse().unwrap_or(0);
                let mut l = ledger.lock().unwrap();
                l.races[*outcome as usize] += 1;
                l.race_log
                    .push((format!("{} {}", words[1], words[2]), skew));
            }
            ("X", _) => ledger.lock().unwrap().reported.push(line[2..].to_owned()),
            _ => return,
        }
    }
}

/// Properties 2 and 3 over every lock name's holds, and 4 for each heal instant.
pub fn violations_of(holds: &[Hold], heals: &[u64], ttl: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let mut by_name: BTreeMap<usize, Vec<Hold>> = BTreeMap::new();
    for h in holds {
        by_name.entry(h.name).or_default().push(*h);
    }
    for holds in by_name.values_mut() {
        holds.sort_by_key(|h| h.start);
        let mut latest: Option<Hold> = None; // the hold whose belief ends last so far
        let mut prev: Option<Hold> = None;
        for h in holds.iter() {
            if let Some(l) = latest {
                if h.start < l.end && l.client != h.client {
                    out.push(format!("overlap: {l:?} and {h:?}"));
                }
            }
            if let Some(p) = prev {
                if h.token <= p.token {
                    out.push(format!("token did not rise: {p:?} then {h:?}"));
                }
            }
            if latest.is_none_or(|l| h.end > l.end) {
                latest = Some(*h);
            }
            prev = Some(*h);
        }
    }
    let bound = (ttl + ttl / 3 + Duration::from_secs(1)).as_nanos() as u64;
    for &heal in heals {
        if !holds
            .iter()
            .any(|h| h.start >= heal && h.start <= heal + bound)
        {
            out.push(format!(
                "no acquisition within {:?} of the heal",
                Duration::from_nanos(bound)
            ));
        }
    }
    out
}

/// What a run saw.
#[derive(Debug)]
pub struct Outcome {
    pub acquisitions: usize,
    /// The lock names acquired at least once.
    pub names: std::collections::BTreeSet<usize>,
    /// Stale writes the resource refused.
    pub rejected: u64,
    /// Lock batches the client processes sent, and the calls in them.
    pub batches: u64,
    pub batched_calls: u64,
    /// Every counter of the client processes, summed over them.
    pub metrics: BTreeMap<String, u64>,
    /// Revoke races by outcome.
    pub races: [u64; 3],
    /// Every revoke race: how it ended, and its skew (ns).
    pub race_log: Vec<(String, i64)>,
    pub violations: Vec<String>,
}

impl Outcome {
    /// The sum of counter `name` over every label set.
    pub fn counter(&self, name: &str) -> u64 {
        self.metrics
            .iter()
            .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    }
}
