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
//! Folders are layers; each imports only from the layers above it in this table
//! (`docs/architecture.md` walks through a lock call and a renewal file by file).
//!
//! | layer | what |
//! |---|---|
//! | `base/` | no I/O: [`Error`], limits and checks of names, [`metrics`], [`LeaseId`], [`SessionEnd`] |
//! | `redis/` | all Redis I/O: the command pool (`FCALL` of the function library or EVALSHA, reloads, `WAIT`, batches), the script registry, the key layout, replies, error classification, TLS, the doorbell's routing table |
//! | `lease/` | [`Lease`], [`LeaseInfo`]: the lease scripts; the keepalive state machine; the one supervisor task per client |
//! | `client/` | [`Client`], [`ClientBuilder`], and the lease API of a client (grant, revoke, list) |
//! | `session/` | [`Session`], [`SessionOptions`]: a lease kept alive, and what primitives need of it; a spread namespace's session and its sub-leases |
//! | `wait/` | the wait engine: lock kinds, waiting for a turn (withdrawn on cancel), the held entry behind every guard |
//! | `sync/` | [`Mutex`], [`RwLock`], [`Semaphore`], [`Election`] |
//! | `recipes/` | etcd's recipes: [`Barrier`], [`DoubleBarrier`], [`Queue`] |
//! | `kv/`, `inspect.rs` | [`KeyValue`] (keys put with a lease), [`Txn`] (transactions on keys, guarded by lock ownership), [`Client::stm`] (etcd's STM), [`Client::watch`]; [`Client::inspect`] for operators |
//!
//! Each atomic operation is one Lua script under `lua/<area>/`, declared once with its
//! properties in the script registry (`src/redis/scripts.rs`). The key layout is in
//! `docs/architecture.md`. Test tooling (throwaway servers, clusters, sentinels, a
//! fault-injecting proxy) is the separate crate `leasehold-testing`.
//!
//! `leasehold::fred` re-exports fred, the Redis client leasehold is built on:
//! [`ClientBuilder::fred_config`] takes its configuration type, so build that from
//! `leasehold::fred` and its version always matches leasehold's.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod base;
mod client;
mod inspect;
mod kv;
mod lease;
mod recipes;
mod redis;
#[cfg(test)]
mod reply_fuzz;
mod session;
mod sync;
mod wait;

pub use base::error::{Cause, Error, Result};
pub use base::lease_id::LeaseId;
pub use base::limits::{
    DEFAULT_TTL, ELECTION_LOG_BYTES, ELECTION_LOG_ENTRIES, KV_EVENT_LOG_BYTES,
    KV_EVENT_LOG_ENTRIES, MAX_ATTACHMENTS_SHOWN, MAX_LABEL_LEN, MAX_LOCK_DELAY, MAX_NAMESPACE_LEN,
    MAX_NAME_LEN, MAX_TTL, MAX_TXN_ITEMS, MAX_VALUE_LEN, MIN_TTL,
};
pub use base::metrics;
pub use base::session_state::{OnDrop, SessionEnd, SessionState};
pub use client::{Client, ClientBuilder, DEFAULT_NAMESPACE};
pub use inspect::{QueueEntry, QueueKind};
pub use kv::stm::{Isolation, Stm, StmCommit, STM_MAX_ATTEMPTS};
pub use kv::txn::{Compare, CompareOp, Txn, TxnOp, TxnResponse};
pub use kv::watch::{WatchEvent, WatchOptions};
pub use kv::{KeyRange, KeyValue, MAX_PAGE_BYTES, MAX_RANGE};
pub use lease::leases::{Attachment, Lease, LeaseInfo};
pub use recipes::barrier::Barrier;
pub use recipes::double_barrier::DoubleBarrier;
pub use recipes::queue::Queue;
pub use redis::durability::Durability;
pub use redis::scripts::function_library_name;
pub use redis::spread::MAX_SPREAD;
pub use session::{Session, SessionOptions};
pub use sync::election::{Election, Leader, LeaderEvent};
pub use sync::mutex::{Mutex, MutexGuard};
pub use sync::rwlock::{RwLock, RwLockGuard, RwMode};
pub use sync::semaphore::{Semaphore, SemaphorePermit, MAX_PERMITS};

/// The Redis client leasehold is built on, re-exported on purpose: its configuration type is
/// part of leasehold's API ([`ClientBuilder::fred_config`]), so build one with
/// `leasehold::fred::types::config::Config` and it always matches the fred leasehold uses,
/// whatever `fred` version your own dependencies bring. Moving to an incompatible fred version
/// is therefore a breaking release of leasehold.
pub use fred;

/// Compiles the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Compiles the examples of docs/acl.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/acl.md")]
pub struct AclDoctests;
