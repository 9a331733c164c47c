//! Where a session stands and why it ended: shared by a session's handles and the keepalive
//! supervisor (through a `watch` cell), and named by [`Error::SessionLost`](super::error::Error).

use std::fmt;
use std::time::Instant;

use tokio::sync::watch;

/// Why a session ended. [`Session::done`](crate::Session::done) resolves with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionEnd {
    /// No renewal succeeded before the local validity ran out (Redis unreachable, paused or too
    /// slow). The server may still hold the lease a little longer; nothing may rely on it.
    Expired,
    /// Redis answered that the lease no longer exists (expired there, or the data was lost).
    LeaseNotFound,
    /// The lease was revoked while the session used it (by [`Client::revoke`](crate::Client::revoke) or an operator).
    Revoked,
    /// [`Session::close`](crate::Session::close) revoked the lease.
    Closed,
    /// [`Session::orphan`](crate::Session::orphan): no longer renewed; the lease runs out on the server by its TTL.
    Orphaned,
    /// Redis lost entries attached to the lease (deleted by someone else, flushed, evicted): a
    /// lock this session held may have passed to someone else. The rest of the lease was
    /// dropped.
    EntriesLost,
    /// Another client took the lease over (`SessionOptions::lease`): its lock entries were
    /// released, and this session may no longer act on anything it held.
    Adopted,
}

impl SessionEnd {
    /// True when the session was lost rather than ended on purpose.
    pub fn is_loss(&self) -> bool {
        matches!(
            self,
            SessionEnd::Expired
                | SessionEnd::LeaseNotFound
                | SessionEnd::Revoked
                | SessionEnd::Adopted
                | SessionEnd::EntriesLost
        )
    }

    pub(crate) fn label(&self) -> &'static str {
        match self {
            SessionEnd::Expired => "expired",
            SessionEnd::LeaseNotFound => "lease_not_found",
            SessionEnd::Revoked => "revoked",
            SessionEnd::Closed => "closed",
            SessionEnd::Orphaned => "orphaned",
            SessionEnd::Adopted => "adopted",
            SessionEnd::EntriesLost => "entries_lost",
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
            SessionEnd::Adopted => "another client took the lease over",
            SessionEnd::EntriesLost => "Redis lost entries attached to the lease",
        })
    }
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionState {
    /// The last renewal succeeded; the lease is locally valid.
    Alive,
    /// A renewal failed or was late; retries go on and the lease is still locally valid.
    Jeopardy,
    /// The session ended; see [`SessionEnd`].
    Ended(SessionEnd),
}

/// What to do with the lease when the last handle of a session is dropped without
/// [`Session::close`](crate::Session::close) or [`Session::orphan`](crate::Session::orphan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnDrop {
    /// Revoke the lease in the background (the default): its locks are released at once.
    #[default]
    Revoke,
    /// Stop renewing and let the lease expire by its TTL.
    Orphan,
}

/// State shared by a session's handles and the supervisor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Status {
    pub(crate) state: SessionState,
    /// The lease is locally valid until then (the keepalive computes it; see `validity` there).
    pub(crate) valid_until: Instant,
}

pub(crate) type StatusCell = watch::Sender<Status>;

/// How many lock entries a session holds or waits with, by its own count: each renewal
/// compares the lease's attachment set with it, so entries that vanished from Redis (a foreign
/// `DEL`, a flush) end the session. Counted low rather than high: an entry counts from when its
/// request was answered until its release or withdrawal is sent. A renewal compares with the
/// fewest entries held while it was in flight (releases sent meanwhile may have reached Redis
/// first), and only the latest renewal's window counts.
pub(crate) type EntryCount = std::sync::Arc<Entries>;

/// See [`EntryCount`].
#[derive(Debug, Default)]
pub(crate) struct Entries {
    /// (held now, fewest held since the window opened, the window's generation)
    state: std::sync::Mutex<(usize, usize, u64)>,
}

impl Entries {
    fn state(&self) -> std::sync::MutexGuard<'_, (usize, usize, u64)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more entry (its request was answered: Redis has it).
    pub(crate) fn add(&self) {
        self.state().0 += 1;
    }

    /// Entries held now.
    pub(crate) fn held(&self) -> usize {
        self.state().0
    }

    /// One entry fewer (its release or withdrawal is about to be sent).
    pub(crate) fn sub(&self) {
        let mut s = self.state();
        s.0 = s.0.saturating_sub(1);
        s.1 = s.1.min(s.0);
    }

    /// Open the window of a renewal about to be sent: its generation, and how many entries are
    /// held now.
    pub(crate) fn open_window(&self) -> (u64, usize) {
        let mut s = self.state();
        s.2 += 1;
        s.1 = s.0;
        (s.2, s.0)
    }

    /// The fewest entries held since window `generation` opened, while it is the latest.
    pub(crate) fn fewest_since(&self, generation: u64) -> Option<usize> {
        let s = self.state();
        (s.2 == generation).then_some(s.1)
    }
}

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
