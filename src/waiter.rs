//! The wait engine shared by every queue-based primitive (mutex, rwlock, semaphore, election),
//! and the held entry behind their guards.
//!
//! A contender registers with the client's doorbell *before* asking the server, then asks;
//! while it must wait, it sleeps until its doorbell rings, until the lease of whoever blocks it
//! would expire, or until its own session ends, and asks again. A mutex waiter whose ring says
//! it owns (`o`, sent by the script that handed the lock over) does not ask again: that saves
//! a round trip per handoff. A lost ring only delays. Dropping the wait (or failing) withdraws
//! the entry in the background.

use std::time::{Duration, Instant};

use metrics::{counter, histogram};

use crate::error::{Error, Result};
use crate::metrics as m;
use crate::names::MAX_TTL;
use crate::reply::Reply;
use crate::script::{script, LuaScript};
use crate::session::{Session, SessionEnd};
use crate::supervisor::Op;

/// What a server-side check said about a contender.
pub(crate) enum Turn {
    /// It owns; the revision is its fencing token.
    Held(u64),
    /// It waits; whoever blocks it has this long left on their lease. The revision is its
    /// fencing token should an `o` ring say it owns (queues whose reply carries one).
    Wait(Duration, Option<u64>),
    /// A try found it taken; nothing was queued.
    Refused,
    /// A re-check found the entry removed by someone else (its lease revoked or adopted by
    /// another process): the wait is over.
    Gone,
    /// Its own lease is not alive.
    Lost,
}

/// Parse the common `{'held', rev} | {'wait', rev, ms} | {'locked', ...} | {'lost'}` replies
/// (mutex: `{'wait', rev, head, ms}`).
pub(crate) fn parse_turn(op: &'static str, v: fred::types::Value) -> Result<Turn> {
    let r = Reply::new(op);
    let items = r.array_min(v, 1)?;
    match r.string(&items[0])?.as_str() {
        "held" | "leader" if items.len() >= 2 => Ok(Turn::Held(r.uint(&items[1])?)),
        "wait" if items.len() >= 3 => {
            let ms = items.last().map(|v| r.uint(v)).transpose()?.unwrap_or(0);
            Ok(Turn::Wait(
                Duration::from_millis(ms),
                r.uint(&items[1]).ok(),
            ))
        }
        "locked" => Ok(Turn::Refused),
        "gone" => Ok(Turn::Gone),
        "lost" => Ok(Turn::Lost),
        other => Err(r.bad(format!("unknown status {other:?}"))),
    }
}

/// Wait for `contender`'s turn. `ask(recheck)` runs the check script; `withdraw` builds the
/// cleanup that removes the entry if the wait is dropped or fails. Returns `Ok(None)` when
/// refused. With `owner_rings`, an `o` ring (a mutex handed over to this contender) is taken
/// as ownership at the revision of the last `Wait`, saving the re-check's round trip.
pub(crate) async fn contend<A, F>(
    session: &Session,
    contender: &str,
    kind: &'static str,
    owner_rings: bool,
    withdraw: impl Fn() -> Op,
    mut ask: A,
) -> Result<Option<u64>>
where
    A: FnMut(bool) -> F,
    F: std::future::Future<Output = Result<Turn>>,
{
    session.check()?;
    let client = &session.inner.client.inner;
    // Registered before the first call, so a ring that comes before we wait is kept.
    let ticket = client.doorbell.register(contender);
    let mut pending = Withdraw {
        session,
        withdraw: &withdraw,
        armed: true,
    };
    let started = Instant::now();
    let mut recheck = false;
    loop {
        let turn = tokio::select! {
            biased;
            end = session.done() => return Err(session.lost(end)),
            t = ask(recheck) => match t {
                Ok(t) => t,
                Err(e) => {
                    // The scripts raise these before their first write: a first ask that
                    // failed so queued nothing, and a withdrawal would only add a tombstone.
                    if !recheck && written_nothing(&e) {
                        pending.armed = false;
                    }
                    return Err(e);
                }
            },
        };
        let held = |token: u64, handed_over: bool, pending: &mut Withdraw<'_, _>| {
            pending.armed = false;
            histogram!(m::LOCK_WAIT, "kind" => kind).record(started.elapsed().as_secs_f64());
            if handed_over {
                counter!(m::LOCK_HANDOFFS, "kind" => kind).increment(1);
            }
            Ok(Some(token))
        };
        match turn {
            Turn::Held(token) => return held(token, recheck, &mut pending),
            Turn::Refused => {
                pending.armed = false;
                return Ok(None);
            }
            Turn::Lost => {
                session.mark_lost(SessionEnd::LeaseNotFound);
                return Err(session.lost(SessionEnd::LeaseNotFound));
            }
            Turn::Gone => {
                pending.armed = false;
                return Err(session.lost(SessionEnd::Revoked));
            }
            Turn::Wait(blocker_left, revision) => {
                recheck = true;
                // No lease outlives MAX_TTL; a larger figure (foreign data) must not overflow.
                let deadline =
                    Instant::now() + blocker_left.min(MAX_TTL) + Duration::from_millis(2);
                tokio::select! {
                    biased;
                    end = session.done() => return Err(session.lost(end)),
                    _ = ticket.rung() => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
                // The releasing script saw this entry at the head with its lease alive: it
                // owns, exactly as a re-check would have answered (the session's own validity
                // is what the guard goes by from here, as after any acquire).
                if let (true, true, Some(token)) = (owner_rings, ticket.told_owner(), revision) {
                    session.check()?;
                    return held(token, true, &mut pending);
                }
            }
        }
    }
}

/// Errors a script raises before its first write (see `lua/prelude.lua`).
pub(crate) fn written_nothing(e: &Error) -> bool {
    matches!(
        e,
        Error::WrongType { .. } | Error::CorruptData { .. } | Error::InvalidArgument(_)
    )
}

/// The acquire of every lock kind whose script answers a plain turn (mutex, rwlock): queue
/// `contender` on `queue` with `script` (ARGV: `args`, then the re-check flag) and wait for its
/// turn, withdrawing the entry if the wait is dropped or fails.
pub(crate) async fn acquire(
    session: &Session,
    queue: &str,
    contender: &str,
    kind: &'static str,
    script: &'static LuaScript,
    what: &'static str,
    args: Vec<String>,
) -> Result<Option<u64>> {
    let client = &session.inner.client.inner;
    // Only mutex queues get `o` rings. With Durability, a grant counts only once replicas have
    // it, which the re-check's WAIT makes sure of; a ring cannot.
    let owner_rings = kind == "mutex" && !client.conn.durable();
    contend(
        session,
        contender,
        kind,
        owner_rings,
        || release_op(session, queue, contender, 0, kind),
        |recheck| {
            let mut args = args.clone();
            args.push(if recheck { "1" } else { "0" }.to_owned());
            async move {
                let v = client
                    .conn
                    .eval(script, lock_keys(session, queue), args)
                    .await?;
                parse_turn(what, v)
            }
        },
    )
    .await
}

struct Withdraw<'a, W: Fn() -> Op> {
    session: &'a Session,
    withdraw: &'a W,
    armed: bool,
}

impl<W: Fn() -> Op> Drop for Withdraw<'_, W> {
    fn drop(&mut self) {
        if self.armed {
            self.session.inner.client.inner.send((self.withdraw)());
        }
    }
}

/// rev, leases, queue, the session's attachment set: the KEYS of the lock scripts.
pub(crate) fn lock_keys(session: &Session, queue: &str) -> Vec<String> {
    let k = &session.inner.client.inner.keys;
    vec![
        k.rev(),
        k.leases(),
        queue.to_owned(),
        k.attached(session.lease()),
    ]
}

/// The script that removes an entry from a `kind` queue: the mutex has its own lean one.
fn release_script(kind: &str) -> &'static LuaScript {
    if kind == "mutex" {
        script!(core "mutex_release")
    } else {
        script!("lock_release")
    }
}

/// Background removal of `contender`'s entry (at `revision`, 0 = any) from `queue`, a `kind`
/// queue.
pub(crate) fn release_op(
    session: &Session,
    queue: &str,
    contender: &str,
    revision: u64,
    kind: &str,
) -> Op {
    Op::Cleanup {
        script: release_script(kind),
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
    kind: &'static str,
    released: bool,
}

impl Entry {
    pub(crate) fn locked(session: &Session, kind: &'static str, name: &str) -> Error {
        Error::Locked {
            namespace: session.namespace().to_owned(),
            kind,
            name: name.to_owned(),
        }
    }

    pub(crate) fn new(
        session: &Session,
        queue: String,
        contender: String,
        token: u64,
        kind: &'static str,
    ) -> Entry {
        Entry {
            session: session.clone(),
            queue,
            contender,
            token,
            acquired: Instant::now(),
            kind,
            released: false,
        }
    }

    /// Ask the server whether this entry still owns its lock.
    pub(crate) async fn is_owner(&self) -> Result<bool> {
        let client = &self.session.inner.client.inner;
        let mut keys = lock_keys(&self.session, &self.queue);
        keys.pop();
        let args = vec![self.contender.clone(), self.token.to_string()];
        let v = client.conn.eval(script!("lock_check"), keys, args).await?;
        let r = Reply::new("lock check");
        let items = r.array_min(v, 1)?;
        Ok(r.int(&items[0])? == 1)
    }

    /// Release now. `Ok(false)`: it was no longer held. On error the release is retried in
    /// the background when the entry drops.
    pub(crate) async fn release(&mut self) -> Result<bool> {
        let script = release_script(self.kind);
        let client = &self.session.inner.client.inner;
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

    /// The error for a release that found the entry no longer held.
    pub(crate) fn not_held(&self, name: &str) -> Error {
        Error::NotHeld {
            namespace: self.session.namespace().to_owned(),
            kind: self.kind,
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

impl Drop for Entry {
    fn drop(&mut self) {
        histogram!(m::LOCK_HOLD, "kind" => self.kind).record(self.acquired.elapsed().as_secs_f64());
        if !self.released {
            self.session.inner.client.inner.send(release_op(
                &self.session,
                &self.queue,
                &self.contender,
                self.token,
                self.kind,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fred::types::Value;

    #[test]
    fn turn_replies_are_checked() {
        let s = |x: &str| Value::String(x.into());
        let turn = |items: Vec<Value>| parse_turn("test", Value::Array(items));
        assert!(matches!(
            turn(vec![s("held"), Value::Integer(7)]),
            Ok(Turn::Held(7))
        ));
        assert!(matches!(
            turn(vec![s("leader"), Value::Integer(7)]),
            Ok(Turn::Held(7))
        ));
        assert!(matches!(
            turn(vec![s("wait"), Value::Integer(7), s("x"), Value::Integer(5)]),
            Ok(Turn::Wait(d, Some(7))) if d == Duration::from_millis(5)
        ));
        assert!(matches!(
            turn(vec![s("wait"), Value::Integer(7), Value::Integer(9)]),
            Ok(Turn::Wait(d, Some(7))) if d == Duration::from_millis(9)
        ));
        assert!(matches!(
            turn(vec![s("locked"), Value::Integer(0)]),
            Ok(Turn::Refused)
        ));
        assert!(matches!(turn(vec![s("gone")]), Ok(Turn::Gone)));
        assert!(matches!(turn(vec![s("lost")]), Ok(Turn::Lost)));
        assert!(turn(vec![s("held")]).is_err());
        assert!(turn(vec![s("held"), Value::Integer(-1)]).is_err());
        assert!(turn(vec![s("wait"), Value::Integer(1), Value::Integer(-5)]).is_err());
        assert!(turn(vec![s("?")]).is_err());
        assert!(parse_turn("test", Value::Null).is_err());
    }
}
