//! # leasehold
//!
//! etcd's session, lease and lock model (`clientv3/concurrency`) on the Redis you already run.
//!
//! A [`Session`] is one lease with a TTL, renewed by the client's **one** keepalive supervisor
//! (batched across every session of the process: no task per session, so the classic
//! "session per request leaks a keepalive goroutine" bug cannot happen). Locks attach to the
//! lease and vanish with it; [`Session::done`] tells you when it is gone, even while Redis is
//! unreachable. A [`Mutex`] is fair (FIFO), fenced (every acquisition gets a token greater than
//! all earlier ones) and wakes waiters with one message per handoff instead of polling.
//!
//! ```no_run
//! # async fn demo() -> leasehold::Result<()> {
//! use leasehold::Client;
//!
//! let client = Client::connect("redis://127.0.0.1:6379").await?;
//! let session = client.session().await?; // one long-lived session per process
//! let guard = session.mutex("invoice-42")?.lock().await?;
//! println!("holding {} with fencing token {}", guard.key(), guard.fencing_token());
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
//!
//! ## Map
//!
//! | module | what |
//! |---|---|
//! | `client` | [`Client`], [`ClientBuilder`]: pool, doorbell subscription, supervisor |
//! | `lease` | [`LeaseId`], [`Lease`], [`LeaseInfo`]: grant, keep-alive, revoke, time-to-live, list |
//! | `session` | [`Session`], [`SessionOptions`], [`SessionState`], [`SessionEnd`], [`OnDrop`] |
//! | `mutex` | [`Mutex`], [`MutexGuard`] |
//! | `election` | [`Election`], [`Leader`], [`LeaderEvent`]: campaign, proclaim, resign, observe |
//! | `rwlock`, `semaphore` | [`RwLock`], [`Semaphore`]: shared ownership on the same queue engine |
//! | `barrier`, `double_barrier`, `queue` | etcd's recipes: [`Barrier`], [`DoubleBarrier`], [`Queue`] |
//! | `waiter` | the wait engine and held entry shared by every lock |
//! | `kv` | [`KeyValue`]: keys put with a lease (`put`, `get`, `delete`, `get_prefix`) |
//! | `keepalive` | the renewal state machine (no I/O) |
//! | `supervisor` | the one task per client that drives it |
//! | `doorbell` | routing of wake-ups to waiters |
//! | `conn`, `script`, `reply` | all Redis I/O: EVALSHA with NOSCRIPT reload, error mapping |
//! | `batch` | lock calls of many tasks in one script call under load |
//! | `failover` | listening to Sentinel for `+switch-master`, so a failover is followed at once |
//! | `durability` | [`Durability`]: `WAIT` for replicas after every grant (Sentinel, replicas) |
//! | `keys` | the key layout |
//! | `tls` | from a URL to fred's configuration; TLS through rustls (feature `tls`) |
//! | [`metrics`] | metric names |
//! | `testing` | throwaway `redis-server`, cluster and sentinel processes (feature `testing`) |
//!
//! The Lua for each operation is in `lua/<operation>.lua`, run by the module of the same
//! prefix (`lua/mutex_acquire.lua` by `mutex`).
//!
//! ## Key layout
//!
//! ```text
//! {ns}:rev                 revision counter (fencing tokens)
//! {ns}:leases              zset  lease id -> server expiry (ms)
//! {ns}:lease:<id>          hash  ttl, client, host, pid, label, granted
//! {ns}:attached:<id>       set   what is attached to the lease
//! {ns}:mutex:<name>        zset  contender -> revision (FIFO queue, head = owner)
//! {ns}:wake:<client id>    pub/sub channel: one doorbell per client process
//! ```

mod barrier;
mod batch;
mod client;
mod conn;
mod doorbell;
mod double_barrier;
mod durability;
mod election;
mod error;
mod failover;
mod inspect;
mod keepalive;
mod keys;
mod kv;
mod lease;
pub mod metrics;
mod mutex;
mod names;
mod queue;
mod reply;
#[cfg(test)]
mod reply_fuzz;
mod rwlock;
mod script;
mod semaphore;
mod session;
mod supervisor;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
mod waiter;

pub use barrier::Barrier;
pub use client::{Client, ClientBuilder, DEFAULT_NAMESPACE};
pub use double_barrier::DoubleBarrier;
pub use durability::Durability;
pub use election::{Election, Leader, LeaderEvent};
pub use error::{Error, Result};
pub use inspect::{QueueEntry, QueueKind};
pub use kv::{KeyRange, KeyValue, MAX_RANGE};
pub use lease::{Attachment, Lease, LeaseId, LeaseInfo};
pub use mutex::{Mutex, MutexGuard};
pub use names::{
    DEFAULT_TTL, MAX_LABEL_LEN, MAX_NAMESPACE_LEN, MAX_NAME_LEN, MAX_TTL, MAX_VALUE_LEN, MIN_TTL,
};
pub use queue::Queue;
pub use rwlock::{RwLock, RwLockGuard, RwMode};
pub use semaphore::{Semaphore, SemaphorePermit, MAX_PERMITS};
pub use session::{OnDrop, Session, SessionEnd, SessionOptions, SessionState};

/// Compiles the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Compiles the examples of docs/acl.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/acl.md")]
pub struct AclDoctests;
