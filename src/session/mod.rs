//! Sessions: one lease plus its keepalive (etcd's `concurrency.Session`). On a spread
//! namespace, a session is its lease plus a sub-lease in each sub-namespace it uses
//! (`spread.rs`).

mod spread;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::gauge;
use tokio::sync::watch;

use crate::base::error::{Error, Result};
use crate::base::lease_id::LeaseId;
use crate::base::limits::{check_label, DEFAULT_TTL};
use crate::base::metrics as m;
use crate::base::session_state::{
    end_status, EntryCount, OnDrop, SessionEnd, SessionState, Status, StatusCell,
};
use crate::client::{Client, ClientInner};
use crate::lease::keepalive;
use crate::lease::Op;
use crate::redis::Keys;

use self::spread::{Role, SpreadSession};

/// Options for [`Client::session_with`].
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub(crate) ttl: Duration,
    pub(crate) lease: Option<LeaseId>,
    pub(crate) label: String,
    pub(crate) on_drop: Option<OnDrop>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            ttl: DEFAULT_TTL,
            lease: None,
            label: String::new(),
            on_drop: None,
        }
    }
}

impl SessionOptions {
    /// The defaults: a new lease with [`DEFAULT_TTL`](crate::DEFAULT_TTL), no label, and the
    /// client's [`OnDrop`] ([`ClientBuilder::on_session_drop`](crate::ClientBuilder::on_session_drop)).
    pub fn new() -> SessionOptions {
        SessionOptions::default()
    }

    /// Lease TTL (default 60 s). Renewal runs every TTL/3. Ignored with [`lease`](Self::lease).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Use an existing lease instead of granting one (etcd's `WithLease`), e.g. after a
    /// restart. Its election candidacies and keys are still yours (campaigning again resumes
    /// the candidacy in its place). Its lock entries (mutex, rwlock, semaphore, double
    /// barrier) are released: the guards that owned them died with the old process, so
    /// nothing else could ever release them. If a live session of another client still uses
    /// the lease, that session ends at once with [`SessionEnd::Adopted`] (and at its next
    /// renewal at the latest, should the message be lost). Fails with
    /// [`Error::LeaseNotFound`] when the lease is gone.
    pub fn lease(mut self, id: LeaseId) -> Self {
        self.lease = Some(id);
        self
    }

    /// A free label shown to operators in [`Client::leases`] (at most 256 bytes).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// What dropping the last handle does (default: the client's, which defaults to revoke).
    pub fn on_drop(mut self, on_drop: OnDrop) -> Self {
        self.on_drop = Some(on_drop);
        self
    }
}

/// A lease kept alive by the client's keepalive supervisor: etcd's session.
///
/// Everything created through a session (mutex queue entries, …) is attached to its lease and
/// lives exactly as long as the lease. One long-lived session per process (or per role) is the
/// intended use; tasks sharing it still exclude each other on a [`Mutex`](crate::Mutex).
///
/// Cheap to clone; all clones are the same session. **No task is spawned per session**: the
/// client's one supervisor renews every session's lease in batched calls. When the last handle
/// (including guards) is dropped, the lease is revoked in the background (see [`OnDrop`]).
///
/// # Lease loss
///
/// The session is *locally valid* until `t + ttl − margin`, where `t` is when the last
/// successful renewal was **sent**, so it never believes in a lease the server may already
/// have expired. [`done`](Self::done) resolves as soon as that runs out, even while Redis is
/// unreachable, or at once when Redis says the lease is gone or someone revokes it.
///
/// ```no_run
/// # async fn demo() -> leasehold::Result<()> {
/// use std::time::Duration;
/// use leasehold::{Client, SessionOptions};
///
/// let client = Client::connect("redis://127.0.0.1:6379").await?;
/// let session = client
///     .session_with(SessionOptions::new().ttl(Duration::from_secs(10)).label("billing"))
///     .await?;
/// let guard = session.mutex("nightly-report")?.lock().await?;
/// tokio::select! {
///     end = session.done() => eprintln!("lost the lock: {end}"),
///     _ = async { /* work, writing with guard.fencing_token() */ } => {}
/// }
/// guard.unlock().await?;
/// session.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

struct SessionInner {
    pub(crate) client: Client,
    pub(crate) lease: LeaseId,
    pub(crate) ttl: Duration,
    pub(crate) status: Arc<StatusCell>,
    /// Lock entries it holds or waits with (compared with Redis at each renewal).
    entries: EntryCount,
    on_drop: OnDrop,
    /// Plain, or a spread namespace's session, or one's part in a sub-namespace.
    role: Role,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("namespace", &self.namespace())
            .field("lease", &self.inner.lease)
            .field("ttl", &self.inner.ttl)
            .field("state", &self.state())
            .finish()
    }
}

/// Opening sessions.
impl Client {
    /// Open a session with the default options (TTL 60 s, revoke on drop).
    pub async fn session(&self) -> Result<Session> {
        Session::open(self, SessionOptions::default()).await
    }

    /// Open a session with options.
    pub async fn session_with(&self, options: SessionOptions) -> Result<Session> {
        Session::open(self, options).await
    }
}

impl Session {
    #[tracing::instrument(
        name = "leasehold.session_open",
        level = "debug",
        skip_all,
        fields(
            namespace = client.namespace(),
            ttl_ms = opts.ttl.as_millis() as u64,
            adopt = opts.lease.is_some(),
            lease = tracing::field::Empty,
        )
    )]
    async fn open(client: &Client, opts: SessionOptions) -> Result<Session> {
        let inner = client.shared();
        inner.eviction.check()?;
        let spread = client.spread_layout().is_some();
        let (lease, ttl, sent) = match opts.lease {
            Some(_) if spread => {
                return Err(Error::InvalidArgument(
                    "a spread namespace's session cannot take over a lease \
                     (SessionOptions::lease): its sub-leases are not adopted"
                        .to_owned(),
                ))
            }
            Some(id) => {
                check_label(&opts.label)?;
                let sent = Instant::now();
                match inner.adopt(id).await? {
                    Some(ttl) => (id, ttl, sent),
                    None => {
                        return Err(Error::LeaseNotFound {
                            namespace: inner.keys.namespace().to_owned(),
                            lease: id,
                        })
                    }
                }
            }
            None => {
                let (lease, sent) = inner.grant(opts.ttl, &opts.label).await?;
                (lease.id, lease.ttl, sent)
            }
        };
        let valid_until = keepalive::validity(sent, ttl, Duration::ZERO);
        let status = Arc::new(
            watch::channel(Status {
                state: SessionState::Alive,
                valid_until,
            })
            .0,
        );
        let entries = EntryCount::default();
        inner.send(Op::Register {
            ns: inner.core().clone(),
            id: lease,
            ttl,
            sent,
            valid_until,
            status: status.clone(),
            entries: entries.clone(),
            sub: None,
        });
        let live = inner.live_sessions.fetch_add(1, Ordering::SeqCst) + 1;
        gauge!(m::SESSIONS_LIVE).increment(1.0);
        tracing::Span::current().record("lease", tracing::field::display(lease));
        tracing::debug!(live, "session opened");
        Ok(Session {
            inner: Arc::new(SessionInner {
                client: client.clone(),
                lease,
                ttl,
                status,
                entries,
                on_drop: opts.on_drop.unwrap_or(inner.on_drop),
                role: if spread {
                    Role::Anchor(SpreadSession::new(opts.label))
                } else {
                    Role::Plain
                },
            }),
        })
    }

    /// The session's lease id. (The session a primitive of a spread namespace holds, its
    /// [`Mutex::session`](crate::Mutex::session) say, is the session's part in the name's
    /// sub-namespace: its lease there has an id derived from this one.)
    pub fn lease(&self) -> LeaseId {
        self.inner.lease
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The client this session belongs to.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The namespace of the session's client (for the session a primitive of a spread
    /// namespace holds: the name's sub-namespace).
    pub fn namespace(&self) -> &str {
        self.inner.client.namespace()
    }

    /// Current state. A session whose local validity has run out reports
    /// `Ended(Expired)` at once, whether or not the supervisor has noticed yet.
    pub fn state(&self) -> SessionState {
        let s = *self.inner.status.borrow();
        match s.state {
            SessionState::Ended(_) => s.state,
            _ if Instant::now() >= s.valid_until => SessionState::Ended(SessionEnd::Expired),
            state => state,
        }
    }

    /// The instant until which the lease is locally valid (meaningless once ended).
    pub fn valid_until(&self) -> Instant {
        self.inner.status.borrow().valid_until
    }

    /// True while the lease is locally valid and the session has not ended.
    pub fn is_valid(&self) -> bool {
        !matches!(self.state(), SessionState::Ended(_))
    }

    /// Resolves when the session ends, with the reason: etcd's `Done()`, except that it also
    /// resolves while Redis is unreachable, as soon as the local validity runs out.
    ///
    /// Cancel safe: dropping the future has no effect; call it as often as you like.
    pub async fn done(&self) -> SessionEnd {
        let mut rx = self.inner.status.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            if let SessionState::Ended(end) = s.state {
                return end;
            }
            if Instant::now() >= s.valid_until {
                return SessionEnd::Expired;
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        // Cannot happen while this handle holds the sender; be safe anyway.
                        return SessionEnd::Expired;
                    }
                }
                _ = tokio::time::sleep_until(s.valid_until.into()) => {}
            }
        }
    }

    /// `Ok` while the session is valid, else [`Error::SessionLost`].
    pub fn check(&self) -> Result<()> {
        match self.state() {
            SessionState::Ended(end) => Err(self.lost(end)),
            _ => Ok(()),
        }
    }

    /// Redis said the lease is gone (a script found it dead): end the session now rather than
    /// at the next renewal. (The supervisor counts the loss.)
    pub(crate) fn mark_lost(&self, end: SessionEnd) {
        if end_status(&self.inner.status, end) {
            let anchor = match &self.inner.role {
                Role::Sub(part) => part.parent.inner.lease,
                _ => self.inner.lease,
            };
            self.send(Op::Lost {
                id: self.inner.lease,
                anchor,
                end,
            });
        }
    }

    pub(crate) fn lost(&self, reason: SessionEnd) -> Error {
        // A spread session's part names the session, as its user knows it.
        if let Role::Sub(part) = &self.inner.role {
            return part.parent.lost(reason);
        }
        Error::SessionLost {
            namespace: self.namespace().to_owned(),
            lease: self.inner.lease,
            reason,
        }
    }

    /// Revoke the lease and stop renewing it: everything attached is released at once and
    /// [`done`](Self::done) resolves with [`SessionEnd::Closed`] (unless it had already ended).
    /// Calling it again, or on a lost session, is harmless. An error means Redis could not be
    /// told; the lease then runs out by its TTL (and is swept after).
    ///
    /// # Cancel safety
    ///
    /// Once polled, the session reads closed and none of its leases (a spread session's
    /// sub-leases too) is renewed again, whether or not the future is dropped later. Dropped
    /// before the revoke got through, the leases are revoked if the call still reaches Redis,
    /// else they run out by their TTL and what is attached passes on once a renewal sweeps
    /// them (as for an orphaned session).
    pub async fn close(&self) -> Result<()> {
        match &self.inner.role {
            Role::Sub(sub) => return Box::pin(sub.parent.close()).await,
            Role::Anchor(spread) => {
                end_status(&self.inner.status, SessionEnd::Closed);
                let subs = spread.close(self.client(), self.inner.ttl);
                let own = self.close_own();
                let (subs, own) = futures_util::future::join(subs, own).await;
                return own.and(subs);
            }
            Role::Plain => {}
        }
        self.close_own().await
    }

    /// Close this session's own lease (the whole session, unless spread).
    async fn close_own(&self) -> Result<()> {
        end_status(&self.inner.status, SessionEnd::Closed);
        let client = self.inner.client.shared();
        let id = self.inner.lease;
        client.send(Op::Stop { id });
        match client.revoke_unused(id).await {
            Ok(_) => Ok(()),
            Err(e) => {
                client.send(Op::Orphan {
                    ns: client.core().clone(),
                    id,
                    ttl: self.inner.ttl,
                });
                Err(e)
            }
        }
    }

    /// Stop renewing without revoking (etcd's `Orphan`): the lease and everything attached stay
    /// on the server until the TTL runs out (then the client sweeps them away, unless another
    /// process's renewal did first). [`done`](Self::done) resolves at once with
    /// [`SessionEnd::Orphaned`].
    pub fn orphan(&self) {
        if let Role::Sub(sub) = &self.inner.role {
            return sub.parent.orphan();
        }
        // Ended first, as `close` does: no lock call starts a grant after this.
        if !end_status(&self.inner.status, SessionEnd::Orphaned) {
            return;
        }
        if let Role::Anchor(spread) = &self.inner.role {
            spread.orphan(self.client(), self.inner.ttl);
        }
        self.send(Op::Orphan {
            ns: self.shared().core().clone(),
            id: self.inner.lease,
            ttl: self.inner.ttl,
        });
    }

    /// What the session's client shares with its supervisor: keys, connections, doorbell.
    pub(crate) fn shared(&self) -> &ClientInner {
        self.inner.client.shared()
    }

    /// The count of lock entries this session holds or waits with.
    pub(crate) fn entries(&self) -> &EntryCount {
        &self.inner.entries
    }

    /// The namespace's key layout.
    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.client.shared().keys
    }

    /// Hand work to the client's supervisor. Never blocks; usable from `Drop`.
    pub(crate) fn send(&self, op: Op) {
        self.inner.client.shared().send(op);
    }

    /// A contender id for one wait: `<lease id>.<tag><random>`, unique per call (the tag
    /// carries the kind of request, e.g. `r`/`w` for a rwlock).
    pub(crate) fn new_contender(&self, tag: &str) -> String {
        let r = uuid::Uuid::new_v4().as_u128() as u64;
        format!("{}.{tag}{r:016x}", self.inner.lease)
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        // A spread session's part in a sub-namespace: the session it belongs to renews (and
        // drops, once unused) its sub-lease; nothing ends here.
        if matches!(self.role, Role::Sub(_)) {
            return;
        }
        let client = self.client.shared();
        let live = client.live_sessions.fetch_sub(1, Ordering::SeqCst) - 1;
        gauge!(m::SESSIONS_LIVE).decrement(1.0);
        let (ns, id, ttl) = (client.core().clone(), self.lease, self.ttl);
        let state = self.status.borrow().state;
        let op = match (state, self.on_drop) {
            // close() or orphan() already told the supervisor.
            (SessionState::Ended(SessionEnd::Closed | SessionEnd::Orphaned), _) => Op::Stop { id },
            // Also when lost: the lease may still be on the server (harmless if not).
            (_, OnDrop::Revoke) => Op::Revoke { ns, id, ttl },
            (SessionState::Ended(_), OnDrop::Orphan) => Op::Stop { id },
            (_, OnDrop::Orphan) => Op::Orphan { ns, id, ttl },
        };
        end_status(
            &self.status,
            match self.on_drop {
                OnDrop::Revoke => SessionEnd::Closed,
                OnDrop::Orphan => SessionEnd::Orphaned,
            },
        );
        if let Role::Anchor(spread) = &self.role {
            spread.dropped(&self.client, &op, ttl);
        }
        client.send(op);
        tracing::debug!(namespace = client.keys.namespace(), lease = %id, live, "session dropped");
    }
}
