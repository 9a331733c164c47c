//! The keepalive supervisor: the one task of a client. It renews every session's lease in
//! batched calls (decisions in [`crate::keepalive`]), routes doorbell messages to waiters and
//! sessions, and runs background cleanups (dropped guards, dropped sessions). It ends, after a
//! bounded drain, when the last handle of its client is gone.
//!
//! Every renewal call also sweeps expired leases (any client's: a crashed process cannot sweep
//! its own). A lease this client leaves to expire (orphaned, or a revoke that failed) is
//! remembered until a sweep that ran after it surely expired, and if no renewal comes along
//! to do it, a sweep-only call is made for it: a process whose last sessions were orphaned
//! leaves nothing behind in Redis.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, ClusterInterface, EventInterface};
use fred::types::Message;
use futures_util::stream::{FuturesUnordered, StreamExt};
use metrics::{counter, histogram};
use tokio::sync::{broadcast::error::RecvError, mpsc};

use crate::client::Core;
use crate::doorbell::Doorbell;
use crate::error::{Error, Result};
use crate::failover::SentinelWatch;
use crate::keepalive::{surely_expired, Event, Keepalive, MAX_BATCH};
use crate::lease::{LeaseId, RenewReply};
use crate::metrics as m;
use crate::script::LuaScript;
use crate::session::{end_status, SessionEnd, SessionState, StatusCell};

/// Work sent to the supervisor by handles (never blocks: an unbounded channel, so `Drop` can send).
pub(crate) enum Op {
    /// Start renewing a session's lease.
    Register {
        id: LeaseId,
        ttl: Duration,
        sent: Instant,
        valid_until: Instant,
        status: Arc<StatusCell>,
    },
    /// Stop renewing (closed, or lost).
    Stop { id: LeaseId },
    /// Stop renewing and leave the lease to expire (orphaned, dropped with `OnDrop::Orphan`,
    /// or a `close()` whose revoke failed); sweep it once it has.
    Orphan { id: LeaseId, ttl: Duration },
    /// Stop renewing and revoke in the background (last handle dropped).
    Revoke { id: LeaseId, ttl: Duration },
    /// Nobody in this process watches `channel` any more: unsubscribe (unless someone started
    /// watching it again meanwhile).
    Unsubscribe { channel: String },
    /// Run an idempotent cleanup script in the background (release a dropped guard, withdraw a
    /// dropped waiter), retrying while Redis is unreachable for up to `retry_for`.
    Cleanup {
        script: &'static LuaScript,
        keys: Vec<String>,
        args: Vec<String>,
        retry_for: Duration,
    },
    /// The cluster's slot layout changed (resharding, failover). A shard channel whose slot
    /// moved was unsubscribed by the server without fred telling us: subscribe again where it
    /// lives now, and have every waiter re-check.
    TopologyChanged,
    /// A sentinel announced that our service's primary switched (see `failover.rs`).
    Failover,
}

type Task = Pin<Box<dyn Future<Output = TaskDone> + Send>>;

enum TaskDone {
    Renewed {
        ids: Vec<LeaseId>,
        sent: Instant,
        recv: Instant,
        result: Result<RenewReply>,
    },
    /// The connections were re-established after a failover.
    Reconnected,
    /// A background revoke failed: the lease is left to expire.
    RevokeFailed {
        id: LeaseId,
        ttl: Duration,
    },
    Other,
}

/// How long the supervisor keeps running background cleanups after its client is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Expired leases swept per renewal call.
const SWEEP_LIMIT: usize = 64;
/// Sweep-only calls for orphaned leases are at least this far apart (after any call that
/// swept): a lease that has expired may be swept a little late, it holds nothing any more.
const ORPHAN_SWEEP_GAP: Duration = Duration::from_secs(1);
/// Timeout of a sweep-only call.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(5);

/// A session whose lease the supervisor renews.
struct Tracked {
    /// Shared with the session's handles.
    status: Arc<StatusCell>,
    ttl: Duration,
}

pub(crate) struct Supervisor {
    core: Arc<Core>,
    subscriber: SubscriberClient,
    ops: mpsc::UnboundedReceiver<Op>,
    doorbell: Arc<Doorbell>,
    keepalive: Keepalive,
    sessions: HashMap<LeaseId, Tracked>,
    /// Leases this client left to expire, each with the instant by which it surely has. A call
    /// that swept everything expired when it was sent removes those due before.
    orphans: BTreeSet<(Instant, LeaseId)>,
    /// When the last call that sweeps (any renewal call) was sent.
    last_sweep: Instant,
    /// A sweep-only call is in flight.
    sweeping: bool,
    tasks: FuturesUnordered<Task>,
    wake_channel: String,
    /// Replication id of the server that answered the last renewal.
    replid: Option<String>,
    /// Connections listening to the sentinels for failovers (empty unless Sentinel).
    sentinels: Vec<SentinelWatch>,
    /// After a failover, until the connections point at the new primary: a renewal now could
    /// still reach the old one and extend a lease the new one may not have.
    renewals_paused: bool,
}

impl Supervisor {
    pub(crate) fn new(
        core: Arc<Core>,
        subscriber: SubscriberClient,
        ops: mpsc::UnboundedReceiver<Op>,
        doorbell: Arc<Doorbell>,
        sentinels: Vec<SentinelWatch>,
    ) -> Supervisor {
        Supervisor {
            sentinels,
            renewals_paused: false,
            subscriber,
            ops,
            doorbell,
            keepalive: Keepalive::default(),
            sessions: HashMap::new(),
            orphans: BTreeSet::new(),
            last_sweep: Instant::now(),
            sweeping: false,
            tasks: FuturesUnordered::new(),
            wake_channel: core.keys.wake(&core.id),
            replid: None,
            core,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut messages = self.subscriber.message_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut subscribed = true;
        loop {
            let deadline = if self.renewals_paused {
                self.keepalive.next_expiry()
            } else {
                earliest(self.keepalive.next_deadline(), self.orphan_sweep_at())
            };
            tokio::select! {
                op = self.ops.recv() => match op {
                    Some(op) => self.handle(op),
                    None => break,
                },
                msg = messages.recv(), if subscribed => match msg {
                    Ok(msg) => self.on_message(msg),
                    // Missed messages: every waiter re-checks with the server.
                    Err(RecvError::Lagged(_)) => self.doorbell.ring_all(),
                    Err(RecvError::Closed) => subscribed = false,
                },
                r = reconnects.recv(), if subscribed => {
                    if r.is_ok() {
                        self.resubscribe(true);
                    }
                }
                Some(done) = self.tasks.next(), if !self.tasks.is_empty() => self.on_task(done),
                _ = sleep_until(deadline), if deadline.is_some() => self.tick(),
            }
        }
        self.shutdown().await;
    }

    fn handle(&mut self, op: Op) {
        match op {
            Op::Register {
                id,
                ttl,
                sent,
                valid_until,
                status,
            } => {
                self.keepalive.insert(id, ttl, valid_until, sent);
                self.sessions.insert(id, Tracked { status, ttl });
            }
            Op::Stop { id } => {
                self.keepalive.remove(id);
                self.sessions.remove(&id);
            }
            Op::Orphan { id, ttl } => {
                self.keepalive.remove(id);
                self.sessions.remove(&id);
                self.orphaned(id, ttl);
            }
            Op::Revoke { id, ttl } => {
                self.keepalive.remove(id);
                self.sessions.remove(&id);
                self.spawn_revoke(id, ttl);
            }
            Op::Unsubscribe { channel } => {
                if !self.doorbell.channel_watched(&channel) {
                    let (core, doorbell) = (self.core.clone(), self.doorbell.clone());
                    self.tasks.push(Box::pin(async move {
                        let _ = core.unsubscribe(channel.clone()).await;
                        // Someone started watching again while we unsubscribed: subscribe
                        // again and have them re-check.
                        if doorbell.channel_watched(&channel) {
                            let _ = core.subscribe(channel.clone()).await;
                            doorbell.channel_message(&channel);
                        }
                        TaskDone::Other
                    }));
                }
            }
            Op::TopologyChanged => self.resubscribe(false),
            Op::Failover => self.failover(),
            Op::Cleanup {
                script,
                keys,
                args,
                retry_for,
            } => {
                let core = self.core.clone();
                self.tasks.push(Box::pin(async move {
                    cleanup(core, script, keys, args, retry_for).await;
                    TaskDone::Other
                }));
            }
        }
    }

    fn spawn_revoke(&mut self, id: LeaseId, ttl: Duration) {
        let core = self.core.clone();
        self.tasks.push(Box::pin(async move {
            match core.revoke_unused(id).await {
                Ok(_) => TaskDone::Other,
                Err(e) => {
                    tracing::debug!(lease = %id, error = %e, "background revoke failed; the lease will expire by its TTL");
                    TaskDone::RevokeFailed { id, ttl }
                }
            }
        }));
    }

    /// Nobody renews `id` any more and it was not revoked: have it swept once it has surely
    /// expired, if no renewal call does it first.
    fn orphaned(&mut self, id: LeaseId, ttl: Duration) {
        self.orphans
            .insert((surely_expired(Instant::now(), ttl), id));
    }

    /// When to send a sweep-only call for orphaned leases, if one is needed.
    fn orphan_sweep_at(&self) -> Option<Instant> {
        if self.sweeping {
            return None;
        }
        let (expired, _) = self.orphans.first()?;
        Some((*expired).max(self.last_sweep + ORPHAN_SWEEP_GAP))
    }

    fn resubscribe(&mut self, renew_all: bool) {
        if renew_all {
            // Redis may have restarted and lost our leases: find out now, not at the next
            // renewal.
            self.keepalive.all_due(Instant::now());
        }
        let (sub, doorbell) = (self.subscriber.clone(), self.doorbell.clone());
        let clustered = sub.is_clustered();
        self.tasks.push(Box::pin(async move {
            // On a cluster, a slot migration can still be settling: a shard channel subscribed
            // on the old owner just before it lets go is dropped again without notice. So
            // subscribe once now and once more a second later, each time from a fresh slot map.
            let rounds = if clustered { 2 } else { 1 };
            for round in 0..rounds {
                if round > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                for attempt in 1..=5u32 {
                    if clustered {
                        let _ = sub.sync_cluster().await;
                    }
                    match sub.resubscribe_all().await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, attempt, "doorbell resubscribe failed");
                            tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                        }
                    }
                }
                // Rings sent while we were not subscribed are lost: every waiter and observer
                // re-checks.
                doorbell.ring_all();
                doorbell.bump_all_channels();
            }
            TaskDone::Other
        }));
    }

    /// Doorbell messages: `c <contender>` (your turn may have come), `o <contender>` (a mutex
    /// contender owns now), `r <lease>` (revoked), `x <lease>` (expired and swept).
    fn on_message(&mut self, msg: Message) {
        if msg.channel != self.wake_channel {
            self.doorbell.channel_message(&msg.channel);
            return;
        }
        let Some(text) = msg.value.as_str() else {
            return;
        };
        let (kind, arg) = text.split_once(' ').unwrap_or((&text, ""));
        match kind {
            "c" => self.doorbell.ring(arg),
            "o" => self.doorbell.ring_owner(arg),
            "r" | "x" => {
                if let Ok(id) = arg.parse::<LeaseId>() {
                    if self.keepalive.remove(id) {
                        let end = if kind == "r" {
                            SessionEnd::Revoked
                        } else {
                            SessionEnd::LeaseNotFound
                        };
                        self.apply(Event::Lost { id, end });
                    }
                }
            }
            _ => {}
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        for ev in self.keepalive.expire(now) {
            self.apply(ev);
        }
        while !self.renewals_paused {
            let (ids, timeout) = self.keepalive.take_due(now, MAX_BATCH);
            if ids.is_empty() {
                break;
            }
            self.spawn_renew(ids, timeout);
        }
        if !self.renewals_paused && self.orphan_sweep_at().is_some_and(|t| t <= now) {
            self.sweeping = true;
            self.spawn_renew(Vec::new(), SWEEP_TIMEOUT);
        }
    }

    /// One batched renewal call (with no ids: a sweep only).
    fn spawn_renew(&mut self, ids: Vec<LeaseId>, timeout: Duration) {
        self.last_sweep = Instant::now();
        let core = self.core.clone();
        self.tasks.push(Box::pin(async move {
            let sent = Instant::now();
            let result = core.renew(&ids, SWEEP_LIMIT, timeout).await;
            TaskDone::Renewed {
                ids,
                sent,
                recv: Instant::now(),
                result,
            }
        }));
    }

    /// A renewal answered from another replication history than the last one (a replica was
    /// promoted, or Redis restarted without its data): leases may have been lost. Every session
    /// not confirmed by this very reply goes into jeopardy and is renewed at once, so a lease
    /// missing on the new server is reported lost now, not when its TTL would have run out.
    fn check_server_history(&mut self, replid: &str, confirmed: &[LeaseId]) {
        match &self.replid {
            Some(known) if known == replid => return,
            Some(known) => {
                counter!(m::FAILOVERS).increment(1);
                tracing::warn!(
                    namespace = self.core.keys.namespace(),
                    old = %known,
                    new = %replid,
                    "Redis replication history changed (failover or restart): re-checking every lease"
                );
                for ev in self.keepalive.suspect_all(Instant::now(), confirmed) {
                    counter!(m::SESSION_JEOPARDY, "reason" => "failover").increment(1);
                    self.apply(ev);
                }
            }
            None => {}
        }
        self.replid = Some(replid.to_owned());
    }

    /// The primary switched: every session is in jeopardy until a renewal on the new primary
    /// confirms it. Renewals wait for the reconnection (fred asks the sentinels again), then all
    /// run at once. The sentinels each announce the switch; repeats during a reconnection are
    /// ignored.
    fn failover(&mut self) {
        if self.renewals_paused {
            return;
        }
        self.renewals_paused = true;
        for ev in self.keepalive.suspect_all(Instant::now(), &[]) {
            counter!(m::SESSION_JEOPARDY, "reason" => "failover").increment(1);
            self.apply(ev);
        }
        let (core, subscriber) = (self.core.clone(), self.subscriber.clone());
        self.tasks.push(Box::pin(async move {
            let reconnect = async {
                let _ = core.conn.pool().force_reconnection().await;
                let _ = subscriber.force_reconnection().await;
            };
            // Bounded: if the sentinels cannot be reached, renewals resume (and fail, and the
            // sessions run out) rather than stay paused.
            let _ = tokio::time::timeout(core.conn.timeout() * 2, reconnect).await;
            TaskDone::Reconnected
        }));
    }

    fn on_task(&mut self, done: TaskDone) {
        match done {
            TaskDone::Reconnected => {
                self.renewals_paused = false;
                self.keepalive.all_due(Instant::now());
                return;
            }
            TaskDone::RevokeFailed { id, ttl } => {
                self.orphaned(id, ttl);
                return;
            }
            _ => {}
        }
        let TaskDone::Renewed {
            ids,
            sent,
            recv,
            result,
        } = done
        else {
            return;
        };
        counter!(m::RENEW_CALLS).increment(1);
        histogram!(m::RENEW_LATENCY).record((recv - sent).as_secs_f64());
        histogram!(m::RENEW_BATCH).record(ids.len() as f64);
        if ids.is_empty() {
            self.sweeping = false;
        }
        match result {
            Ok(reply) => {
                if reply.swept >= SWEEP_LIMIT as u64 {
                    // A backlog of expired leases (a crashed process had many): keep sweeping.
                    self.spawn_renew(Vec::new(), SWEEP_TIMEOUT);
                } else {
                    // Everything expired when this call was sent is gone: so are the orphans
                    // that had surely expired by then.
                    self.orphans = self.orphans.split_off(&(sent, LeaseId::MAX));
                }
                self.check_server_history(&reply.replid, &ids);
                let step = self.keepalive.clock.observe(reply.server_us, sent, recv);
                if !step.is_zero() {
                    counter!(m::CLOCK_FORWARD_STEPS).increment(1);
                    tracing::warn!(
                        ?step,
                        "Redis clock ran ahead of the local clock; leases shortened"
                    );
                    // Leases renewed before the step expire that much earlier on the server.
                    for (id, valid_until) in self.keepalive.shorten(step, &ids) {
                        if let Some(t) = self.sessions.get(&id) {
                            t.status.send_modify(|s| s.valid_until = valid_until);
                        }
                    }
                }
                for (id, ttl) in ids.into_iter().zip(reply.ttls) {
                    if let Some(ev) = self.keepalive.renewed(id, ttl, sent, recv, step) {
                        self.apply(ev);
                    }
                }
            }
            Err(e) => {
                let reason = if matches!(e, Error::Timeout(_)) {
                    "timeout"
                } else {
                    "error"
                };
                tracing::debug!(error = %e, leases = ids.len(), "renewal failed");
                let now = Instant::now();
                for id in ids {
                    if self.keepalive.failed(id, now).is_some() {
                        counter!(m::SESSION_JEOPARDY, "reason" => reason).increment(1);
                        self.apply(Event::Jeopardy { id });
                    }
                }
            }
        }
    }

    fn apply(&mut self, ev: Event) {
        match ev {
            Event::Renewed {
                id,
                valid_until,
                headroom,
            } => {
                histogram!(m::RENEW_HEADROOM).record(headroom.as_secs_f64());
                let Some(t) = self.sessions.get(&id) else {
                    return;
                };
                let now = Instant::now();
                let mut expired = false;
                t.status.send_if_modified(|s| {
                    if matches!(s.state, SessionState::Ended(_)) {
                        return false;
                    }
                    if now >= s.valid_until {
                        // Handles already see it expired (by the clock): never revive.
                        expired = true;
                        return false;
                    }
                    s.state = SessionState::Alive;
                    s.valid_until = valid_until;
                    true
                });
                if expired {
                    self.keepalive.remove(id);
                    self.apply(Event::Lost {
                        id,
                        end: SessionEnd::Expired,
                    });
                }
            }
            Event::Jeopardy { id } => {
                if let Some(t) = self.sessions.get(&id) {
                    t.status.send_if_modified(|s| {
                        if s.state != SessionState::Alive {
                            return false;
                        }
                        s.state = SessionState::Jeopardy;
                        true
                    });
                }
            }
            Event::Lost { id, end } => {
                counter!(m::SESSION_LOST, "reason" => end.label()).increment(1);
                let tracked = self.sessions.remove(&id);
                if let Some(t) = &tracked {
                    end_status(&t.status, end);
                }
                tracing::warn!(lease = %id, reason = %end, "session lost");
                if let (SessionEnd::Expired, Some(t)) = (end, tracked) {
                    // The server may still hold the lease; free what it holds once we can.
                    self.spawn_revoke(id, t.ttl);
                }
            }
        }
    }

    async fn shutdown(mut self) {
        let drain = async { while self.tasks.next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::warn!("leasehold client shut down with background cleanups still pending");
        }
        for sentinel in std::mem::take(&mut self.sentinels) {
            sentinel.stop().await;
        }
        let _ = self.subscriber.quit().await;
        let _ = self.core.conn.pool().quit().await;
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Run a cleanup script, retrying transient failures with backoff for up to `retry_for`
/// (after that the lease has run out and the entry is gone with it).
async fn cleanup(
    core: Arc<Core>,
    script: &'static LuaScript,
    keys: Vec<String>,
    args: Vec<String>,
    retry_for: Duration,
) {
    let give_up = Instant::now() + retry_for;
    let mut backoff = Duration::from_millis(50);
    loop {
        match core.conn.eval(script, keys.clone(), args.clone()).await {
            Ok(_) => return,
            Err(e) if e.is_transient() && Instant::now() + backoff < give_up => {
                tracing::debug!(script = script.name, error = %e, "background cleanup failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::warn!(script = script.name, error = %e, "background cleanup failed; the entry goes when its lease does");
                return;
            }
        }
    }
}
