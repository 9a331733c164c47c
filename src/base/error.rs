//! The one error type of leasehold, and [`Cause`]: what Redis or the connection said.

use std::sync::Arc;
use std::time::Duration;

use super::lease_id::LeaseId;
use super::session_state::SessionEnd;

/// Result alias used throughout leasehold.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, one variant per situation a caller can act on.
///
/// Messages name the namespace, lock or lease involved, so a log line is enough to find the
/// Redis keys (see the key layout in the crate docs).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A namespace name outside `[A-Za-z0-9_.-]{1,64}`. Rejected before any I/O.
    #[error("invalid namespace {namespace:?}: {reason}")]
    InvalidNamespace {
        namespace: String,
        reason: &'static str,
    },

    /// A lock, election or key name that is empty or too long. Rejected before any I/O.
    #[error("invalid {kind} name in namespace {namespace:?}: {reason}")]
    InvalidName {
        namespace: String,
        kind: &'static str,
        reason: String,
    },

    /// A TTL outside [`MIN_TTL`](crate::MIN_TTL)..=[`MAX_TTL`](crate::MAX_TTL). Rejected before any I/O.
    #[error("invalid TTL {ttl:?}: must be between {min:?} and {max:?}")]
    InvalidTtl {
        ttl: Duration,
        min: Duration,
        max: Duration,
    },

    /// Some other argument was rejected (a label too long, a malformed lease id, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A value larger than [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN). Rejected before any I/O.
    #[error("value for {kind} {name:?} in namespace {namespace:?} is {len} bytes, at most {max} allowed")]
    ValueTooLarge {
        namespace: String,
        kind: &'static str,
        name: String,
        len: usize,
        max: usize,
    },

    /// [`Election::proclaim`](crate::Election::proclaim) (or a campaign whose candidacy was
    /// withdrawn meanwhile): this candidacy does not lead the election.
    #[error("not the leader of election {name:?} in namespace {namespace:?}")]
    NotLeader { namespace: String, name: String },

    /// [`Semaphore`](crate::Semaphore): another user of this semaphore set a different size,
    /// and still holds or waits for permits.
    #[error("semaphore {name:?} in namespace {namespace:?} has {existing} permits, not {size}")]
    SemaphoreSize {
        namespace: String,
        name: String,
        size: u32,
        existing: u32,
    },

    /// [`DoubleBarrier::enter`](crate::DoubleBarrier::enter): the barrier already has its
    /// count of participants (or a round is in progress). Nothing was registered.
    #[error("double barrier {name:?} in namespace {namespace:?} is full ({participants} of {count} participants)")]
    BarrierFull {
        namespace: String,
        name: String,
        count: u32,
        participants: u64,
    },

    /// A `try_` call ([`Mutex::try_lock`](crate::Mutex::try_lock), …): someone else holds
    /// the lock (or the permits). Nothing was queued.
    #[error("{kind} {name:?} in namespace {namespace:?} is held by another contender")]
    Locked {
        namespace: String,
        kind: &'static str,
        name: String,
    },

    /// The session's lease is gone (expired, revoked, orphaned or closed), so nothing it held or
    /// waited for can be trusted any more. Open a new session to go on.
    #[error("session lost: lease {lease} in namespace {namespace:?} ended ({reason})")]
    SessionLost {
        namespace: String,
        lease: LeaseId,
        reason: SessionEnd,
    },

    /// The lease does not exist (never granted, expired or revoked).
    #[error("lease {lease} not found in namespace {namespace:?}")]
    LeaseNotFound { namespace: String, lease: LeaseId },

    /// Release or check of a lock this contender no longer holds: it was already released, or
    /// the lease expired and the lock may have passed to someone else.
    #[error("{kind} {name:?} in namespace {namespace:?} is not held by this guard (fencing token {fencing_token})")]
    NotHeld {
        namespace: String,
        kind: &'static str,
        name: String,
        fencing_token: u64,
    },

    /// A key leasehold owns holds a value of another Redis type (someone else wrote it).
    /// The operation changed nothing.
    #[error(
        "key {key:?} holds a Redis {found}, leasehold expects a {expected}; nothing was changed"
    )]
    WrongType {
        key: String,
        found: String,
        expected: String,
    },

    /// A key leasehold owns holds data it cannot read. The operation changed nothing.
    #[error("key {key:?} holds data leasehold cannot read: {detail}")]
    CorruptData { key: String, detail: String },

    /// The server's `maxmemory-policy` can evict leasehold's keys (any policy but
    /// `noeviction`; the `volatile-*` ones evict lease hashes): an evicted queue entry can give
    /// a lock to two holders. Refused when the client connects and when a session opens
    /// (also after a `CONFIG SET` or a failover that a renewal noticed), unless the client was
    /// built with [`ClientBuilder::allow_eviction`](crate::ClientBuilder::allow_eviction).
    /// Nothing was written.
    #[error(
        "Redis maxmemory-policy is {policy}, which can evict lock keys and so give a lock to two \
         holders; set `maxmemory-policy noeviction`, or accept the risk with \
         ClientBuilder::allow_eviction (CLI: --allow-eviction)"
    )]
    EvictionPolicy { policy: String },

    /// Redis refused a write because it reached `maxmemory` (policy `noeviction`). Nothing was
    /// written; the call may succeed once memory is freed.
    #[error("Redis is out of memory (maxmemory reached), nothing was written: {0}")]
    OutOfMemory(#[source] Cause),

    /// The Redis user may not run a command or touch a key (ACL `NOPERM`). Nothing was written
    /// by the refused command; the message says what was being done.
    #[error("permission denied by Redis ACL: {0}")]
    PermissionDenied(#[source] Cause),

    /// Redis refused the credentials (`WRONGPASS`: wrong user or password; `NOAUTH`: the server
    /// needs a password the URL does not give). Raised when the client connects; nothing was
    /// written. Not transient: fix the URL.
    #[error("Redis refused the credentials: {0}")]
    AuthFailed(#[source] Cause),

    /// With [`Durability`](crate::Durability) set: fewer replicas than required acknowledged a
    /// write before the timeout, so a failover could lose it. The operation is treated as
    /// failed (an acquire's entry is withdrawn, a renewal does not extend the session); it is
    /// safe to retry.
    #[error(
        "namespace {namespace:?}: {operation} reached {acked} of {wanted} replicas within \
         {timeout:?}; not counted, a failover could lose it"
    )]
    NotReplicated {
        namespace: String,
        operation: &'static str,
        acked: u32,
        wanted: u32,
        timeout: Duration,
    },

    /// TLS failed: the server's certificate is not signed by a trusted CA or does not name the
    /// host, the server does not speak TLS on that port, or no root certificates are available.
    /// Not transient: fix the configuration (see `ClientBuilder::tls_root_ca_pem`, feature `tls`).
    #[error("TLS failed: {0}")]
    Tls(#[source] Cause),

    /// Redis did not answer in time. The operation may or may not have been applied.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),

    /// Redis could not be reached (connection refused, reset, closed). A call that was in
    /// flight when its connection closed may or may not have run (the message says which).
    #[error("cannot reach Redis: {0}")]
    Unreachable(#[source] Cause),

    /// A reply of a shape leasehold does not expect (a bug, or a key rewritten by a foreign writer).
    #[error("unexpected reply from Redis to {operation}: {detail}")]
    Protocol {
        operation: &'static str,
        detail: String,
    },

    /// The client was shut down.
    #[error("leasehold client is shut down")]
    Closed,

    /// Any other error Redis or the client library reported.
    #[error("Redis error: {0}")]
    Redis(#[source] Cause),
}

/// What Redis or the connection said about an [`Error`]: a message to read, and the error it
/// came from as [`source`](std::error::Error::source) (the Redis client library's error, or an
/// I/O error), for logs that print the chain. The type of that source is not part of
/// leasehold's API: match on [`Error`]'s variants, not on it.
#[derive(Debug, Clone)]
pub struct Cause {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// A cause with a message only.
    pub(crate) fn new(message: impl Into<String>) -> Cause {
        Cause {
            message: message.into(),
            source: None,
        }
    }

    /// A cause with a message, coming from `source`.
    pub(crate) fn from_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Cause {
        Cause {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// The message, as shown in the error's text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same cause with another message.
    pub(crate) fn with_message(self, message: String) -> Cause {
        Cause { message, ..self }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Error {
    /// True for errors after which the same call may succeed later (timeouts, lost connections,
    /// too few replica acknowledgements).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Timeout(_) | Error::Unreachable(_) | Error::NotReplicated { .. }
        )
    }
}
