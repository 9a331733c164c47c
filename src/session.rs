//! Sessions: one lease plus its keepalive (etcd's `concurrency.Session`).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::gauge;
use tokio::sync::watch;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::keepalive;
use crate::lease::LeaseId;
use crate::metrics as m;
use crate::mutex::Mutex;
use crate::names::DEFAULT_TTL;
use crate::supervisor::Op;

/// Why a session ended. [`Session::done`] resolves with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionEnd {
    /// No renewal succeeded before the local validity ran out (Redis unreachable, paused or too
    /// slow). The server may still hold the lease a little longer; nothing may rely on it.
    Expired,
    /// Redis answered that the lease no longer exists (expired there, or the data was lost).
    LeaseNotFound,
    /// The lease was revoked while the session used it (by [`Client::revoke`] or an operator).
    Revoked,
    /// [`Session::close`] revoked the lease.
    Closed,
    /// [`Session::orphan`]: no longer renewed; the lease runs out on the server by its TTL.
    Orphaned,
}

impl SessionEnd {
    /// True when the session was lost rather than ended on purpose.
    pub fn is_loss(&self) -> bool {
        matches!(
            self,
            SessionEnd::Expired | SessionEnd::LeaseNotFound | SessionEnd::Revoked
        )
    }

    pub(crate) fn label(&self) -> &'static str {
        match self {
            SessionEnd::Expired => "expired",
            SessionEnd::LeaseNotFound => "lease_not_found",
            SessionEnd::Revoked => "revoked",
            SessionEnd::Closed => "closed",
            SessionEnd::Orphaned => "orphaned",
        }
    }
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionEnd::Expired => "local validity ran out without a successful renewal",
            SessionEnd::LeaseNotFound => "Redis no longer has the lease",
            SessionEnd::Revoked => "the lease was revoked",
            SessionEnd::Closed => "the session was closed",
            SessionEnd::Orphaned => "the session was orphaned",
        })
    }
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// The last renewal succeeded; the lease is locally valid.
    Alive,
    /// A renewal failed or was late; retries go on and the lease is still locally valid.
    Jeopardy,
    /// The session ended; see [`SessionEnd`].
    Ended(SessionEnd),
}

/// What to do with the lease when the last handle of a session is dropped without
/// [`Session::close`] or [`Session::orphan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDrop {
    /// Revoke the lease in the background (the default): its locks are released at once.
    #[default]
    Revoke,
    /// Stop renewing and let the lease expire by its TTL.
    Orphan,
}

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
    /// nothing else could ever release them. Fails with [`Error::LeaseNotFound`] when the
    /// lease is gone.
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

/// State shared by a session's handles and the supervisor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Status {
    pub(crate) state: SessionState,
    /// The lease is locally valid until then (see [`crate::keepalive::validity`]).
    pub(crate) valid_until: Instant,
}

pub(crate) type StatusCell = watch::Sender<Status>;

/// Move a session to `Ended(end)` unless it has already ended. Returns whether it changed.
pub(crate) fn end_status(cell: &StatusCell, end: SessionEnd) -> bool {
    cell.send_if_modified(|s| {
        if matches!(s.state, SessionState::Ended(_)) {
            return false;
        }
        s.state = SessionState::Ended(end);
        true
    })
}

/// A lease kept alive by the client's keepalive supervisor: etcd's session.
///
/// Everything created through a session (mutex queue entries, …) is attached to its lease and
/// lives exactly as long as the lease. One long-lived session per process (or per role) is the
/// intended use; tasks sharing it still exclude each other on a [`Mutex`].
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
    pub(crate) inner: Arc<SessionInner>,
}

pub(crate) struct SessionInner {
    pub(crate) client: Client,
    pub(crate) lease: LeaseId,
    pub(crate) ttl: Duration,
    pub(crate) status: Arc<StatusCell>,
    on_drop: OnDrop,
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

impl Session {
    pub(crate) async fn open(client: &Client, opts: SessionOptions) -> Result<Session> {
        let inner = &client.inner;
        let (lease, ttl, sent) = match opts.lease {
            Some(id) => {
                crate::names::check_label(&opts.label)?;
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
        inner.send(Op::Register {
            id: lease,
            ttl,
            sent,
            valid_until,
            status: status.clone(),
        });
        let live = inner.live_sessions.fetch_add(1, Ordering::SeqCst) + 1;
        gauge!(m::SESSIONS_LIVE).increment(1.0);
        tracing::debug!(namespace = inner.keys.namespace(), %lease, live, "session opened");
        Ok(Session {
            inner: Arc::new(SessionInner {
                client: client.clone(),
                lease,
                ttl,
                status,
                on_drop: opts.on_drop.unwrap_or(inner.on_drop),
            }),
        })
    }

    /// The session's lease id.
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

    /// The namespace of the session's client.
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
    /// at the next renewal.
    pub(crate) fn mark_lost(&self, end: SessionEnd) {
        if end_status(&self.inner.status, end) {
            metrics::counter!(m::SESSION_LOST, "reason" => end.label()).increment(1);
            self.inner.client.inner.send(Op::Stop {
                id: self.inner.lease,
            });
        }
    }

    pub(crate) fn lost(&self, reason: SessionEnd) -> Error {
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
    pub async fn close(&self) -> Result<()> {
        end_status(&self.inner.status, SessionEnd::Closed);
        let client = &self.inner.client.inner;
        let id = self.inner.lease;
        client.send(Op::Stop { id });
        match client.revoke_unused(id).await {
            Ok(_) => Ok(()),
            Err(e) => {
                client.send(Op::Orphan {
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
        if end_status(&self.inner.status, SessionEnd::Orphaned) {
            self.inner.client.inner.send(Op::Orphan {
                id: self.inner.lease,
                ttl: self.inner.ttl,
            });
        }
    }

    /// A fair, fenced mutex named `name`, attached to this session's lease.
    pub fn mutex(&self, name: &str) -> Result<Mutex> {
        Mutex::new(self, name)
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
        let client = &self.client.inner;
        let live = client.live_sessions.fetch_sub(1, Ordering::SeqCst) - 1;
        gauge!(m::SESSIONS_LIVE).decrement(1.0);
        let (id, ttl) = (self.lease, self.ttl);
        let state = self.status.borrow().state;
        let op = match (state, self.on_drop) {
            // close() or orphan() already told the supervisor.
            (SessionState::Ended(SessionEnd::Closed | SessionEnd::Orphaned), _) => Op::Stop { id },
            // Also when lost: the lease may still be on the server (harmless if not).
            (_, OnDrop::Revoke) => Op::Revoke { id, ttl },
            (SessionState::Ended(_), OnDrop::Orphan) => Op::Stop { id },
            (_, OnDrop::Orphan) => Op::Orphan { id, ttl },
        };
        end_status(
            &self.status,
            match self.on_drop {
                OnDrop::Revoke => SessionEnd::Closed,
                OnDrop::Orphan => SessionEnd::Orphaned,
            },
        );
        client.send(op);
        tracing::debug!(namespace = client.keys.namespace(), lease = %id, live, "session dropped");
    }
}
