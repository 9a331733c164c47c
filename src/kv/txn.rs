//! Transactions on keys (etcd's `Txn().If(...).Then(...).Else(...)`), with conditions on keys,
//! on lock ownership and on leases, run by one script call (`lua/kv/kv_txn.lua`): either every
//! compare holds and the `then` ops run, or the `else` ops run; nothing in between is seen by
//! anyone.
//!
//! The common use is a write that must only happen while a lock is held: a holder whose
//! session ran out (a long GC pause, a partition) may still believe it holds, and a plain
//! `put` from it would land after the next holder's. [`MutexGuard::put`] (and the same on the
//! other guards) checks ownership in the same call as the write, so a superseded holder's write
//! never lands: it gets [`Error::NotHeld`] instead.

use fred::types::Value;

use crate::base::error::{Error, Result};
use crate::base::lease_id::LeaseId;
use crate::base::limits::{check_name, check_value, MAX_TXN_ITEMS};
use crate::client::Client;
use crate::redis::{scripts, Reply};
use crate::session::Session;
use crate::sync::mutex::MutexGuard;
use crate::sync::rwlock::RwLockGuard;
use crate::sync::semaphore::SemaphorePermit;
use crate::wait::entry::Entry;

/// How a [`Compare`] relates a key's field to a given value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompareOp {
    /// Equal.
    Equal,
    /// Not equal (values only).
    NotEqual,
    /// Less than (revisions only).
    Less,
    /// Greater than (revisions only).
    Greater,
}

/// A condition of a [`Txn`], checked by the server in the transaction's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare(Item);

/// What a [`Txn`] writes in the branch that runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOp(Item);

/// One compare or op as the script takes it: a tag and three fields.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    tag: &'static str,
    fields: [String; 3],
    /// The key it names, checked before any I/O.
    key: Option<String>,
    /// The value it writes, checked before any I/O.
    value: Option<String>,
}

impl Item {
    fn key(tag: &'static str, key: &str, b: String, value: Option<String>) -> Item {
        Item {
            tag,
            fields: [key.to_owned(), b, String::new()],
            key: Some(key.to_owned()),
            value,
        }
    }
}

impl Compare {
    /// Key `key` is live and its value is (`Equal`) or is not (`NotEqual`) `value`. An absent
    /// key has no value: it is `NotEqual` to every value. `Less` and `Greater` are refused
    /// with [`Error::InvalidArgument`] at commit.
    pub fn value(key: &str, op: CompareOp, value: &str) -> Compare {
        let tag = match op {
            CompareOp::Equal => "v=",
            CompareOp::NotEqual => "v!",
            CompareOp::Less | CompareOp::Greater => "v?",
        };
        Compare(Item::key(tag, key, value.to_owned(), None))
    }

    /// Key `key`'s mod revision (the revision of its last put; 0 when absent) compared with
    /// `revision`: `Equal`, `Less` or `Greater` (etcd's `Compare(ModRevision(key), op, rev)`).
    /// `NotEqual` is refused with [`Error::InvalidArgument`] at commit.
    pub fn mod_revision(key: &str, op: CompareOp, revision: u64) -> Compare {
        let tag = match op {
            CompareOp::Equal => "m=",
            CompareOp::Less => "m<",
            CompareOp::Greater => "m>",
            CompareOp::NotEqual => "m?",
        };
        Compare(Item::key(tag, key, revision.to_string(), None))
    }

    /// Key `key` is live (present, and its lease, if any, alive).
    pub fn exists(key: &str) -> Compare {
        Compare(Item::key("x", key, String::new(), None))
    }

    /// Key `key` is absent (or its lease is dead): a create-if-absent.
    pub fn missing(key: &str) -> Compare {
        Compare(Item::key("n", key, String::new(), None))
    }

    /// The session's lease is alive.
    pub fn alive(session: &Session) -> Compare {
        Compare::lease_alive(session.lease())
    }

    /// Lease `lease` is alive.
    pub fn lease_alive(lease: LeaseId) -> Compare {
        Compare(Item {
            tag: "a",
            fields: [lease.to_string(), String::new(), String::new()],
            key: None,
            value: None,
        })
    }

    /// The lock entry behind a guard still owns its lock: at its own revision, with its lease
    /// alive, ahead of (mutex, rwlock writer) or among (readers, permits) the owners.
    fn held(entry: &Entry) -> Compare {
        Compare(Item {
            tag: "h",
            fields: [
                entry.queue.clone(),
                entry.contender.clone(),
                entry.token.to_string(),
            ],
            key: None,
            value: None,
        })
    }
}

impl TxnOp {
    /// Put `key` = `value`, without a lease.
    pub fn put(key: &str, value: &str) -> TxnOp {
        TxnOp(Item::key(
            "p",
            key,
            value.to_owned(),
            Some(value.to_owned()),
        ))
    }

    /// Put `key` = `value` attached to `lease` (deleted with it). If the lease is not alive
    /// when the branch would run, nothing is written and the commit fails with
    /// [`Error::LeaseNotFound`].
    pub fn put_with_lease(key: &str, value: &str, lease: LeaseId) -> TxnOp {
        let mut item = Item::key("p", key, value.to_owned(), Some(value.to_owned()));
        item.fields[2] = lease.to_string();
        TxnOp(item)
    }

    /// Delete `key`.
    pub fn delete(key: &str) -> TxnOp {
        TxnOp(Item::key("d", key, String::new(), None))
    }
}

/// What a committed [`Txn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TxnResponse {
    /// Every compare held, and the `then` ops ran (else the `else` ops did).
    pub succeeded: bool,
    /// The namespace's revision after the branch's writes (the current one when it wrote
    /// nothing): the mod revision of every key it put.
    pub revision: u64,
}

/// A transaction: compares, then ops for when they all hold, else ops for when one does not,
/// run by one script call. Built with [`Client::txn`]; nothing is sent before
/// [`commit`](Txn::commit).
///
/// ```no_run
/// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
/// use leasehold::{Compare, CompareOp, TxnOp};
///
/// // Compare-and-swap: move the config from v1 to v2 only if nobody changed it meanwhile.
/// let r = client
///     .txn()
///     .when(Compare::value("config", CompareOp::Equal, "v1"))
///     .then(TxnOp::put("config", "v2"))
///     .commit()
///     .await?;
/// println!("swapped: {}, revision {}", r.succeeded, r.revision);
/// # Ok(()) }
/// ```
///
/// # Cancel safety
///
/// Dropping the future of [`commit`](Txn::commit) after it was sent leaves the transaction
/// either applied entirely or not at all; which one is unknown, as for any write whose reply
/// was lost. A compare on a revision lets a retry tell.
#[derive(Debug, Clone)]
#[must_use = "a transaction does nothing until committed"]
pub struct Txn {
    client: Client,
    compares: Vec<Compare>,
    then: Vec<TxnOp>,
    otherwise: Vec<TxnOp>,
}

impl Client {
    /// Start a transaction in this client's namespace.
    pub fn txn(&self) -> Txn {
        Txn {
            client: self.clone(),
            compares: Vec::new(),
            then: Vec::new(),
            otherwise: Vec::new(),
        }
    }
}

impl Txn {
    /// Add a compare: the `then` ops run only if every compare holds.
    pub fn when(mut self, compare: Compare) -> Txn {
        self.compares.push(compare);
        self
    }

    /// Add an op to run when every compare holds.
    pub fn then(mut self, op: TxnOp) -> Txn {
        self.then.push(op);
        self
    }

    /// Add an op to run when a compare does not hold (etcd's `Else`).
    pub fn otherwise(mut self, op: TxnOp) -> Txn {
        self.otherwise.push(op);
        self
    }

    /// Send the transaction.
    ///
    /// Fails before any I/O with [`Error::InvalidName`], [`Error::ValueTooLarge`] or
    /// [`Error::InvalidArgument`] for a bad key, value or compare, or more than
    /// [`MAX_TXN_ITEMS`](crate::MAX_TXN_ITEMS) compares and ops; with
    /// [`Error::LeaseNotFound`] when a put of the branch that would run names a dead lease
    /// (nothing is written then); with [`Error::WrongType`] when a key holds foreign data.
    pub async fn commit(self) -> Result<TxnResponse> {
        let namespace = self.client.namespace().to_owned();
        let items: Vec<&Item> = (self.compares.iter().map(|c| &c.0))
            .chain(self.then.iter().map(|o| &o.0))
            .chain(self.otherwise.iter().map(|o| &o.0))
            .collect();
        if items.len() > MAX_TXN_ITEMS {
            return Err(Error::InvalidArgument(format!(
                "a transaction holds at most {MAX_TXN_ITEMS} compares and ops, not {}",
                items.len()
            )));
        }
        let mut args = vec![
            self.compares.len().to_string(),
            self.then.len().to_string(),
            self.otherwise.len().to_string(),
        ];
        let prefix = format!("{{{namespace}}}:");
        for item in &items {
            if item.tag == "h" && !item.fields[0].starts_with(&prefix) {
                return Err(spread_guard(&item.fields[0]));
            }
            if item.tag.ends_with('?') {
                return Err(Error::InvalidArgument(format!(
                    "compare {:?} of key {:?}: values compare with Equal or NotEqual, \
                     revisions with Equal, Less or Greater",
                    item.tag,
                    item.key.as_deref().unwrap_or_default()
                )));
            }
            if let Some(key) = &item.key {
                check_name(&namespace, "key", key)?;
                if let Some(value) = &item.value {
                    check_value(&namespace, "key", key, value)?;
                }
            }
            args.push(item.tag.to_owned());
            args.extend(item.fields.iter().cloned());
        }
        let k = &self.client.shared().keys;
        let keys = vec![k.rev(), k.leases(), k.kv_index()];
        let v = self
            .client
            .shared()
            .conn
            .eval(&scripts::KV_TXN, keys, args)
            .await?;
        parse_txn(&namespace, v)
    }
}

fn parse_txn(namespace: &str, v: Value) -> Result<TxnResponse> {
    let r = Reply::new("transaction");
    let items = r.array_min(v, 2)?;
    if let Ok(tag) = r.string(&items[0]) {
        if tag == "lost" {
            let lease = r.string(&items[1])?;
            return Err(Error::LeaseNotFound {
                namespace: namespace.to_owned(),
                lease: lease.parse().map_err(|_| r.bad("a lease id"))?,
            });
        }
    }
    Ok(TxnResponse {
        succeeded: r.int(&items[0])? == 1,
        revision: r.uint(&items[1])?,
    })
}

/// `op` if `held` (the guard of `entry` still holds): its revision, else [`Error::NotHeld`].
async fn guarded(entry: &Entry, held: Compare, op: TxnOp) -> Result<u64> {
    if entry.session.is_sub_namespace_part() {
        return Err(spread_guard(&entry.queue));
    }
    let txn = entry.session.client().txn().when(held).then(op);
    let r = txn.commit().await?;
    if r.succeeded {
        Ok(r.revision)
    } else {
        Err(entry.not_held(entry.name()))
    }
}

/// A lock of a spread namespace lives in its sub-namespace's slot, keys in the namespace's
/// own: one script cannot check the one and write the other.
fn spread_guard(queue: &str) -> Error {
    Error::InvalidArgument(format!(
        "the lock {queue} is in another slot than the namespace's keys (a spread namespace): \
         a write cannot be guarded by it atomically; pass its fencing token to the store instead"
    ))
}

/// Writes through a guard: made only while the guard still holds, checked in the same call.
macro_rules! guarded_writes {
    ($guard:ty) => {
        impl $guard {
            /// A [`Compare`] that holds while this guard still holds its lock, for a
            /// [`Txn`] of your own.
            pub fn held(&self) -> Compare {
                Compare::held(self.entry())
            }

            /// Put `key` = `value` only if this guard still holds its lock, atomically: a
            /// holder superseded by the next one (its session ran out while it believed it
            /// held) never writes. Returns the put's revision, or [`Error::NotHeld`] (nothing
            /// written).
            ///
            /// # Cancel safety
            ///
            /// As [`Txn::commit`]: dropped after it was sent, the put happened or not.
            pub async fn put(&self, key: &str, value: &str) -> Result<u64> {
                guarded(self.entry(), self.held(), TxnOp::put(key, value)).await
            }

            /// Delete `key` only if this guard still holds its lock, atomically; else
            /// [`Error::NotHeld`] (nothing deleted). Deleting an absent key is no error.
            ///
            /// # Cancel safety
            ///
            /// As [`Txn::commit`].
            pub async fn delete(&self, key: &str) -> Result<()> {
                guarded(self.entry(), self.held(), TxnOp::delete(key))
                    .await
                    .map(drop)
            }
        }
    };
}

guarded_writes!(MutexGuard);
guarded_writes!(RwLockGuard);
guarded_writes!(SemaphorePermit);
