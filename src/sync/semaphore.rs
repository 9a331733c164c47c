//! A fair counting semaphore whose permits are attached to the holder's session: a crashed
//! holder's permits come back by themselves. Script: `lua/lock/semaphore_acquire.lua`; release
//! and check are the shared `lua/lock/lock_release.lua` and `lua/lock/lock_check.lua`.

use std::fmt;

use fred::interfaces::{KeysInterface, SortedSetsInterface};
use fred::types::Value;

use crate::base::error::{Error, Result};
use crate::redis::classify::classify;
use crate::redis::{scripts, Reply};
use crate::session::Session;
use crate::wait::contend::{parse_turn, Turn, Wake, Won};
use crate::wait::entry::{entry_guard_methods, Entry};
use crate::wait::named::NamedLock;
use crate::wait::LockKind;

const KIND: LockKind = LockKind::Semaphore;

/// A semaphore named `name` with `size` permits (`{ns}:semaphore:<name>`).
///
/// - **Fair**: requests are served in the order they were made; a request for several permits
///   that does not fit yet blocks every later request (no barging, no starvation).
/// - **Tied to sessions**: permits are attached to the holder's lease; when the holder's
///   session ends (closed, revoked, or expired after a crash), its permits return.
/// - **Consistent size**: the size is fixed by the first user while anyone holds or waits; a
///   user with another size gets [`Error::SemaphoreSize`], never a silently different limit.
///
/// ```no_run
/// # async fn demo(session: leasehold::Session) -> leasehold::Result<()> {
/// let pool = session.semaphore("db-connections", 3)?;
/// let permit = pool.acquire().await?;        // at most 3 holders at once
/// let two = pool.acquire_many(2).await?;      // or several permits at once
/// drop(permit);
/// two.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    named: NamedLock,
    size: u32,
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("key", &self.named.key)
            .field("size", &self.size)
            .finish()
    }
}

/// The member of the holders zset whose score is the permits they hold
/// (`lua/prelude/queues.lua`'s `USED`).
const USED: &str = "#used";

/// Largest semaphore size.
pub const MAX_PERMITS: u32 = 1_000_000;

impl Semaphore {
    /// The semaphore `name` with `size` permits (1..=[`MAX_PERMITS`]) for `session`.
    /// No I/O happens here; the size is checked against other users on the first acquire.
    pub fn new(session: &Session, name: &str, size: u32) -> Result<Semaphore> {
        if !(1..=MAX_PERMITS).contains(&size) {
            return Err(Error::InvalidArgument(format!(
                "semaphore {name:?} size {size} must be between 1 and {MAX_PERMITS}"
            )));
        }
        Ok(Semaphore {
            named: NamedLock::new(session, KIND, name)?,
            size,
        })
    }

    /// The semaphore's name.
    pub fn name(&self) -> &str {
        &self.named.name
    }

    /// The number of permits this handle was made with.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Wait for one permit. Cancel safe: dropping the future withdraws the request.
    pub async fn acquire(&self) -> Result<SemaphorePermit> {
        self.acquire_inner(1, false).await
    }

    /// Wait for `n` permits at once (1..=size), all or nothing.
    pub async fn acquire_many(&self, n: u32) -> Result<SemaphorePermit> {
        self.acquire_inner(n, false).await
    }

    /// One permit now, or [`Error::Locked`] without queueing.
    pub async fn try_acquire(&self) -> Result<SemaphorePermit> {
        self.acquire_inner(1, true).await
    }

    /// `n` permits now, or [`Error::Locked`] without queueing.
    pub async fn try_acquire_many(&self, n: u32) -> Result<SemaphorePermit> {
        self.acquire_inner(n, true).await
    }

    /// Permits nobody holds right now, by the server's view: the semaphore's size minus the
    /// permits of its holders. A snapshot, stale as soon as it returns (as tokio's
    /// `available_permits`); a holder whose session expired counts until a sweep removes it
    /// (within a renewal interval of any client). Requests may be waiting even when permits
    /// are free: a request larger than what is free blocks the ones behind it (FIFO).
    ///
    /// ```no_run
    /// # async fn demo(session: leasehold::Session) -> leasehold::Result<()> {
    /// let pool = session.semaphore("db-connections", 10)?;
    /// let _permit = pool.acquire().await?;
    /// assert!(pool.available_permits().await? <= 9);
    /// # Ok(()) }
    /// ```
    pub async fn available_permits(&self) -> Result<u32> {
        let session = &self.named.session;
        let k = session.keys();
        let conn = &session.shared().conn;
        let redis = conn.pool().next_connected();
        let fail = |e| classify(e, conn.timeout());
        let used: Option<f64> = redis
            .zscore(k.semaphore_holders(&self.named.name), USED)
            .await
            .map_err(fail)?;
        let size: Option<String> = redis
            .get(k.semaphore_size(&self.named.name))
            .await
            .map_err(fail)?;
        // No size key: nobody holds or waits, and the first request sets its own size.
        let size = size.and_then(|s| s.parse().ok()).unwrap_or(self.size);
        let used = used.map_or(0, |u| u.max(0.0) as u32);
        Ok(size.saturating_sub(used))
    }

    async fn acquire_inner(&self, n: u32, try_only: bool) -> Result<SemaphorePermit> {
        if n == 0 || n > self.size {
            return Err(Error::InvalidArgument(format!(
                "cannot take {n} permits of semaphore {:?} (size {})",
                self.named.name, self.size
            )));
        }
        let session = &self.named.session;
        let contender = self.named.contender(&format!("{n}."));
        let k = session.keys();
        let keys = vec![
            k.rev(),
            k.leases(),
            self.named.key.to_string(),
            k.semaphore_size(&self.named.name),
            k.attached(session.lease()),
        ];
        let args = vec![
            session.lease().to_string(),
            contender.id.clone(),
            self.size.to_string(),
            if try_only { "1" } else { "0" }.to_owned(),
        ];
        let conn = &session.shared().conn;
        let won = contender
            .contend(
                Wake::Ring,
                || contender.withdrawal(),
                |recheck| {
                    let (keys, mut args) = (keys.clone(), args.clone());
                    args.push(if recheck { "1" } else { "0" }.to_owned());
                    async move {
                        let v = conn.eval(&scripts::SEMAPHORE_ACQUIRE, keys, args).await?;
                        parse_acquire(v)
                    }
                },
            )
            .await?;
        match won {
            Won::Held(token) => Ok(SemaphorePermit {
                semaphore: self.clone(),
                permits: n,
                entry: Entry::new(contender, token),
            }),
            Won::Refused => Err(KIND.locked(session, &self.named.name)),
            Won::Other(SizeMismatch(existing)) => Err(Error::SemaphoreSize {
                namespace: session.namespace().to_owned(),
                name: self.named.name.to_string(),
                size: self.size,
                existing: u32::try_from(existing).unwrap_or(u32::MAX),
            }),
        }
    }
}

/// The size another user of the semaphore set, when it is not ours.
pub(crate) struct SizeMismatch(pub(crate) u64);

/// The semaphore's own reply adds `{'size', existing}`; everything else is a [`Turn`].
pub(crate) fn parse_acquire(v: Value) -> Result<Turn<SizeMismatch>> {
    let r = Reply::new(KIND.acquire_op());
    if let Value::Array(items) = &v {
        if items.len() >= 2 && r.string(&items[0])? == "size" {
            return Ok(Turn::Other(SizeMismatch(r.uint(&items[1])?)));
        }
    }
    parse_turn(KIND.acquire_op(), v)
}

/// Permits of a [`Semaphore`], held while the session lasts; returned when dropped.
#[must_use = "dropping the permit returns it"]
pub struct SemaphorePermit {
    semaphore: Semaphore,
    permits: u32,
    entry: Entry,
}

impl fmt::Debug for SemaphorePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit")
            .field("key", &self.semaphore.named.key)
            .field("permits", &self.permits)
            .field("fencing_token", &self.entry.token)
            .finish()
    }
}

impl SemaphorePermit {
    entry_guard_methods!();
    /// How many permits this holds.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// Return the permits now; [`Error::NotHeld`] when they were no longer held.
    pub async fn release(mut self) -> Result<()> {
        self.entry.unlock(&self.semaphore.named.name).await
    }
}

impl Session {
    /// The semaphore `name` with `size` permits for this session.
    pub fn semaphore(&self, name: &str, size: u32) -> Result<Semaphore> {
        Semaphore::new(self, name, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_mismatch_is_its_own_answer() {
        let v = Value::Array(vec![Value::String("size".into()), Value::Integer(5)]);
        assert!(matches!(parse_acquire(v), Ok(Turn::Other(SizeMismatch(5)))));
        let v = Value::Array(vec![Value::String("held".into()), Value::Integer(9)]);
        assert!(matches!(parse_acquire(v), Ok(Turn::Held(9))));
    }
}
