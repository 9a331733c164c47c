//! Waiting for a turn: the one loop behind every queue-based primitive (mutex, rwlock,
//! semaphore, election campaign, double barrier).
//!
//! A contender arranges to be woken *before* it asks the server (its own doorbell ring, or a
//! shared channel it watches), then asks; while it must wait, it sleeps until it is woken,
//! until the lease of whoever blocks it would expire, or until its own session ends, and asks
//! again. A mutex waiter whose ring says it owns (`o`, sent by the script that handed the lock
//! over) does not ask again: that saves a round trip per handoff. A lost ring only delays.
//!
//! # Cancel safety
//!
//! Dropping the wait, or any failure after the first request may have queued the contender,
//! withdraws the entry in the background (the supervisor retries it while Redis is
//! unreachable). A first request that failed with an error the scripts raise before their
//! first write ([`written_nothing`]) leaves nothing to withdraw.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use fred::types::Value;
use metrics::{counter, histogram};

use super::entry::{lock_keys, release_op, Entry};
use super::LockKind;
use crate::base::error::{Error, Result};
use crate::base::limits::MAX_TTL;
use crate::base::metrics as m;
use crate::base::session_state::SessionEnd;
use crate::lease::Op;
use crate::redis::doorbell::{ChannelTicket, Ticket};
use crate::redis::{LuaScript, Reply};
use crate::session::Session;

/// Longest sleep of a wait woken by a shared channel: bounds the delay a lost message causes.
pub(crate) const RECHECK: Duration = Duration::from_secs(30);

/// How long a wait woken by a shared channel sleeps before asking again: until the lease that
/// blocks it would have expired on the server (plus 2 ms for the server's clock to pass it), at
/// most [`RECHECK`].
pub(crate) fn until_expiry(blocker_left: Duration) -> Duration {
    (blocker_left + Duration::from_millis(2)).min(RECHECK)
}

/// As [`until_expiry`], for replies where zero means that no lease blocks: then [`RECHECK`].
pub(crate) fn recheck_after(blocker_left: Duration) -> Duration {
    if blocker_left.is_zero() {
        RECHECK
    } else {
        until_expiry(blocker_left)
    }
}

/// What a server-side check said about a contender. `X` is a primitive's own answer, if it
/// has one.
pub(crate) enum Turn<X = Infallible> {
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
    /// The primitive's own answer (a semaphore of another size, a full double barrier, a
    /// withdrawn candidacy): the wait ends with it, and the script queued nothing.
    Other(X),
}

/// How a wait ended, when it did not fail.
pub(crate) enum Won<X = Infallible> {
    /// Owns, with this fencing token.
    Held(u64),
    /// A try found it taken; nothing was queued.
    Refused,
    /// The primitive's own answer; nothing stays queued.
    Other(X),
}

/// Parse the common `{'held', rev} | {'wait', rev, ms} | {'locked', ...} | {'lost'}` replies
/// (mutex: `{'wait', rev, head, ms}`).
pub(crate) fn parse_turn<X>(op: &'static str, v: Value) -> Result<Turn<X>> {
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

/// Errors a script raises before its first write (see `lua/prelude/core.lua`).
pub(crate) fn written_nothing(e: &Error) -> bool {
    matches!(
        e,
        Error::WrongType { .. } | Error::CorruptData { .. } | Error::InvalidArgument(_)
    )
}

/// What wakes a waiting contender.
pub(crate) enum Wake {
    /// Its own doorbell ring (`c` or `o` with its contender id), registered by [`contend`].
    Ring,
    /// A message on a shared channel the caller already watches (a double barrier's changes).
    Channel(ChannelTicket),
}

/// One contender of one queue.
pub(crate) struct Contender<'a> {
    pub(crate) session: &'a Session,
    pub(crate) kind: LockKind,
    /// The queue's key.
    pub(crate) queue: &'a str,
    /// The contender id: `<lease id>.<tag><random>`.
    pub(crate) id: String,
}

impl<'a> Contender<'a> {
    /// A new contender of `queue` for `session`; `tag` goes into its id (e.g. `r`/`w` for a
    /// rwlock, the permit count for a semaphore).
    pub(crate) fn new(session: &'a Session, kind: LockKind, queue: &'a str, tag: &str) -> Self {
        Contender {
            session,
            kind,
            queue,
            id: session.new_contender(tag),
        }
    }

    /// The cleanup that removes this contender's entry, whatever its revision.
    pub(crate) fn withdrawal(&self) -> Op {
        release_op(self.session, self.kind, self.queue, &self.id, 0)
    }

    /// Wait for this contender's turn. `ask(recheck)` runs the check script (`recheck` is
    /// false only for the first request, which queues); `withdraw` is the cleanup that removes
    /// the entry if the wait is dropped or fails.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future withdraws the entry in the background; see the module docs.
    #[tracing::instrument(
        name = "leasehold.acquire",
        level = "debug",
        skip_all,
        fields(
            kind = self.kind.label(),
            namespace = self.session.namespace(),
            queue = self.queue,
            lease = %self.session.lease(),
            contender = %self.id,
            fencing_token = tracing::field::Empty,
            waited_ms = tracing::field::Empty,
        )
    )]
    pub(crate) async fn contend<X, A, F>(
        &self,
        wake: Wake,
        withdraw: impl Fn() -> Op,
        mut ask: A,
    ) -> Result<Won<X>>
    where
        A: FnMut(bool) -> F,
        F: std::future::Future<Output = Result<Turn<X>>>,
    {
        let session = self.session;
        session.check()?;
        // A spread session's sub-lease here, granted if need be, and kept while this runs.
        let _pin = session.touch().await?;
        // Registered before the first request, so a ring that comes before we wait is kept.
        let mut wake = match wake {
            Wake::Ring => Waker::Ring(session.shared().doorbell.register(&self.id)),
            Wake::Channel(ticket) => Waker::Channel(ticket),
        };
        // With Durability, a grant counts only once replicas have it, which the re-check's WAIT
        // makes sure of; a ring cannot.
        let owner_rings = self.kind.owner_rings() && !session.shared().conn.durable();
        let mut pending = Withdraw {
            session,
            withdraw: &withdraw,
            armed: true,
            counted: false,
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
                        // The scripts raise these before their first write: a first request
                        // that failed so queued nothing, and a withdrawal would only add a
                        // tombstone.
                        if !recheck && written_nothing(&e) {
                            pending.armed = false;
                        }
                        return Err(e);
                    }
                },
            };
            // The first answer that queued: the entry exists, count it for the session.
            if !recheck && self.kind.counted() && matches!(turn, Turn::Held(_) | Turn::Wait(..)) {
                pending.count();
            }
            match turn {
                Turn::Held(token) => return Ok(self.held(token, recheck, started, &mut pending)),
                Turn::Refused => {
                    pending.armed = false;
                    return Ok(Won::Refused);
                }
                Turn::Other(x) => {
                    pending.armed = false;
                    return Ok(Won::Other(x));
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
                    tokio::select! {
                        biased;
                        end = session.done() => return Err(session.lost(end)),
                        _ = wake.woken(blocker_left) => {}
                    }
                    // The releasing script saw this entry, at its own revision, at the head
                    // with its lease alive: it owns, exactly as a re-check would have answered
                    // (the session's own validity is what the guard goes by from here, as after
                    // any acquire). A ring naming another revision (stray, stale, forged) only
                    // makes it ask again.
                    if let (true, Some(told), Some(token)) =
                        (owner_rings, wake.told_owner(), revision)
                    {
                        if told == token {
                            session.check()?;
                            return Ok(self.held(token, true, started, &mut pending));
                        }
                    }
                }
            }
        }
    }

    fn held<X>(
        &self,
        token: u64,
        handed_over: bool,
        started: Instant,
        pending: &mut Withdraw<'_, impl Fn() -> Op>,
    ) -> Won<X> {
        pending.armed = false;
        // The entry's count passes to the `Entry` the caller builds.
        pending.counted = false;
        let waited = started.elapsed();
        let span = tracing::Span::current();
        span.record("fencing_token", token);
        span.record("waited_ms", waited.as_millis() as u64);
        tracing::debug!(handed_over, "acquired");
        if let Some(label) = self.kind.wait_metrics_label() {
            histogram!(m::LOCK_WAIT, "kind" => label).record(started.elapsed().as_secs_f64());
            if handed_over {
                counter!(m::LOCK_HANDOFFS, "kind" => label).increment(1);
            }
        }
        if let Some(k) = self.session.sub_index() {
            counter!(m::SPREAD_ACQUISITIONS, "sub" => k.to_string()).increment(1);
        }
        Won::Held(token)
    }

    /// The acquire of every lock kind whose script answers a plain turn (mutex, rwlock): queue
    /// for the lock `name` with `script` (ARGV: lease, contender, try flag, re-check flag) and
    /// wait for the turn. With `try_only`, [`Error::Locked`] when it is taken.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future withdraws the entry in the background.
    pub(crate) async fn lock(
        self,
        name: &str,
        script: &'static LuaScript,
        try_only: bool,
    ) -> Result<Entry> {
        let session = self.session;
        let args = vec![
            session.lease().to_string(),
            self.id.clone(),
            if try_only { "1" } else { "0" }.to_owned(),
        ];
        match self.acquire(script, args).await? {
            Some(token) => Ok(Entry::new(self, token)),
            None => Err(self.kind.locked(session, name)),
        }
    }

    /// Queue with `script` (ARGV: `args`, then the re-check flag) and wait for the turn.
    /// `None`: a try found it taken.
    async fn acquire(&self, script: &'static LuaScript, args: Vec<String>) -> Result<Option<u64>> {
        let conn = &self.session.shared().conn;
        let won = self
            .contend::<Infallible, _, _>(
                Wake::Ring,
                || self.withdrawal(),
                |recheck| {
                    let mut args = args.clone();
                    args.push(if recheck { "1" } else { "0" }.to_owned());
                    async move {
                        let v = conn
                            .eval(script, lock_keys(self.session, self.queue), args)
                            .await?;
                        parse_turn(self.kind.acquire_op(), v)
                    }
                },
            )
            .await?;
        Ok(match won {
            Won::Held(token) => Some(token),
            Won::Refused => None,
            Won::Other(never) => match never {},
        })
    }
}

/// What a waiting contender sleeps on.
enum Waker {
    Ring(Ticket),
    Channel(ChannelTicket),
}

impl Waker {
    /// Resolves when woken, or when the blocking lease would have expired.
    async fn woken(&mut self, blocker_left: Duration) {
        match self {
            Waker::Ring(ticket) => {
                // No lease outlives MAX_TTL; a larger figure (foreign data) must not overflow.
                let deadline =
                    Instant::now() + blocker_left.min(MAX_TTL) + Duration::from_millis(2);
                tokio::select! {
                    _ = ticket.rung() => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
            Waker::Channel(ticket) => ticket.changed_within(recheck_after(blocker_left)).await,
        }
    }

    fn told_owner(&self) -> Option<u64> {
        match self {
            Waker::Ring(ticket) => ticket.told_owner(),
            Waker::Channel(_) => None,
        }
    }
}

/// Sends the withdrawal when dropped while armed, and takes the entry out of the session's
/// count if it was counted and not handed to an `Entry`.
struct Withdraw<'a, W: Fn() -> Op> {
    session: &'a Session,
    withdraw: &'a W,
    armed: bool,
    counted: bool,
}

impl<W: Fn() -> Op> Withdraw<'_, W> {
    fn count(&mut self) {
        self.session.entries().add();
        self.counted = true;
    }
}

impl<W: Fn() -> Op> Drop for Withdraw<'_, W> {
    fn drop(&mut self) {
        if self.counted {
            self.session.entries().sub();
        }
        if self.armed {
            self.session.send((self.withdraw)());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_replies_are_checked() {
        let s = |x: &str| Value::String(x.into());
        let turn = |items: Vec<Value>| parse_turn::<Infallible>("test", Value::Array(items));
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
        assert!(parse_turn::<Infallible>("test", Value::Null).is_err());
    }

    #[test]
    fn a_channel_wait_sleeps_until_the_blocker_expires_and_at_most_recheck() {
        assert_eq!(recheck_after(Duration::ZERO), RECHECK);
        assert_eq!(
            recheck_after(Duration::from_millis(100)),
            Duration::from_millis(102)
        );
        assert_eq!(recheck_after(RECHECK), RECHECK);
        assert_eq!(recheck_after(MAX_TTL), RECHECK);
        assert_eq!(until_expiry(Duration::ZERO), Duration::from_millis(2));
        assert_eq!(until_expiry(MAX_TTL), RECHECK);
    }
}
