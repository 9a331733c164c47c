//! Optional durability: count a write only once replicas have acknowledged it.
//!
//! Redis replicates asynchronously. If the primary fails after granting a lock but before a
//! replica received the write, the promoted replica has never heard of the lock (or of the last
//! renewal of a lease) and may grant it to someone else while the first holder still believes
//! in it. With [`Durability`] set on a client, every call whose success a caller acts on (lease
//! grant and renewal, lock/permit/candidacy requests, proclaim, put with a lease, barrier hold,
//! double-barrier entry, enqueue) is followed by `WAIT <replicas> <timeout>` on the same
//! connection, and counts only when enough replicas acknowledged it:
//!
//! - an acquire with too few acknowledgements fails with [`Error::NotReplicated`] and its entry
//!   is withdrawn in the background (retry it);
//! - a renewal with too few acknowledgements does not extend the session's validity (the session
//!   goes into jeopardy and the renewal is retried, as after a timeout), so a session never
//!   believes in lease time a failover could take away;
//! - releases, revokes and resignations are not waited for: losing one in a failover only
//!   makes a lock stay taken until its lease's TTL runs out, never lets two hold it.
//!
//! `WAIT` counts replicas that *received* the write, not ones that persisted it; a replica that
//! restarts empty forgets it. Sentinel may also still promote a replica that lagged behind (set
//! `replica-priority`/`min-replicas-to-write` as GUARANTEES.md describes). Without
//! durability, a failover can lose acknowledged grants: the session notices the new primary at
//! its next renewal (see `Session::done`), but in between two holders are possible.
//!
//! [`Error::NotReplicated`]: crate::Error::NotReplicated

use std::time::Duration;

/// How many replicas must acknowledge a grant, and how long to wait for them.
///
/// ```no_run
/// # async fn demo() -> leasehold::Result<()> {
/// use std::time::Duration;
/// use leasehold::{Client, Durability};
///
/// let client = Client::builder()
///     .url("redis-sentinel://127.0.0.1:26379?sentinelServiceName=mymaster")
///     .namespace("orders")
///     .durability(Durability::replicas(1).timeout(Duration::from_millis(200)))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    pub(crate) replicas: u32,
    pub(crate) timeout: Duration,
}

impl Durability {
    /// Require `n` replica acknowledgements (timeout 500 ms).
    pub fn replicas(n: u32) -> Durability {
        Durability {
            replicas: n,
            timeout: Duration::from_millis(500),
        }
    }

    /// How long `WAIT` may block (whole milliseconds, at least 1 ms). Keep it well below the
    /// command timeout and the session TTL / 4, or renewals time out instead.
    pub fn timeout(mut self, timeout: Duration) -> Durability {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Replica acknowledgements required.
    pub fn required(&self) -> u32 {
        self.replicas
    }
}
