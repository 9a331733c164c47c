//! A session of a spread namespace (`docs/architecture.md`, "Spread namespaces"): its own
//! lease in the home namespace (granted when it opens; what its keys attach to, what
//! operators list and revoke), and a sub-lease in each sub-namespace where it holds or waits
//! for something, granted by its first lock call there (`lua/lease/lease_touch.lua`) and
//! dropped by the supervisor once unused (`src/lease/sub_lease.rs`).
//!
//! What a caller can rely on: a spread session is one session. Its leases share one status,
//! valid until the least of their validities; it ends, for every guard of every
//! sub-namespace, as soon as any of its leases is lost, and the supervisor then revokes the
//! others. `close`, `orphan` and dropping it apply to all of them.
//!
//! Who owns what: the session (the handle users hold) owns the table of its sub-leases; each
//! primitive of a name in sub-namespace `k` holds the session's part there, a [`Session`] whose
//! client is sub-namespace `k`'s and whose lease is the sub-lease. That part holds the session
//! strongly, so a guard keeps its session alive, as elsewhere; the table holds the parts
//! weakly, so there is no cycle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use metrics::counter;
use tokio::sync::futures::Notified;

use super::{Session, SessionInner};
use crate::base::error::{Error, Result};
use crate::base::lease_id::LeaseId;
use crate::base::metrics as m;
use crate::base::session_state::{SessionEnd, SessionState};
use crate::client::Client;
use crate::lease::keepalive;
use crate::lease::leases::Touch;
use crate::lease::sub_lease::{Pin, State, SubLease};
use crate::lease::Op;

/// What a session is.
pub(super) enum Role {
    /// A session of an unspread namespace: one lease.
    Plain,
    /// A spread namespace's session: its own lease, and its sub-leases.
    Anchor(SpreadSession),
    /// Such a session's part in one sub-namespace.
    Sub(SubPart),
}

/// A spread namespace's session's sub-leases.
pub(super) struct SpreadSession {
    subs: std::sync::Mutex<HashMap<u16, SubEntry>>,
    /// Set once by `close`: no sub-lease is granted after.
    closed: AtomicBool,
    /// The session's label, given to its sub-leases too.
    label: String,
}

struct SubEntry {
    lease: Arc<SubLease>,
    part: Weak<SessionInner>,
}

/// A session's part in one sub-namespace.
pub(super) struct SubPart {
    pub(super) parent: Session,
    /// The sub-namespace's index.
    k: u16,
    lease: Arc<SubLease>,
}

impl SpreadSession {
    pub(super) fn new(label: String) -> SpreadSession {
        SpreadSession {
            subs: std::sync::Mutex::default(),
            closed: AtomicBool::new(false),
            label,
        }
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, HashMap<u16, SubEntry>> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sub-leases that may be on the server now (granted, or being dropped), with the
    /// client of their sub-namespace.
    fn granted(&self, client: &Client) -> Vec<(Client, LeaseId)> {
        self.subs()
            .iter()
            .filter(|(_, e)| {
                matches!(
                    *e.lease.state(),
                    State::Live { .. } | State::Retiring { .. }
                )
            })
            .filter_map(|(k, e)| Some((client.sub_client(*k)?.clone(), e.lease.id)))
            .collect()
    }

    /// `Session::close`: no more sub-leases; revoke those granted.
    pub(super) async fn close(&self, client: &Client, ttl: Duration) -> Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        let revokes = self
            .granted(client)
            .into_iter()
            .map(|(sub, id)| async move {
                let inner = sub.shared();
                inner.send(Op::Stop { id });
                inner.revoke_unused(id).await.map(drop).inspect_err(|_| {
                    inner.send(Op::Orphan {
                        ns: inner.core().clone(),
                        id,
                        ttl,
                    })
                })
            });
        let results = futures_util::future::join_all(revokes).await;
        results.into_iter().collect()
    }

    /// `Session::orphan`: stop renewing every sub-lease.
    pub(super) fn orphan(&self, client: &Client, ttl: Duration) {
        self.closed.store(true, Ordering::SeqCst);
        for (sub, id) in self.granted(client) {
            let inner = sub.shared();
            inner.send(Op::Orphan {
                ns: inner.core().clone(),
                id,
                ttl,
            });
        }
    }

    /// The session was dropped; `op` is what happens to its own lease: the same to every
    /// sub-lease.
    pub(super) fn dropped(&self, client: &Client, op: &Op, ttl: Duration) {
        self.closed.store(true, Ordering::SeqCst);
        for (sub, id) in self.granted(client) {
            let ns = sub.shared().core().clone();
            sub.shared().send(match op {
                Op::Revoke { .. } => Op::Revoke { ns, id, ttl },
                Op::Orphan { .. } => Op::Orphan { ns, id, ttl },
                _ => Op::Stop { id },
            });
        }
    }
}

impl Session {
    /// The session to use for object `name`: this one, or on a spread namespace its part in
    /// the name's sub-namespace. No I/O: the sub-lease is granted by the first call that needs
    /// it ([`touch`](Self::touch)).
    pub(crate) fn for_name(&self, name: &str) -> Session {
        let Role::Anchor(spread) = &self.inner.role else {
            return self.clone();
        };
        let client = &self.inner.client;
        let Some(layout) = client.spread_layout() else {
            return self.clone();
        };
        let k = layout.index_of(name);
        let Some(sub_client) = client.sub_client(k) else {
            return self.clone();
        };
        let mut subs = spread.subs();
        let entry = subs.entry(k).or_insert_with(|| SubEntry {
            lease: SubLease::new(self.inner.lease.in_sub_namespace(k)),
            part: Weak::new(),
        });
        if let Some(inner) = entry.part.upgrade() {
            return Session { inner };
        }
        let inner = Arc::new(SessionInner {
            client: sub_client.clone(),
            lease: entry.lease.id,
            ttl: self.inner.ttl,
            status: self.inner.status.clone(),
            entries: entry.lease.entries.clone(),
            on_drop: self.inner.on_drop,
            role: Role::Sub(SubPart {
                parent: self.clone(),
                k,
                lease: entry.lease.clone(),
            }),
        });
        entry.part = Arc::downgrade(&inner);
        Session { inner }
    }

    /// Whether this is a spread session's part in a sub-namespace.
    pub(crate) fn is_sub_namespace_part(&self) -> bool {
        matches!(self.inner.role, Role::Sub(_))
    }

    /// The index of the sub-namespace, for a spread session's part in one.
    pub(crate) fn sub_index(&self) -> Option<u16> {
        match &self.inner.role {
            Role::Sub(part) => Some(part.k),
            _ => None,
        }
    }

    /// Before a call that queues or takes something with this session's lease: on a spread
    /// session's part in a sub-namespace, make sure the sub-lease is granted, and pin it
    /// (the supervisor does not drop it) until the returned pin is dropped. Nothing for any
    /// other session.
    ///
    /// # Cancel safety
    ///
    /// The grant runs in a task of its own, so dropping this future, or no longer polling it,
    /// holds up nobody: the grant finishes, and the session's other calls in the
    /// sub-namespace go on. A sub-lease granted for a call that went away holds nothing and is
    /// dropped by the supervisor once it stays unused for a renewal interval.
    pub(crate) async fn touch(&self) -> Result<Option<Pin>> {
        let Role::Sub(part) = &self.inner.role else {
            return Ok(None);
        };
        let Role::Anchor(spread) = &part.parent.inner.role else {
            return Ok(None);
        };
        let lease = &part.lease;
        loop {
            self.check()?;
            // Decided under the state's lock, done after it (a std lock is not held across
            // an await).
            let step = {
                let mut state = lease.state();
                match *state {
                    State::Live { .. } => {
                        state.pin();
                        return Ok(Some(Pin(lease.clone())));
                    }
                    // Closed or orphaned (its sub-leases let go of, so absent) since the check
                    // above: nothing is granted any more.
                    State::Absent if spread.closed.load(Ordering::SeqCst) => {
                        drop(state);
                        return Err(self.ended());
                    }
                    State::Absent => {
                        *state = State::Granting;
                        Step::Grant
                    }
                    State::Granting | State::Retiring { .. } => {
                        Step::Wait(lease.changed.notified())
                    }
                }
            };
            let changed = match step {
                Step::Grant => {
                    let granting = Granting(Some(lease.clone()));
                    let session = self.clone();
                    let grant = tokio::spawn(async move { session.grant(granting).await });
                    // A JoinError: the runtime is shutting down (or the grant panicked).
                    grant.await.map_err(|_| Error::Closed)??;
                    continue;
                }
                Step::Wait(changed) => changed,
            };
            tokio::select! {
                _ = changed => {}
                end = self.done() => return Err(self.lost(end)),
            }
        }
    }

    /// Grant this part's sub-lease, which `granting` holds in `Granting`, and hand it to the
    /// supervisor, live and unpinned. (Run by [`touch`](Self::touch) in a task of its own.)
    async fn grant(&self, mut granting: Granting) -> Result<()> {
        let Role::Sub(part) = &self.inner.role else {
            return Ok(());
        };
        let Role::Anchor(spread) = &part.parent.inner.role else {
            return Ok(());
        };
        let lease = &part.lease;
        let epoch = uuid::Uuid::new_v4().as_u64_pair().0;
        let inner = self.shared();
        let (touch, sent) = inner
            .touch(lease.id, self.inner.ttl, epoch, &spread.label)
            .await?;
        match touch {
            Touch::Granted(ttl) => {
                let valid_until = keepalive::validity(sent, ttl, Duration::ZERO);
                let mut state = lease.state();
                if spread.closed.load(Ordering::SeqCst) || !self.is_valid() {
                    drop(state);
                    inner.send(Op::Revoke {
                        ns: inner.core().clone(),
                        id: lease.id,
                        ttl,
                    });
                    return Err(self.ended());
                }
                // The session is valid no longer than its newest lease: this grant's reply may
                // have come late, after the session's own lease was renewed.
                self.inner
                    .status
                    .send_modify(|s| s.valid_until = s.valid_until.min(valid_until));
                // Registered while the state is locked, so that `close` (which looks at the
                // state after it stopped grants) either sees it granted and revokes it, or
                // made the check above fail.
                inner.send(Op::Register {
                    ns: inner.core().clone(),
                    id: lease.id,
                    ttl,
                    sent,
                    valid_until,
                    status: self.inner.status.clone(),
                    entries: lease.entries.clone(),
                    sub: Some((part.parent.inner.lease, lease.clone())),
                });
                *state = State::Live {
                    epoch,
                    pins: 0,
                    idle_since: None,
                };
                drop(state);
                lease.changed.notify_waiters();
                granting.0 = None;
                counter!(m::SUB_LEASES_GRANTED).increment(1);
                Ok(())
            }
            Touch::Revoked => {
                self.mark_lost(SessionEnd::Revoked);
                Err(self.lost(SessionEnd::Revoked))
            }
            Touch::Taken => {
                self.mark_lost(SessionEnd::Adopted);
                Err(self.lost(SessionEnd::Adopted))
            }
        }
    }

    /// The error for a call on a session that is closing or has ended: its end, or `Closed`
    /// while a close is still on its way.
    fn ended(&self) -> Error {
        match self.state() {
            SessionState::Ended(end) => self.lost(end),
            _ => self.lost(SessionEnd::Closed),
        }
    }
}

/// What [`Session::touch`] does next, as its sub-lease's state decides.
enum Step<'a> {
    /// Grant it: it was absent, and is now marked as being granted.
    Grant,
    /// Wait for a grant or a drop in flight to end.
    Wait(Notified<'a>),
}

/// A grant in flight: should it end without the sub-lease granted (an error, a cancelled
/// call), the sub-lease is absent again and callers waiting for it go on.
struct Granting(Option<Arc<SubLease>>);

impl Drop for Granting {
    fn drop(&mut self) {
        if let Some(lease) = self.0.take() {
            lease.absent();
        }
    }
}
