//! The keepalive supervisor: the one task of a client. It renews every session's lease in
//! batched calls (decisions in [`crate::lease::keepalive`]), routes doorbell messages to waiters and
//! sessions, and runs background cleanups (dropped guards, dropped sessions). It ends, after a
//! bounded drain, when the last handle of its client is gone.
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
use super::keepalive::Keepalive;
use super::leases::RenewReply;
use crate::base::error::Result;
use crate::base::lease_id::LeaseId;
use crate::base::session_state::{EntryCount, StatusCell};
use crate::redis::doorbell::Doorbell;
use crate::redis::{names, Core, LuaScript};

/// Work sent to the supervisor by handles (never blocks: an unbounded channel, so `Drop` can send).
pub(crate) enum Op {
    /// Start renewing a session's lease.
    Register {
        id: LeaseId,
        ttl: Duration,
        sent: Instant,
        valid_until: Instant,
        status: Arc<StatusCell>,
        entries: EntryCount,
    },
    /// Stop renewing (closed, or lost).
    Stop { id: LeaseId },
    /// Stop renewing and leave the lease to expire (orphaned, dropped with `OnDrop::Orphan`,
    /// or a `close()` whose revoke failed); sweep it once it has.
    Orphan { id: LeaseId, ttl: Duration },
    /// Stop renewing and revoke in the background (last handle dropped).
    Revoke { id: LeaseId, ttl: Duration },
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
    /// A connection came back: name it again (`redis/names.rs`). `pooled` is the index of
    /// the pool's client it belongs to; `None` for the doorbell connection.
    Reconnected {
        pooled: Option<usize>,
        server: fred::types::config::Server,
    },
}

type Task = Pin<Box<dyn Future<Output = TaskDone> + Send>>;

enum TaskDone {
    Renewed {
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
    /// Shared with the session's handles.
    status: Arc<StatusCell>,
    ttl: Duration,
    /// Lock entries the session holds or waits with, by its own count.
    entries: EntryCount,
}

pub(crate) struct Supervisor {
    core: Arc<Core>,
    subscriber: SubscriberClient,
    ops: mpsc::UnboundedReceiver<Op>,
    doorbell: Arc<Doorbell>,
    /// Channels of the doorbell that nobody watches any more.
    unwatched: mpsc::UnboundedReceiver<String>,
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
                id,
                ttl,
                sent,
                valid_until,
                status,
                entries,
            } => {
                self.keepalive.insert(id, ttl, valid_until, sent);
                self.sessions.insert(
                    id,
                    Tracked {
                        status,
                        ttl,
                        entries,
                    },
                );
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
            Op::TopologyChanged => self.resubscribe(false),
            Op::Reconnected { pooled, server } => {
                let core = self.core.clone();
                let subscriber = self.subscriber.clone();
                self.tasks.push(Box::pin(async move {
                    let name = names::connection_name(&core.keys, &core.id);
                    match pooled.and_then(|i| core.conn.pool().clients().get(i).cloned()) {
                        Some(client) => names::name_client(&client, Some(server), &name).await,
                        None => names::name_subscriber(&subscriber, &name).await,
                    }
                    TaskDone::Other
                }));
            }
            Op::Failover => self.failover(),
            Op::Cleanup {
                script,
                keys,
                args,
                retry_for,
            } => {
                let core = self.core.clone();
                self.tasks.push(Box::pin(async move {
                    cleanup::cleanup(core, script, keys, args, retry_for).await;
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
