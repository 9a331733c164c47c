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
///
/// New variants may come, and a variant with named fields may gain fields: match those with
/// `..`, e.g. `Error::SessionLost { reason, .. }`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A namespace name outside `[A-Za-z0-9_.-]{1,64}`. Rejected before any I/O.
    #[error("invalid namespace {namespace:?}: {reason}")]
    #[non_exhaustive]
    InvalidNamespace {
        /// The namespace as given.
        namespace: String,
        /// What is wrong with it, e.g. `must not be empty`.
        reason: &'static str,
    },

    /// A lock, election or key name that is empty or too long. Rejected before any I/O.
    #[error("invalid {kind} name in namespace {namespace:?}: {reason}")]
    #[non_exhaustive]
    InvalidName {
        /// The namespace of the client.
        namespace: String,
        /// What the name was for: `mutex`, `rwlock`, `semaphore`, `election`, `key`, ...
        kind: &'static str,
        /// What is wrong with it, e.g. `must not be empty`.
        reason: String,
    },

    /// A TTL outside [`MIN_TTL`](crate::MIN_TTL)..=[`MAX_TTL`](crate::MAX_TTL). Rejected before any I/O.
    #[error("invalid TTL {ttl:?}: must be between {min:?} and {max:?}")]
    #[non_exhaustive]
    InvalidTtl {
        /// The TTL as given.
        ttl: Duration,
        /// The shortest TTL accepted, [`MIN_TTL`](crate::MIN_TTL).
        min: Duration,
        /// The longest TTL accepted, [`MAX_TTL`](crate::MAX_TTL).
        max: Duration,
    },

    /// Some other argument was rejected (a label too long, a malformed lease id, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A value larger than [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN). Rejected before any I/O.
    #[error("value for {kind} {name:?} in namespace {namespace:?} is {len} bytes, at most {max} allowed")]
    #[non_exhaustive]
    ValueTooLarge {
        /// The namespace of the client.
        namespace: String,
        /// What the value was for: `key`, `election` or `queue`.
        kind: &'static str,
        /// The name of the key, election or queue.
        name: String,
        /// The value's length in bytes.
        len: usize,
        /// The most bytes allowed, [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN).
        max: usize,
    },

    /// [`Election::proclaim`](crate::Election::proclaim) (or a campaign whose candidacy was
    /// withdrawn meanwhile): this candidacy does not lead the election.
    #[error("not the leader of election {name:?} in namespace {namespace:?}")]
    #[non_exhaustive]
    NotLeader {
        /// The namespace of the client.
        namespace: String,
        /// The election's name.
        name: String,
    },

    /// [`Semaphore`](crate::Semaphore): another user of this semaphore set a different size,
    /// and still holds or waits for permits.
    #[error("semaphore {name:?} in namespace {namespace:?} has {existing} permits, not {size}")]
    #[non_exhaustive]
    SemaphoreSize {
        /// The namespace of the client.
        namespace: String,
        /// The semaphore's name.
        name: String,
        /// The size this handle was made with.
        size: u32,
        /// The size other users set, which stays in force.
        existing: u32,
    },

    /// [`DoubleBarrier::enter`](crate::DoubleBarrier::enter): the barrier already has its
    /// count of participants (or a round is in progress). Nothing was registered.
    #[error("double barrier {name:?} in namespace {namespace:?} is full ({participants} of {count} participants)")]
    #[non_exhaustive]
    BarrierFull {
        /// The namespace of the client.
        namespace: String,
        /// The double barrier's name.
        name: String,
        /// The count of participants this handle was made with.
        count: u32,
        /// How many participants the barrier holds now.
        participants: u64,
    },

    /// A `try_` call ([`Mutex::try_lock`](crate::Mutex::try_lock), …): someone else holds
    /// the lock (or the permits). Nothing was queued.
    #[error("{kind} {name:?} in namespace {namespace:?} is held by another contender")]
    #[non_exhaustive]
    Locked {
        /// The namespace of the client.
        namespace: String,
        /// What is held: `mutex`, `rwlock`, `semaphore` or `barrier`.
        kind: &'static str,
        /// Its name.
        name: String,
    },

    /// The namespace is laid out otherwise than this client was built for: spread over
    /// another number of sub-namespaces, or with another name hash
    /// ([`ClientBuilder::spread`](crate::ClientBuilder::spread)). Two clients that map a lock
    /// name to two places would both hold it, so the client is refused (at `build`, or at a
    /// session's grant should the namespace's layout have changed since). Nothing was
    /// written.
    #[error("namespace layout mismatch: {0}")]
    LayoutMismatch(String),

    /// A software transaction ([`Client::stm`](crate::Client::stm)) found the keys it read
    /// changed at every commit, `attempts` times in a row. Nothing was written.
    #[error("transaction in namespace {namespace:?} conflicted {attempts} times in a row; nothing was written")]
    #[non_exhaustive]
    Conflict {
        /// The namespace of the client.
        namespace: String,
        /// How many times it ran.
        attempts: u32,
    },

    /// The session's lease is gone (expired, revoked, orphaned or closed), so nothing it held or
    /// waited for can be trusted any more. Open a new session to go on.
    #[error("session lost: lease {lease} in namespace {namespace:?} ended ({reason})")]
    #[non_exhaustive]
    SessionLost {
        /// The namespace of the client.
        namespace: String,
        /// The session's lease.
        lease: LeaseId,
        /// Why the session ended.
        reason: SessionEnd,
    },

    /// The lease does not exist (never granted, expired or revoked).
    #[error("lease {lease} not found in namespace {namespace:?}")]
    #[non_exhaustive]
    LeaseNotFound {
        /// The namespace of the client.
        namespace: String,
        /// The lease asked for.
        lease: LeaseId,
    },

    /// Release or check of a lock this contender no longer holds: it was already released, or
    /// the lease expired and the lock may have passed to someone else.
    #[error("{kind} {name:?} in namespace {namespace:?} is not held by this guard (fencing token {fencing_token})")]
    #[non_exhaustive]
    NotHeld {
        /// The namespace of the client.
        namespace: String,
        /// What the guard held: `mutex`, `rwlock`, `semaphore`, `double barrier` or `election`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The guard's fencing token.
        fencing_token: u64,
    },

    /// A key leasehold owns holds a value of another Redis type (someone else wrote it).
    /// The operation changed nothing.
    #[error(
        "key {key:?} holds a Redis {found}, leasehold expects a {expected}; nothing was changed"
    )]
    #[non_exhaustive]
    WrongType {
        /// The full Redis key, e.g. `{ns}:mutex:<name>`.
        key: String,
        /// The Redis type the key holds (as `TYPE` names it: `string`, `hash`, ...).
        found: String,
        /// The Redis type leasehold expects there.
        expected: String,
    },

    /// A key leasehold owns holds data it cannot read. The operation changed nothing.
    #[error("key {key:?} holds data leasehold cannot read: {detail}")]
    #[non_exhaustive]
    CorruptData {
        /// The full Redis key (empty when the script did not name it).
        key: String,
        /// What could not be read.
        detail: String,
    },

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
    #[non_exhaustive]
    EvictionPolicy {
        /// The server's `maxmemory-policy`, e.g. `allkeys-lru`.
        policy: String,
    },

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
    #[non_exhaustive]
    NotReplicated {
        /// The namespace of the client.
        namespace: String,
        /// The script whose writes were not replicated (its file name under `lua/`, e.g.
        /// `mutex_acquire`).
        operation: &'static str,
        /// How many replicas acknowledged the write.
        acked: u32,
        /// How many were required ([`Durability`](crate::Durability)'s replicas).
        wanted: u32,
        /// How long `WAIT` waited for them.
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
    #[non_exhaustive]
    Protocol {
        /// What was being done, e.g. `mutex acquire`.
        operation: &'static str,
        /// What was wrong with the reply.
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
