//! Where a session stands and why it ended: shared by a session's handles and the keepalive
//! supervisor (through a `watch` cell), and named by [`Error::SessionLost`](super::error::Error).

use std::fmt;
use std::time::Instant;

use tokio::sync::watch;

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

/// State shared by a session's handles and the supervisor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Status {
    pub(crate) state: SessionState,
    /// The lease is locally valid until then (the keepalive computes it; see `validity` there).
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
