//! Software transactional memory on keys (etcd's `concurrency.NewSTM`): run a closure that reads
//! and writes keys through an [`Stm`] handle, then commit its writes with one [`Txn`] whose
//! compares are the mod revisions of what it read; when one changed meanwhile, run it again.
//!
//! What a caller can rely on:
//! - **Serializable** ([`Isolation::Serializable`], the default, as etcd's
//!   `SerializableSnapshot`): a commit happens only if every key the attempt read still has the
//!   mod revision it read (absent keys still absent), so the attempt's reads and writes are as
//!   if it ran alone at the commit's revision. Transfers between accounts keep the total.
//! - **Read committed** ([`Isolation::ReadCommitted`]): reads are not checked; the writes land
//!   together. For writes that do not depend on what was read.
//! - Reads see the attempt's own writes; a key read twice in one attempt reads the same. Reads
//!   of different keys are not from one snapshot: an attempt may see one key before and
//!   another after someone's commit, but such an attempt does not commit (serializable) and
//!   runs again, so only the closure's own side effects could see the mix.
//! - The closure may run several times: it must not have effects outside `Stm` (or only
//!   idempotent ones). Nothing is written by an attempt that is retried or fails.
//! - Every attempt reads with one call per key it first reads, and commits with one call;
//!   reads and writes of one attempt together count against [`MAX_TXN_ITEMS`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex as StdMutex};

use super::txn::{Compare, CompareOp, TxnOp};
use crate::base::error::{Error, Result};
use crate::base::limits::MAX_TXN_ITEMS;
use crate::client::Client;

/// How an [`Stm`] transaction is isolated from others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Isolation {
    /// Commit only if nothing the attempt read has changed (etcd's `SerializableSnapshot`).
    #[default]
    Serializable,
    /// Commit the writes whatever happened to what was read (etcd's `ReadCommitted`).
    ReadCommitted,
}

/// Most attempts of one [`Client::stm`] before it gives up with [`Error::Conflict`].
pub const STM_MAX_ATTEMPTS: u32 = 1000;

/// The reads and writes of one attempt.
#[derive(Debug, Default)]
struct Attempt {
    /// Value (None: absent) and mod revision (0: absent) of each key read from Redis.
    read: BTreeMap<String, (Option<String>, u64)>,
    /// Value to put (None: delete) of each key written.
    written: BTreeMap<String, Option<String>>,
}

/// The handle a [`Client::stm`] closure reads and writes keys through. Cheap to clone (the
/// clones share the attempt).
#[derive(Debug, Clone)]
pub struct Stm {
    client: Client,
    attempt: Arc<StdMutex<Attempt>>,
}

impl Stm {
    fn attempt(&self) -> std::sync::MutexGuard<'_, Attempt> {
        // No code that can panic runs while the lock is held.
        self.attempt.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of `key` as this attempt sees it: its own write, else what it read before,
    /// else the value in Redis now (remembered with its mod revision for the commit).
    pub async fn get(&self, key: &str) -> Result<Option<String>> {
        {
            let a = self.attempt();
            if let Some(w) = a.written.get(key) {
                return Ok(w.clone());
            }
            if let Some((v, _)) = a.read.get(key) {
                return Ok(v.clone());
            }
        }
        let kv = self.client.get(key).await?;
        let seen = match kv {
            Some(kv) => (Some(kv.value), kv.mod_revision),
            None => (None, 0),
        };
        let mut a = self.attempt();
        // A concurrent get of the same key in this attempt keeps the first answer.
        let (v, _) = a.read.entry(key.to_owned()).or_insert(seen);
        Ok(v.clone())
    }

    /// Write `key` = `value` at commit.
    pub fn put(&self, key: &str, value: &str) {
        let mut a = self.attempt();
        a.written.insert(key.to_owned(), Some(value.to_owned()));
    }

    /// Delete `key` at commit.
    pub fn delete(&self, key: &str) {
        let mut a = self.attempt();
        a.written.insert(key.to_owned(), None);
    }
}

/// What a committed [`Client::stm`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StmCommit<T> {
    /// What the closure returned in the attempt that committed.
    pub value: T,
    /// Attempts that conflicted and ran again before it (0: the first one committed).
    pub retries: u32,
    /// The revision of the commit (the current one when it wrote nothing).
    pub revision: u64,
}

impl Client {
    /// Run `f` as a software transaction on keys (etcd's `concurrency.NewSTM`): `f` reads and
    /// writes through the [`Stm`] it is given, its writes are committed together, and with
    /// [`Isolation::Serializable`] only if nothing it read changed meanwhile; otherwise `f`
    /// runs again, up to [`STM_MAX_ATTEMPTS`] times ([`Error::Conflict`] after). An error from
    /// `f` ends it at once, with nothing written.
    ///
    /// ```no_run
    /// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
    /// use leasehold::Isolation;
    ///
    /// // Move 10 from a to b; concurrent transfers never lose or create money.
    /// let done = client
    ///     .stm(Isolation::Serializable, |stm| async move {
    ///         let a: i64 = stm.get("acct/a").await?.unwrap_or_default().parse().unwrap_or(0);
    ///         let b: i64 = stm.get("acct/b").await?.unwrap_or_default().parse().unwrap_or(0);
    ///         stm.put("acct/a", &(a - 10).to_string());
    ///         stm.put("acct/b", &(b + 10).to_string());
    ///         Ok(())
    ///     })
    ///     .await?;
    /// println!("committed at revision {} after {} retries", done.revision, done.retries);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping the future between attempts writes nothing; dropping it while a commit is in
    /// flight leaves that commit applied or not, as [`Txn::commit`](crate::Txn::commit).
    pub async fn stm<T, F, Fut>(&self, isolation: Isolation, mut f: F) -> Result<StmCommit<T>>
    where
        F: FnMut(Stm) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        for attempt in 0..STM_MAX_ATTEMPTS {
            let stm = Stm {
                client: self.clone(),
                attempt: Arc::default(),
            };
            let value = f(stm.clone()).await?;
            let Attempt { read, written } = std::mem::take(&mut *stm.attempt());
            let mut txn = self.txn();
            let mut items = written.len();
            if isolation == Isolation::Serializable {
                items += read.len();
                for (key, (_, rev)) in &read {
                    txn = txn.when(Compare::mod_revision(key, CompareOp::Equal, *rev));
                }
            }
            if items > MAX_TXN_ITEMS {
                return Err(Error::InvalidArgument(format!(
                    "a transaction reads and writes at most {MAX_TXN_ITEMS} keys, not {items}"
                )));
            }
            for (key, value) in &written {
                txn = txn.then(match value {
                    Some(v) => TxnOp::put(key, v),
                    None => TxnOp::delete(key),
                });
            }
            let r = txn.commit().await?;
            if r.succeeded {
                return Ok(StmCommit {
                    value,
                    retries: attempt,
                    revision: r.revision,
                });
            }
        }
        Err(Error::Conflict {
            namespace: self.namespace().to_owned(),
            attempts: STM_MAX_ATTEMPTS,
        })
    }
}
