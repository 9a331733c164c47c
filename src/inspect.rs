//! Who holds and who waits, for operators (`leasehold inspect`). Script: `lua/lock/inspect.lua`.

use std::fmt;
use std::time::Duration;

use crate::base::error::Result;
use crate::base::lease_id::LeaseId;
use crate::base::limits::check_name;
use crate::client::Client;
use crate::redis::{scripts, Reply};
use crate::wait::LockKind;

/// The kinds of queue [`Client::inspect`] can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QueueKind {
    /// A [`Mutex`](crate::Mutex)'s queue, `{ns}:mutex:<name>`.
    Mutex,
    /// A [`RwLock`](crate::RwLock)'s queue, `{ns}:rwlock:<name>`.
    RwLock,
    /// A [`Semaphore`](crate::Semaphore)'s queue, `{ns}:semaphore:<name>`.
    Semaphore,
    /// An [`Election`](crate::Election)'s candidates, `{ns}:election:<name>`.
    Election,
}

impl QueueKind {
    /// Every kind, in this order.
    pub const ALL: [QueueKind; 4] = [
        QueueKind::Mutex,
        QueueKind::RwLock,
        QueueKind::Semaphore,
        QueueKind::Election,
    ];

    fn lock_kind(self) -> LockKind {
        match self {
            QueueKind::Mutex => LockKind::Mutex,
            QueueKind::RwLock => LockKind::RwLock,
            QueueKind::Semaphore => LockKind::Semaphore,
            QueueKind::Election => LockKind::Election,
        }
    }
}

impl fmt::Display for QueueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.lock_kind().label())
    }
}

/// One entry of a queue, as [`Client::inspect`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueEntry {
    /// The contender id (`<lease id>.<suffix>`).
    pub contender: String,
    /// The lease the entry is attached to, read from the contender id; `None` when the id does
    /// not start with a lease id (foreign data).
    pub lease: Option<LeaseId>,
    /// The entry's revision: its fencing token once it holds.
    pub fencing_token: u64,
    /// Holds the lock / permit / leadership now.
    pub holder: bool,
    /// Time left on the entry's lease; `None` when the lease is dead (the entry goes at the
    /// next touch or sweep).
    pub remaining: Option<Duration>,
    /// Id of the client process that renews the entry's lease (see [`LeaseInfo::client_id`]);
    /// this and the fields below are empty (or `None`) once the lease's record is gone.
    ///
    /// [`LeaseInfo::client_id`]: crate::LeaseInfo::client_id
    pub client_id: String,
    /// Host name of the process that granted the lease (empty when unknown).
    pub host: String,
    /// Process id of the process that granted the lease; `None` when unknown.
    pub pid: Option<u32>,
    /// The session's [label](crate::SessionOptions::label); empty when none was given.
    pub label: String,
}

impl Client {
    /// Everyone in the queue of the `kind` named `name`, in order (at most 1000 entries):
    /// holders first, then waiters. Read-only.
    pub async fn inspect(&self, kind: QueueKind, name: &str) -> Result<Vec<QueueEntry>> {
        let k = &self.shared().keys;
        let kind = kind.lock_kind();
        check_name(k.namespace(), kind.label(), name)?;
        let keys = vec![k.rev(), k.leases(), kind.key(k, name)];
        let v = self
            .shared()
            .conn
            .eval(&scripts::INSPECT, keys, vec![])
            .await?;
        parse_inspect(v)
    }
}

/// Rows of `{member, revision, holder, ms left, client, host, pid, label}`.
pub(crate) fn parse_inspect(v: fred::types::Value) -> Result<Vec<QueueEntry>> {
    let r = Reply::new("inspect");
    r.array(v)?
        .into_iter()
        .map(|row| {
            let f = r.array_min(row, 8)?;
            let contender = r.string(&f[0])?;
            let left = r.uint(&f[3])?;
            Ok(QueueEntry {
                lease: contender.split_once('.').and_then(|(l, _)| l.parse().ok()),
                contender,
                fencing_token: r.uint(&f[1])?,
                holder: r.int(&f[2])? == 1,
                remaining: (left > 0).then(|| Duration::from_millis(left)),
                client_id: r.string(&f[4])?,
                host: r.string(&f[5])?,
                pid: r.string(&f[6])?.parse().ok(),
                label: r.string(&f[7])?,
            })
        })
        .collect()
}
