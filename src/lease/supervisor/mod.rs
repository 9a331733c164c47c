//! The keepalive supervisor: the one task of a client. It renews every session's lease in
//! batched calls (decisions in [`crate::lease::keepalive`]), routes doorbell messages to waiters and
//! sessions, and runs background cleanups (dropped guards, dropped sessions). It ends, after a
//! bounded drain, when the last handle of its client is gone.
//!
//! One supervisor serves every namespace of its client ([`Client::with_namespace`]). A
//! namespace is one Cluster slot and its leases live in its own registry, so renewals and
//! sweeps go out per namespace: each tick sends one call per namespace with leases due, and
//! the sweep and failover bookkeeping is kept per namespace (`Space`). Lease ids are UUIDs, so
//! sessions and the keepalive state are keyed by lease id alone.
//!
//! [`Client::with_namespace`]: crate::Client::with_namespace
//!
//! The parts: `renew.rs` (renewal ticks and replies), `pubsub.rs` (the doorbell subscription),
//! `cleanup.rs` (background revokes, releases and sweeps), `failover.rs` (Sentinel).
//!
//! Every renewal call also sweeps expired leases (any client's: a crashed process cannot sweep
//! its own). A lease this client leaves to expire (orphaned, or a revoke that failed) is
//! remembered until a sweep that ran after it surely expired, and if no renewal comes along
//! to do it, a sweep-only call is made for it: a process whose last sessions were orphaned
//! leaves nothing behind in Redis.

mod cleanup;
pub(crate) mod failover;
mod pubsub;
mod renew;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{broadcast::error::RecvError, mpsc};

use self::failover::SentinelWatch;
use super::keepalive::{CallQueue, Keepalive, ServerClock};
use super::leases::{RenewAs, RenewReply};
use super::sub_lease::SubLease;
use crate::base::error::Result;
use crate::base::lease_id::LeaseId;
use crate::base::session_state::{EntryCount, SessionEnd, SessionState, StatusCell};
use crate::redis::doorbell::Doorbell;
use crate::redis::{names, Core, LuaScript};

/// Work sent to the supervisor by handles (never blocks: an unbounded channel, so `Drop` can send).
pub(crate) enum Op {
    /// Start renewing a session's lease.
    Register {
        ns: Arc<Core>,
        id: LeaseId,
        ttl: Duration,
        sent: Instant,
        valid_until: Instant,
        status: Arc<StatusCell>,
        entries: EntryCount,
        /// A sub-lease of a spread namespace's session: the session's own lease id (its
        /// anchor), and the state it shares with its session.
        sub: Option<(LeaseId, Arc<SubLease>)>,
    },
    /// Stop renewing (closed, or lost).
    Stop { id: LeaseId },
    /// A script found lease `id` gone: its session, whose own lease is `anchor` (`id` unless
    /// `id` is a sub-lease), ended with `end`, and a spread session's other leases are
    /// revoked. `id` may not be renewed here yet (a sub-lease whose grant found it gone).
    Lost {
        id: LeaseId,
        anchor: LeaseId,
        end: SessionEnd,
    },
    /// Stop renewing and leave the lease to expire (orphaned, dropped with `OnDrop::Orphan`,
    /// or a `close()` whose revoke failed); sweep it once it has.
    Orphan {
        ns: Arc<Core>,
        id: LeaseId,
        ttl: Duration,
    },
    /// Stop renewing and revoke in the background (last handle dropped).
    Revoke {
        ns: Arc<Core>,
        id: LeaseId,
        ttl: Duration,
    },
    /// Run an idempotent cleanup script in the background (release a dropped guard, withdraw a
    /// dropped waiter), retrying while Redis is unreachable for up to `retry_for`.
    Cleanup {
        ns: Arc<Core>,
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
    /// A pooled connection came back: name it again (`redis/names.rs`). `pooled` is the
    /// index of the pool's client it belongs to. (The doorbell connection is named again when
    /// it subscribes again: see `pubsub.rs`.)
    Reconnected {
        pooled: usize,
        server: fred::types::config::Server,
    },
}

type Task = Pin<Box<dyn Future<Output = TaskDone> + Send>>;

enum TaskDone {
    Renewed {
        ns: Arc<Core>,
        ids: Vec<LeaseId>,
        /// Per id, the window of its session's entry count (see `EntryCount`).
        windows: Vec<Option<u64>>,
        sent: Instant,
        recv: Instant,
        result: Result<RenewReply>,
    },
    /// The connections were re-established after a failover.
    Reconnected,
    /// A background revoke failed: the lease is left to expire.
    RevokeFailed {
        ns: Arc<Core>,
        id: LeaseId,
        ttl: Duration,
    },
    Other,
}

/// How long the supervisor keeps running background cleanups after its client is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Expired leases swept per renewal call.
pub(super) const SWEEP_LIMIT: usize = 64;
/// Sweep-only calls for orphaned leases are at least this far apart (after any call that
/// swept): a lease that has expired may be swept a little late, it holds nothing any more.
pub(super) const ORPHAN_SWEEP_GAP: Duration = Duration::from_secs(1);
/// Timeout of a sweep-only call.
pub(super) const SWEEP_TIMEOUT: Duration = Duration::from_secs(5);

/// A session whose lease the supervisor renews.
struct Tracked {
    /// Its namespace.
    ns: Arc<Core>,
    /// Shared with the session's handles.
    status: Arc<StatusCell>,
    ttl: Duration,
    /// Lock entries the session holds or waits with, by its own count.
    entries: EntryCount,
    /// For a sub-lease: its session's own lease id, and the state it shares with it.
    sub: Option<(LeaseId, Arc<SubLease>)>,
}

impl Tracked {
    /// The lease of the session that `id` (this lease) belongs to: `id` itself, unless it is
    /// a sub-lease.
    fn anchor(&self, id: LeaseId) -> LeaseId {
        self.sub.as_ref().map_or(id, |(anchor, _)| *anchor)
    }
}

/// One renewal call, planned: each lease with how to renew it and its session's entry window,
/// and the call's timeout.
struct Planned {
    leases: Vec<(LeaseId, RenewAs)>,
    windows: Vec<Option<u64>>,
    timeout: Duration,
}

/// What the supervisor keeps per namespace: its sweeps, its renewal calls and the server
/// history of its slot.
struct Space {
    core: Arc<Core>,
    /// Leases this client left to expire, each with the instant by which it surely has. A call
    /// that swept everything expired when it was sent removes those due before.
    orphans: BTreeSet<(Instant, LeaseId)>,
    /// When the last call that sweeps (any renewal call) was sent.
    last_sweep: Instant,
    /// A sweep-only call is in flight.
    sweeping: bool,
    /// Renewal calls planned for this namespace, sent one after another.
    calls: CallQueue<Planned>,
    /// Replication id of the server that answered the last renewal.
    replid: Option<String>,
    /// The clock of the server that holds the namespace (two namespaces of a cluster may be
    /// on two servers whose clocks differ).
    clock: ServerClock,
}

impl Space {
    fn new(core: Arc<Core>) -> Space {
        Space {
            core,
            orphans: BTreeSet::new(),
            last_sweep: Instant::now(),
            sweeping: false,
            calls: CallQueue::default(),
            replid: None,
            clock: ServerClock::default(),
        }
    }

    /// When to send a sweep-only call for orphaned leases, if one is needed.
    fn sweep_at(&self) -> Option<Instant> {
        if self.sweeping {
            return None;
        }
        let (expired, _) = self.orphans.first()?;
        Some((*expired).max(self.last_sweep + ORPHAN_SWEEP_GAP))
    }
}

pub(crate) struct Supervisor {
    /// The namespace the client was built for: its connections are named after it.
    home: Arc<Core>,
    /// Every namespace that has had a session, by name.
    spaces: HashMap<String, Space>,
    /// Whether the command pool is the client's own (closed at the end) or the caller's.
    owns_pool: bool,
    subscriber: SubscriberClient,
    ops: mpsc::UnboundedReceiver<Op>,
    doorbell: Arc<Doorbell>,
    /// Channels of the doorbell that nobody watches any more.
    unwatched: mpsc::UnboundedReceiver<String>,
    keepalive: Keepalive,
    sessions: HashMap<LeaseId, Tracked>,
    /// Spread sessions: a session's own lease id -> its sub-leases renewed here. One shared
    /// status serves them all; its validity is the least of theirs.
    groups: HashMap<LeaseId, Vec<LeaseId>>,
    tasks: FuturesUnordered<Task>,
    /// Connections listening to the sentinels for failovers (empty unless Sentinel).
    sentinels: Vec<SentinelWatch>,
    /// After a failover, until the connections point at the new primary: a renewal now could
    /// still reach the old one and extend a lease the new one may not have.
    renewals_paused: bool,
}

impl Supervisor {
    pub(crate) fn new(
        home: Arc<Core>,
        owns_pool: bool,
        subscriber: SubscriberClient,
        ops: mpsc::UnboundedReceiver<Op>,
        doorbell: Arc<Doorbell>,
        unwatched: mpsc::UnboundedReceiver<String>,
        sentinels: Vec<SentinelWatch>,
    ) -> Supervisor {
        Supervisor {
            unwatched,
            sentinels,
            renewals_paused: false,
            subscriber,
            ops,
            doorbell,
            keepalive: Keepalive::default(),
            sessions: HashMap::new(),
            groups: HashMap::new(),
            tasks: FuturesUnordered::new(),
            spaces: HashMap::new(),
            owns_pool,
            home,
        }
    }

    /// Forget session lease `id` (no longer renewed here); a sub-lease also leaves its group
    /// and becomes absent to its session.
    fn untrack(&mut self, id: LeaseId) -> Option<Tracked> {
        let t = self.sessions.remove(&id)?;
        if let Some((anchor, sub)) = &t.sub {
            if let Some(members) = self.groups.get_mut(anchor) {
                members.retain(|m| *m != id);
                if members.is_empty() {
                    self.groups.remove(anchor);
                }
            }
            sub.absent();
        }
        Some(t)
    }

    /// The bookkeeping of `core`'s namespace, created on first use.
    fn space(&mut self, core: &Arc<Core>) -> &mut Space {
        self.spaces
            .entry(core.keys.namespace().to_owned())
            .or_insert_with(|| Space::new(core.clone()))
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
                Some(channel) = self.unwatched.recv() => self.unwatch(channel),
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
                ns,
                id,
                ttl,
                sent,
                valid_until,
                status,
                entries,
                sub,
            } => {
                if let (Some((_, lease)), SessionState::Ended(_)) = (&sub, status.borrow().state) {
                    // A sub-lease granted while its session was being lost: the loss already
                    // revoked the session's other leases; this one goes the same way.
                    lease.absent();
                    self.spawn_revoke(ns, id, ttl);
                    return;
                }
                let space = space_key(ns.keys.namespace());
                self.keepalive.insert_in(space, id, ttl, valid_until, sent);
                if let Some((anchor, _)) = &sub {
                    let members = self.groups.entry(*anchor).or_default();
                    if !members.contains(&id) {
                        members.push(id);
                    }
                }
                // A renewal of another of the session's leases, applied before this one was
                // registered, did not count it: the session is valid no longer than it is.
                status.send_if_modified(|s| {
                    let lower = valid_until < s.valid_until;
                    if lower {
                        s.valid_until = valid_until;
                    }
                    lower
                });
                self.sessions.insert(
                    id,
                    Tracked {
                        ns,
                        status,
                        ttl,
                        entries,
                        sub,
                    },
                );
            }
            Op::Stop { id } => {
                self.keepalive.remove(id);
                self.untrack(id);
            }
            Op::Lost { id, anchor, end } => {
                if let Some(ev) = self.lost(id, end).or_else(|| self.lost(anchor, end)) {
                    self.apply(ev);
                }
            }
            Op::Orphan { ns, id, ttl } => {
                self.keepalive.remove(id);
                self.untrack(id);
                self.orphaned(&ns, id, ttl);
            }
            Op::Revoke { ns, id, ttl } => {
                self.keepalive.remove(id);
                self.untrack(id);
                self.spawn_revoke(ns, id, ttl);
            }
            Op::TopologyChanged => self.resubscribe(false),
            Op::Reconnected { pooled, server } => {
                // A caller's pool keeps the names the caller gave its connections.
                let client = self.home.conn.pool().clients().get(pooled).cloned();
                let Some(client) = client.filter(|_| self.owns_pool) else {
                    return;
                };
                let name = names::connection_name(&self.home.keys, &self.home.id);
                self.tasks.push(Box::pin(async move {
                    names::name_client(&client, Some(server), &name).await;
                    TaskDone::Other
                }));
            }
            Op::Failover => self.failover(),
            Op::Cleanup {
                ns,
                script,
                keys,
                args,
                retry_for,
            } => {
                self.tasks.push(Box::pin(async move {
                    cleanup::cleanup(ns, script, keys, args, retry_for).await;
                    TaskDone::Other
                }));
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
        if self.owns_pool {
            let _ = self.home.conn.pool().quit().await;
        }
    }
}

/// A number that tells namespace `name` apart from the client's others, for the keepalive's
/// per-namespace schedule (two names with one number would only share renewal timing).
fn space_key(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
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
