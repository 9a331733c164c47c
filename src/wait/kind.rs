//! The kinds of queue-based lock. Everything that differs between them on the Rust side (the
//! name in errors and metric labels, which key, the release script, whether a handoff may ring
//! the next owner) is decided here, once.

use crate::base::error::Error;
use crate::redis::scripts::{self, LuaScript};
use crate::redis::Keys;
use crate::session::Session;

/// A kind of queue: a sorted set of contenders ordered by revision (`{ns}:<segment>:<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum LockKind {
    Mutex,
    RwLock,
    Semaphore,
    DoubleBarrier,
    Election,
}

impl LockKind {
    /// The name in errors and in the `kind` label of the lock metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            LockKind::Mutex => "mutex",
            LockKind::RwLock => "rwlock",
            LockKind::Semaphore => "semaphore",
            LockKind::DoubleBarrier => "double barrier",
            LockKind::Election => "election",
        }
    }

    /// The operation named in [`Error::Protocol`] when its acquire script answers oddly.
    pub(crate) fn acquire_op(self) -> &'static str {
        match self {
            LockKind::Mutex => "mutex acquire",
            LockKind::RwLock => "rwlock acquire",
            LockKind::Semaphore => "semaphore acquire",
            LockKind::DoubleBarrier => "double barrier",
            LockKind::Election => "election campaign",
        }
    }

    /// The `kind` label of the wait and handoff metrics; `None` for a barrier, whose wait is
    /// for other participants, not for a lock.
    pub(crate) fn wait_metrics_label(self) -> Option<&'static str> {
        (self != LockKind::DoubleBarrier).then(|| self.label())
    }

    /// [`Error::Locked`] for a try that found `name` taken.
    pub(crate) fn locked(self, session: &Session, name: &str) -> Error {
        Error::Locked {
            namespace: session.namespace().to_owned(),
            kind: self.label(),
            name: name.to_owned(),
        }
    }

    /// The key of the queue `name`.
    pub(crate) fn key(self, keys: &Keys, name: &str) -> String {
        match self {
            LockKind::Mutex => keys.mutex(name),
            LockKind::RwLock => keys.rwlock(name),
            LockKind::Semaphore => keys.semaphore(name),
            LockKind::DoubleBarrier => keys.dbarrier(name),
            LockKind::Election => keys.election(name),
        }
    }

    /// The script that removes an entry from its queue: the mutex has its own lean one.
    pub(crate) fn release_script(self) -> &'static LuaScript {
        match self {
            LockKind::Mutex => &scripts::MUTEX_RELEASE,
            _ => &scripts::LOCK_RELEASE,
        }
    }

    /// Whether its entries are held by an `Entry` and counted in the session's
    /// [`EntryCount`](crate::base::session_state::EntryCount).
    pub(crate) fn counted(self) -> bool {
        matches!(
            self,
            LockKind::Mutex | LockKind::RwLock | LockKind::Semaphore
        )
    }

    /// Whether the script that frees a mutex tells the next contender it owns (an `o` ring),
    /// sparing its re-check. Only mutex queues have a single owner at the head.
    pub(crate) fn owner_rings(self) -> bool {
        self == LockKind::Mutex
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_mutex_takes_owner_rings_and_its_lean_release() {
        for kind in [
            LockKind::Mutex,
            LockKind::RwLock,
            LockKind::Semaphore,
            LockKind::DoubleBarrier,
            LockKind::Election,
        ] {
            let mutex = kind == LockKind::Mutex;
            assert_eq!(kind.owner_rings(), mutex);
            assert_eq!(kind.release_script().name == "mutex_release", mutex);
        }
    }
}
