//! Who holds and who waits, for operators (`leasehold inspect`). Script: `lua/lock/inspect.lua`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::base::error::Result;
use crate::base::lease_id::LeaseId;
use crate::base::limits::check_name;
use crate::client::Client;
use crate::redis::classify::classify;
use crate::redis::{scripts, Reply};
use crate::sync::rwlock::RwMode;
use crate::wait::LockKind;

/// The kinds of queue [`Client::inspect`] can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// not start with a lease id (foreign data). On a spread namespace, the session's own lease
    /// (the one [`Client::leases`] lists and [`Client::revoke`] takes), not its sub-lease.
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
    /// A rwlock entry's mode; `None` for other kinds.
    pub mode: Option<RwMode>,
    /// The permits a semaphore entry holds or asks for; `None` for other kinds.
    pub permits: Option<u32>,
    /// An election candidate's value (the leader's is what observers see); `None` for other
    /// kinds.
    pub value: Option<String>,
    /// When the entry was queued, read from its revision: revisions are the server's clock in
    /// microseconds unless more than a million were taken in a second. A holder that never
    /// waited has held since then; one that waited, for less. `None` when the revision is not
    /// a plausible time.
    pub queued_at: Option<SystemTime>,
}

impl Client {
    /// Every mutex, rwlock, semaphore and election of the namespace that has an entry (a
    /// holder, a waiter, a candidate), by kind and then name, for operators: `leasehold locks`.
    /// Read with `SCAN` (a page of keys at a time, so Redis serves others in between), so not
    /// a snapshot: a queue created or emptied meanwhile may be missing or listed.
    pub async fn queues(&self) -> Result<Vec<(QueueKind, String)>> {
        use fred::types::scan::Scanner;
        use futures_util::TryStreamExt;

        let mut out = Vec::new();
        // A spread namespace's locks are in its sub-namespaces.
        let spaces = std::iter::once(self).chain(self.sub_clients());
        for (kind, space) in QueueKind::ALL
            .into_iter()
            .flat_map(|kind| spaces.clone().map(move |space| (kind, space)))
        {
            let k = &space.shared().keys;
            let conn = &space.shared().conn;
            let redis = conn.pool().next_connected();
            let prefix = kind.lock_kind().key(k, "");
            // `*` and friends in the namespace cannot occur (namespaces are [A-Za-z0-9_.-]).
            let pattern = format!("{prefix}*");
            let pages = redis.scan(pattern, Some(1000), None);
            futures_util::pin_mut!(pages);
            while let Some(mut page) = pages
                .try_next()
                .await
                .map_err(|e| classify(e, conn.timeout()))?
            {
                for key in page.take_results().unwrap_or_default() {
                    if let Some(name) = key.as_str().and_then(|k| k.strip_prefix(&prefix)) {
                        out.push((kind, name.to_owned()));
                    }
                }
                page.next();
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Everyone in the queue of the `kind` named `name`, in order (at most 1000 entries):
    /// holders first, then waiters. Read-only.
    pub async fn inspect(&self, kind: QueueKind, name: &str) -> Result<Vec<QueueEntry>> {
        let client = self.for_name(name);
        let k = &client.shared().keys;
        let queue_kind = kind;
        let kind = kind.lock_kind();
        check_name(k.namespace(), kind.label(), name)?;
        let keys = vec![k.rev(), k.leases(), kind.key(k, name)];
        let v = client
            .shared()
            .conn
            .eval(&scripts::INSPECT, keys, vec![])
            .await?;
        let mut entries = parse_inspect(queue_kind, v)?;
        // In a spread namespace's sub-namespace, entries name sub-leases: show the session's
        // own lease, the one operators list and revoke.
        if let Some(layout) = self.spread_layout() {
            let sub = layout.index_of(name);
            for e in &mut entries {
                e.lease = e.lease.map(|l| l.in_sub_namespace(sub));
            }
        }
        Ok(entries)
    }
}

/// The instant a revision (server µs, see [`QueueEntry::queued_at`]) stands for, if it is a
/// plausible one: after 2020 and not in the future by more than a day.
fn revision_time(revision: u64) -> Option<SystemTime> {
    const Y2020_US: u64 = 1_577_836_800_000_000;
    let at = UNIX_EPOCH.checked_add(Duration::from_micros(revision))?;
    let latest = SystemTime::now() + Duration::from_secs(86_400);
    (revision >= Y2020_US && at <= latest).then_some(at)
}

/// Rows of `{member, revision, holder, ms left, client, host, pid, label, value}` of a queue
/// of `kind`.
pub(crate) fn parse_inspect(kind: QueueKind, v: fred::types::Value) -> Result<Vec<QueueEntry>> {
    let r = Reply::new("inspect");
    r.array(v)?
        .into_iter()
        .map(|row| {
            let f = r.array_min(row, 8)?;
            let contender = r.string(&f[0])?;
            let left = r.uint(&f[3])?;
            // After the lease id: `r<id>`/`w<id>` (rwlock), `<permits>.<id>` (semaphore).
            let suffix = contender.split_once('.').map_or("", |(_, s)| s);
            let revision = r.uint(&f[1])?;
            Ok(QueueEntry {
                lease: contender.split_once('.').and_then(|(l, _)| l.parse().ok()),
                mode: match (kind, suffix.as_bytes().first()) {
                    (QueueKind::RwLock, Some(b'r')) => Some(RwMode::Read),
                    (QueueKind::RwLock, Some(b'w')) => Some(RwMode::Write),
                    _ => None,
                },
                permits: match kind {
                    QueueKind::Semaphore => suffix.split('.').next().and_then(|p| p.parse().ok()),
                    _ => None,
                },
                value: match (kind, f.get(8)) {
                    (QueueKind::Election, Some(v)) => Some(r.string(v)?),
                    _ => None,
                },
                queued_at: revision_time(revision),
                contender,
                fencing_token: revision,
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
