//! A fair, fenced mutex attached to a session (etcd's `concurrency.Mutex`, with its sharp
//! edges removed). Scripts: `lua/lock/mutex_acquire.lua` and `lua/lock/mutex_release.lua`
//! (the lock hot path, kept lean), and `lua/lock/lock_check.lua`, shared with the other locks.
//! Under load the first two go to Redis inside one `lua/lock/mutex_batch.lua` call (see
//! `src/redis/batch.rs`).

use std::fmt;
use std::time::Duration;

use crate::base::error::Result;
use crate::redis::scripts;
use crate::session::Session;
use crate::wait::entry::{entry_guard_methods, Entry};
use crate::wait::named::NamedLock;
use crate::wait::LockKind;

const KIND: LockKind = LockKind::Mutex;

/// A mutex named `name` in the session's namespace: a FIFO queue of contenders ordered by
/// revision (`{ns}:mutex:<name>`); the first contender whose lease is alive owns it.
///
/// - **Fair**: contenders acquire in the order they called [`lock`](Self::lock).
/// - **Fenced**: every acquisition carries a [fencing token](MutexGuard::fencing_token) greater
///   than every earlier holder's; pass it to the resource you protect and have it reject
///   lower tokens.
/// - **Per call, not per session**: tasks sharing one session exclude each other.
/// - **No polling**: a waiter sleeps until the releasing script rings its client's doorbell, or
///   until the holder's lease would expire, whichever comes first.
/// - **Batched under load**: lock and unlock calls of many tasks of one client may share one
///   script call ([`ClientBuilder::batch_lock_calls`](crate::ClientBuilder::batch_lock_calls));
///   each call still gets its own result, and a lone call goes out at once.
///
/// ```no_run
/// # async fn demo(session: leasehold::Session) -> leasehold::Result<()> {
/// let mutex = session.mutex("nightly-report")?;
/// let guard = mutex.lock().await?;
/// // ... write to storage with guard.fencing_token() ...
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Mutex {
    named: NamedLock,
    /// Lock-delay in ms (0: none); carried in each contender's id (`lua/prelude/queues.lua`).
    delay_ms: u64,
}

impl fmt::Debug for Mutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("key", &self.named.key)
            .field("lease", &self.named.session.lease())
            .finish()
    }
}

impl Mutex {
    /// The mutex `name` (non-empty, at most [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes) for
    /// `session`. No I/O happens until [`lock`](Self::lock).
    pub fn new(session: &Session, name: &str) -> Result<Mutex> {
        Ok(Mutex {
            named: NamedLock::new(session, KIND, name)?,
            delay_ms: millis_up(session.shared().lock_delay),
        })
    }

    /// Set this mutex's lock-delay (Consul's and Chubby's): when a holder's session ends
    /// without unlocking (its lease expired, or was revoked with `Client::revoke` or
    /// `leasehold lease revoke`; not the session's own `close()` or drop, nor an adoption),
    /// the lock stays unavailable for `delay` after, so that what the old holder still does
    /// in that time (a paused process waking up, writes in flight) lands before the next
    /// holder starts. A clean [`unlock`](MutexGuard::unlock) (or dropping the guard) is not
    /// delayed. Default: the client's ([`ClientBuilder::lock_delay`](crate::ClientBuilder::lock_delay)),
    /// zero unless set. Millisecond resolution, at most [`MAX_LOCK_DELAY`](crate::MAX_LOCK_DELAY);
    /// more is [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    ///
    /// The delay is recorded with each lock request, so it is the one of the holder whose
    /// session ended that applies. During it, [`inspect`](crate::Client::inspect) shows a holder
    /// named `<lease>.delay`, on a lease that no process renews. A delay that is not a whole
    /// number of milliseconds is rounded up.
    ///
    /// ```no_run
    /// # async fn demo(session: leasehold::Session) -> leasehold::Result<()> {
    /// use std::time::Duration;
    ///
    /// let mutex = session.mutex("ledger")?.with_lock_delay(Duration::from_secs(5))?;
    /// let guard = mutex.lock().await?;
    /// # Ok(()) }
    /// ```
    pub fn with_lock_delay(mut self, delay: Duration) -> Result<Mutex> {
        if delay > crate::MAX_LOCK_DELAY {
            return Err(crate::Error::InvalidArgument(format!(
                "lock-delay {delay:?} is longer than {:?}",
                crate::MAX_LOCK_DELAY
            )));
        }
        self.delay_ms = millis_up(delay);
        Ok(self)
    }

    /// This mutex's lock-delay.
    pub fn lock_delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms)
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        &self.named.name
    }

    /// The Redis key of the queue, `{ns}:mutex:<name>`.
    pub fn key(&self) -> &str {
        &self.named.key
    }

    /// The session the mutex is attached to.
    pub fn session(&self) -> &Session {
        &self.named.session
    }

    /// Wait for the lock, in FIFO order.
    ///
    /// Returns [`Error::SessionLost`](crate::Error::SessionLost) as soon as this session ends
    /// while waiting (the queue entry goes with it and does not block the next waiter).
    ///
    /// Not re-entrant, as tokio's `Mutex`: every call is a new contender, so a task that calls
    /// `lock` while it holds a guard of the same mutex waits behind itself until that guard is
    /// released. Tasks sharing one session exclude each other the same way.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future withdraws its queue entry in the background; if it had just become
    /// the owner, the lock passes on to the next waiter. So a wait is bounded with
    /// `tokio::time::timeout`:
    ///
    /// ```no_run
    /// # async fn demo(session: leasehold::Session) -> leasehold::Result<()> {
    /// use std::time::Duration;
    ///
    /// let mutex = session.mutex("nightly-report")?;
    /// match tokio::time::timeout(Duration::from_secs(30), mutex.lock()).await {
    ///     Ok(guard) => {
    ///         let guard = guard?;
    ///         // ... work, passing guard.fencing_token() to the resource ...
    ///         guard.unlock().await?;
    ///     }
    ///     Err(_) => println!("still held after 30 s; nothing of ours is left queued"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn lock(&self) -> Result<MutexGuard> {
        self.acquire(false).await
    }

    /// Take the lock only if nobody holds it or waits for it; otherwise
    /// [`Error::Locked`](crate::Error::Locked) without queueing. Cancel safe as
    /// [`lock`](Self::lock).
    pub async fn try_lock(&self) -> Result<MutexGuard> {
        self.acquire(true).await
    }

    async fn acquire(&self, try_only: bool) -> Result<MutexGuard> {
        let tag = match self.delay_ms {
            0 => String::new(),
            ms => format!("d{ms}-"),
        };
        let entry = self
            .named
            .contender(&tag)
            .lock(&self.named.name, &scripts::MUTEX_ACQUIRE, try_only)
            .await?;
        Ok(MutexGuard {
            mutex: self.clone(),
            entry,
        })
    }
}

/// `d` in whole milliseconds, rounded up (a delay is never shortened to none).
fn millis_up(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Proof of holding a [`Mutex`], while the session lasts.
///
/// Dropping the guard releases the lock in the background; [`unlock`](Self::unlock) releases
/// it and reports whether it was still held. The guard keeps its session alive.
///
/// Holding a guard means "held as long as the session is valid": if the session ends
/// ([`Session::done`]), the lock may pass to someone else at any moment after. Protect the
/// resource itself with the [fencing token](Self::fencing_token).
#[must_use = "dropping the guard releases the lock"]
pub struct MutexGuard {
    mutex: Mutex,
    entry: Entry,
}

impl fmt::Debug for MutexGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard")
            .field("key", &self.mutex.named.key)
            .field("fencing_token", &self.entry.token)
            .finish()
    }
}

impl MutexGuard {
    entry_guard_methods!();

    /// The Redis key of the mutex queue.
    pub fn key(&self) -> &str {
        &self.mutex.named.key
    }

    /// The mutex this guard holds.
    pub fn mutex(&self) -> &Mutex {
        &self.mutex
    }

    /// The session the lock is attached to.
    pub fn session(&self) -> &Session {
        &self.mutex.named.session
    }

    /// Release the lock and hand it to the next waiter.
    /// [`Error::NotHeld`](crate::Error::NotHeld) when it was no longer held (the lease ran out
    /// or was revoked); the newer holder is never disturbed. On a Redis error the release is
    /// retried in the background.
    pub async fn unlock(mut self) -> Result<()> {
        self.entry.unlock(&self.mutex.named.name).await
    }
}

impl Session {
    /// A fair, fenced mutex named `name`, attached to this session's lease.
    pub fn mutex(&self, name: &str) -> Result<Mutex> {
        Mutex::new(self, name)
    }
}
