//! The held entry behind every lock guard: its fencing token, ownership check, release now or
//! in the background when dropped.

use std::time::Instant;

use metrics::histogram;

use super::contend::Contender;
use super::LockKind;
use crate::base::error::{Error, Result};
use crate::base::held::HeldSince;
use crate::base::metrics as m;
use crate::lease::Op;
use crate::redis::{scripts, Reply};
use crate::session::Session;

/// rev, leases, queue, the session's attachment set: the KEYS of the lock scripts.
pub(crate) fn lock_keys(session: &Session, queue: &str) -> Vec<String> {
    let k = &session.keys();
    vec![
        k.rev(),
        k.leases(),
        queue.to_owned(),
        k.attached(session.lease()),
    ]
}

/// Background removal of `contender`'s entry (at `revision`, 0 = any) from `queue`, a `kind`
/// queue.
pub(crate) fn release_op(
    session: &Session,
    kind: LockKind,
    queue: &str,
    contender: &str,
    revision: u64,
) -> Op {
    Op::Cleanup {
        ns: session.shared().core().clone(),
        script: kind.release_script(),
        keys: lock_keys(session, queue),
        args: vec![
            session.lease().to_string(),
            contender.to_owned(),
            revision.to_string(),
        ],
        retry_for: session.ttl(),
    }
}

/// The methods every lock guard shares, for a guard with an `entry: Entry` field.
macro_rules! entry_guard_methods {
    () => {
        /// The fencing token: the revision at which this request queued, greater than that of
        /// every earlier holder it excludes, also across Redis restarts (as long as the server
        /// clock does not step back).
        pub fn fencing_token(&self) -> u64 {
            self.entry.token
        }

        /// True while the session is locally valid (the hold cannot have passed to anyone
        /// else).
        pub fn is_valid(&self) -> bool {
            self.entry.session.is_valid()
        }

        /// Resolves when the session ends, and with it the right to act as the holder.
        pub async fn lost(&self) -> $crate::SessionEnd {
            self.entry.session.done().await
        }

        /// Ask the server whether this guard still holds (its entry is among the owners of
        /// the queue, at its own revision).
        pub async fn is_owner(&self) -> $crate::Result<bool> {
            self.entry.is_owner().await
        }

        /// The entry that owns the lock (for transactions guarded by it).
        pub(crate) fn entry(&self) -> &$crate::wait::entry::Entry {
            &self.entry
        }
    };
}
pub(crate) use entry_guard_methods;

/// An entry that owns its lock queue: what every lock guard holds. Released in the
/// background when dropped.
pub(crate) struct Entry {
    pub(crate) session: Session,
    pub(crate) queue: String,
    pub(crate) contender: String,
    pub(crate) token: u64,
    acquired: Instant,
    /// Its place among the client's held locks (the oldest-held gauge) until it drops.
    _held: HeldSince,
    kind: LockKind,
    released: bool,
    /// Still in the session's entry count.
    counted: bool,
}

impl Entry {
    /// The entry of `contender`, which owns at `token`.
    pub(crate) fn new(contender: Contender<'_>, token: u64) -> Entry {
        let acquired = Instant::now();
        let held = contender
            .session
            .shared()
            .held
            .insert(contender.kind.label(), acquired);
        Entry {
            session: contender.session.clone(),
            queue: contender.queue.to_owned(),
            contender: contender.id,
            token,
            acquired,
            _held: held,
            kind: contender.kind,
            released: false,
            counted: contender.kind.counted(),
        }
    }

    /// Ask the server whether this entry still owns its lock.
    pub(crate) async fn is_owner(&self) -> Result<bool> {
        let client = &self.session.shared();
        let mut keys = lock_keys(&self.session, &self.queue);
        keys.pop();
        let args = vec![self.contender.clone(), self.token.to_string()];
        let v = client.conn.eval(&scripts::LOCK_CHECK, keys, args).await?;
        let r = Reply::new("lock check");
        let items = r.array_min(v, 1)?;
        Ok(r.int(&items[0])? == 1)
    }

    /// Release now. `Ok(false)`: it was no longer held. On error the release is retried in
    /// the background when the entry drops.
    #[tracing::instrument(
        name = "leasehold.release",
        level = "debug",
        skip_all,
        fields(
            kind = self.kind.label(),
            queue = %self.queue,
            contender = %self.contender,
            fencing_token = self.token,
            held_ms = self.acquired.elapsed().as_millis() as u64,
        )
    )]
    pub(crate) async fn release(&mut self) -> Result<bool> {
        // Out of the count before the release is sent: counted low, never high.
        self.uncount();
        let script = self.kind.release_script();
        let client = &self.session.shared();
        let args = vec![
            self.session.lease().to_string(),
            self.contender.clone(),
            self.token.to_string(),
        ];
        let v = client
            .conn
            .eval(script, lock_keys(&self.session, &self.queue), args)
            .await?;
        self.released = true;
        Ok(Reply::new("lock release").int(&v)? == 1)
    }

    /// The lock's name (its queue key is `{ns}:<kind>:<name>`; neither part has a `:`).
    pub(crate) fn name(&self) -> &str {
        self.queue.splitn(3, ':').nth(2).unwrap_or_default()
    }

    /// The error for a release that found the entry no longer held.
    pub(crate) fn not_held(&self, name: &str) -> Error {
        Error::NotHeld {
            namespace: self.session.namespace().to_owned(),
            kind: self.kind.label(),
            name: name.to_owned(),
            fencing_token: self.token,
        }
    }

    /// Release, reporting [`Error::NotHeld`] when it was no longer held.
    pub(crate) async fn unlock(&mut self, name: &str) -> Result<()> {
        if self.release().await? {
            Ok(())
        } else {
            Err(self.not_held(name))
        }
    }
}

impl Entry {
    fn uncount(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.session.entries().sub();
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.uncount();
        histogram!(m::LOCK_HOLD, "kind" => self.kind.label())
            .record(self.acquired.elapsed().as_secs_f64());
        if !self.released {
            self.session.send(release_op(
                &self.session,
                self.kind,
                &self.queue,
                &self.contender,
                self.token,
            ));
        }
    }
}
