//! A fair reader-writer lock attached to a session (etcd's `recipes.RWMutex`). Script:
//! `lua/lock/rwlock_acquire.lua`; release and check are the shared `lua/lock/lock_release.lua`
//! and `lua/lock/lock_check.lua`.

use std::fmt;

use crate::base::error::Result;
use crate::redis::scripts;
use crate::session::Session;
use crate::wait::entry::{entry_guard_methods, Entry};
use crate::wait::named::NamedLock;
use crate::wait::LockKind;

const KIND: LockKind = LockKind::RwLock;

/// A reader-writer lock named `name`: one FIFO queue (`{ns}:rwlock:<name>`) of readers and
/// writers. A reader waits only for writers that queued before it; a writer waits for everyone
/// that queued before it. So readers overlap each other, writers overlap nobody, and a writer
/// is never starved by a stream of later readers.
///
/// Every guard carries a fencing token (its queue revision). Entries are attached to the
/// session's lease: a reader or writer whose session ends releases.
///
/// ```no_run
/// # async fn demo(session: leasehold::Session) -> leasehold::Result<()> {
/// let lock = session.rwlock("catalog")?;
/// {
///     let _r = lock.read().await?;   // shared with other readers
/// }
/// let w = lock.write().await?;       // exclusive
/// w.unlock().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RwLock {
    named: NamedLock,
}

impl fmt::Debug for RwLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLock")
            .field("key", &self.named.key)
            .finish()
    }
}

/// Which side of a [`RwLock`] a guard holds.
///
/// Exhaustive: a reader-writer lock has exactly these two sides, so a `match` may rely on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RwMode {
    /// Shared: any number of readers hold at once.
    Read,
    /// Exclusive: one writer, no readers.
    Write,
}

impl RwLock {
    /// The rwlock `name` for `session`. No I/O happens here.
    pub fn new(session: &Session, name: &str) -> Result<RwLock> {
        Ok(RwLock {
            named: NamedLock::new(session, KIND, name)?,
        })
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        &self.named.name
    }

    /// The Redis key of the queue, `{ns}:rwlock:<name>`.
    pub fn key(&self) -> &str {
        &self.named.key
    }

    /// Wait for shared access (behind every earlier writer). Cancel safe: dropping the future
    /// withdraws the request; [`Error::SessionLost`](crate::Error::SessionLost) if the session
    /// ends meanwhile.
    pub async fn read(&self) -> Result<RwLockGuard> {
        self.acquire(RwMode::Read, false).await
    }

    /// Wait for exclusive access (behind everyone earlier). Cancel safe as [`read`](Self::read).
    pub async fn write(&self) -> Result<RwLockGuard> {
        self.acquire(RwMode::Write, false).await
    }

    /// Shared access now, or [`Error::Locked`](crate::Error::Locked) without queueing.
    pub async fn try_read(&self) -> Result<RwLockGuard> {
        self.acquire(RwMode::Read, true).await
    }

    /// Exclusive access now, or [`Error::Locked`](crate::Error::Locked) without queueing.
    pub async fn try_write(&self) -> Result<RwLockGuard> {
        self.acquire(RwMode::Write, true).await
    }

    async fn acquire(&self, mode: RwMode, try_only: bool) -> Result<RwLockGuard> {
        let tag = match mode {
            RwMode::Read => "r",
            RwMode::Write => "w",
        };
        let entry = self
            .named
            .contender(tag)
            .lock(&self.named.name, &scripts::RWLOCK_ACQUIRE, try_only)
            .await?;
        Ok(RwLockGuard {
            lock: self.clone(),
            mode,
            entry,
        })
    }
}

/// Shared or exclusive hold of a [`RwLock`], while the session lasts. Released in the
/// background when dropped.
#[must_use = "dropping the guard releases the lock"]
pub struct RwLockGuard {
    lock: RwLock,
    mode: RwMode,
    entry: Entry,
}

impl fmt::Debug for RwLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLockGuard")
            .field("key", &self.lock.named.key)
            .field("mode", &self.mode)
            .field("fencing_token", &self.entry.token)
            .finish()
    }
}

impl RwLockGuard {
    entry_guard_methods!();

    /// Which side this guard holds.
    pub fn mode(&self) -> RwMode {
        self.mode
    }

    /// The Redis key of the lock's queue, `{ns}:rwlock:<name>`.
    pub fn key(&self) -> &str {
        &self.lock.named.key
    }

    /// Release now; [`Error::NotHeld`](crate::Error::NotHeld) when it was no longer held.
    pub async fn unlock(mut self) -> Result<()> {
        self.entry.unlock(&self.lock.named.name).await
    }
}

impl Session {
    /// The reader-writer lock `name` for this session.
    pub fn rwlock(&self, name: &str) -> Result<RwLock> {
        RwLock::new(self, name)
    }
}
