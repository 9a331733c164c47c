//! A fair, fenced mutex attached to a session (etcd's `concurrency.Mutex`, with its sharp
//! edges removed). Scripts: `lua/mutex_acquire.lua`, `lua/mutex_release.lua`,
//! `lua/mutex_check.lua`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::types::Value;
use metrics::{counter, histogram};

use crate::error::{Error, Result};
use crate::names::check_name;
use crate::reply::Reply;
use crate::script::{script, LuaScript};
use crate::session::{Session, SessionEnd};
use crate::supervisor::Op;

/// A mutex named `name` in the session's namespace: a FIFO queue of contenders ordered by
/// revision (`{ns}:mutex:<name>`); the first contender whose lease is alive owns it.
///
/// - **Fair**: contenders acquire in the order they called [`lock`](Self::lock).
/// - **Fenced**: every acquisition carries a [fencing token](MutexGuard::fencing_token) greater
///   than every earlier holder's; pass it to the resource you protect and have it reject
///   lower tokens.
/// - **Per call, not per session**: tasks sharing one session exclude each other.
/// - **No polling**: a waiter sleeps until the releasing script rings its client's doorbell, or
///   until the holder's lease would expire, whichever comes first.
///
/// ```no_run
/// # async fn demo(session: leasehold::Session) -> leasehold::Result<()> {
/// let mutex = session.mutex("nightly-report")?;
/// let guard = mutex.lock().await?;
/// // ... write to storage with guard.fencing_token() ...
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Mutex {
    session: Session,
    name: Arc<str>,
    key: Arc<str>,
}

impl fmt::Debug for Mutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("key", &self.key)
            .field("lease", &self.session.lease())
            .finish()
    }
}

enum Acquire {
    Held(u64),
    Wait { head_left: Duration },
    Locked,
    Lost,
}

impl Mutex {
    /// The mutex `name` (non-empty, at most [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes) for
    /// `session`. No I/O happens until [`lock`](Self::lock).
    pub fn new(session: &Session, name: &str) -> Result<Mutex> {
        check_name(session.namespace(), "mutex", name)?;
        let key = session.inner.client.inner.keys.mutex(name);
        Ok(Mutex {
            session: session.clone(),
            name: name.into(),
            key: key.into(),
        })
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Redis key of the queue, `{ns}:mutex:<name>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The session the mutex is attached to.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Wait for the lock, in FIFO order.
    ///
    /// Returns [`Error::SessionLost`] as soon as this session ends while waiting (the queue
    /// entry goes with it and does not block the next waiter).
    ///
    /// **Cancel safe**: dropping the future withdraws its queue entry in the background; if it
    /// had just become the owner, the lock passes on to the next waiter.
    pub async fn lock(&self) -> Result<MutexGuard> {
        self.acquire(false).await
    }

    /// Take the lock only if nobody holds it or waits for it; otherwise [`Error::Locked`]
    /// without queueing. Cancel safe as [`lock`](Self::lock).
    pub async fn try_lock(&self) -> Result<MutexGuard> {
        self.acquire(true).await
    }

    fn keys(&self) -> Vec<String> {
        let k = &self.session.inner.client.inner.keys;
        vec![
            k.rev(),
            k.leases(),
            self.key.to_string(),
            k.attached(self.session.lease()),
        ]
    }

    /// Ask the supervisor to remove `contender`'s entry (at `revision`, 0 = any).
    fn release_in_background(&self, contender: &str, revision: u64) {
        let client = &self.session.inner.client.inner;
        client.send(Op::Cleanup {
            script: script!("mutex_release"),
            keys: self.keys(),
            args: self.release_args(contender, revision),
            retry_for: self.session.ttl(),
        });
    }

    fn release_args(&self, contender: &str, revision: u64) -> Vec<String> {
        vec![
            self.session.lease().to_string(),
            contender.to_owned(),
            revision.to_string(),
        ]
    }

    async fn acquire(&self, try_only: bool) -> Result<MutexGuard> {
        let session = &self.session;
        session.check()?;
        let client = &session.inner.client.inner;
        let contender = session.new_contender();
        // Registered before the first call, so a ring that comes before we wait is kept.
        let ticket = client.doorbell.register(&contender);
        let mut withdraw = Withdraw {
            mutex: self,
            contender: &contender,
            armed: true,
        };
        let started = Instant::now();
        let mut waited = false;
        let args = vec![
            session.lease().to_string(),
            contender.clone(),
            if try_only { "1" } else { "0" }.to_owned(),
        ];
        loop {
            let reply = tokio::select! {
                biased;
                end = session.done() => return Err(session.lost(end)),
                r = client.conn.eval(script!("mutex_acquire"), self.keys(), args.clone()) => r?,
            };
            match parse_acquire(reply)? {
                Acquire::Held(token) => {
                    withdraw.armed = false;
                    histogram!(crate::metrics::LOCK_WAIT, "kind" => "mutex")
                        .record(started.elapsed().as_secs_f64());
                    if waited {
                        counter!(crate::metrics::LOCK_HANDOFFS, "kind" => "mutex").increment(1);
                    }
                    return Ok(MutexGuard {
                        mutex: self.clone(),
                        contender: contender.clone(),
                        token,
                        acquired: Instant::now(),
                        released: false,
                    });
                }
                Acquire::Locked => {
                    withdraw.armed = false;
                    return Err(Error::Locked {
                        namespace: session.namespace().to_owned(),
                        name: self.name.to_string(),
                    });
                }
                Acquire::Lost => {
                    session.mark_lost(SessionEnd::LeaseNotFound);
                    return Err(session.lost(SessionEnd::LeaseNotFound));
                }
                Acquire::Wait { head_left } => {
                    waited = true;
                    // Wake when rung, or just after the holder's lease would expire (then the
                    // next call finds it dead and moves on), or when our own session ends.
                    let deadline = Instant::now() + head_left + Duration::from_millis(2);
                    tokio::select! {
                        biased;
                        end = session.done() => return Err(session.lost(end)),
                        _ = ticket.rung() => {}
                        _ = tokio::time::sleep_until(deadline.into()) => {}
                    }
                }
            }
        }
    }
}

/// Withdraws a pending queue entry when `lock()` is dropped or fails.
struct Withdraw<'a> {
    mutex: &'a Mutex,
    contender: &'a str,
    armed: bool,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.mutex.release_in_background(self.contender, 0);
        }
    }
}

fn parse_acquire(v: Value) -> Result<Acquire> {
    let r = Reply::new("mutex acquire");
    let items = r.array_min(v, 1)?;
    match r.string(&items[0])?.as_str() {
        "held" if items.len() >= 2 => Ok(Acquire::Held(r.uint(&items[1])?)),
        "wait" if items.len() >= 4 => Ok(Acquire::Wait {
            head_left: Duration::from_millis(r.uint(&items[3])?),
        }),
        "locked" => Ok(Acquire::Locked),
        "lost" => Ok(Acquire::Lost),
        other => Err(r.bad(format!("unknown status {other:?}"))),
    }
}

/// Proof of holding a [`Mutex`], while the session lasts.
///
/// Dropping the guard releases the lock in the background; [`unlock`](Self::unlock) releases
/// it and reports whether it was still held. The guard keeps its session alive.
///
/// Holding a guard means "held as long as the session is valid": if the session ends
/// ([`Session::done`]), the lock may pass to someone else at any moment after. Protect the
/// resource itself with the [fencing token](Self::fencing_token).
#[must_use = "dropping the guard releases the lock"]
pub struct MutexGuard {
    mutex: Mutex,
    contender: String,
    token: u64,
    acquired: Instant,
    released: bool,
}

impl fmt::Debug for MutexGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard")
            .field("key", &self.mutex.key)
            .field("fencing_token", &self.token)
            .finish()
    }
}

impl MutexGuard {
    /// The fencing token: the revision at which this contender queued. Strictly greater than
    /// that of every earlier holder of this mutex, also across Redis restarts (as long as the
    /// server clock does not step back).
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// The Redis key of the mutex queue.
    pub fn key(&self) -> &str {
        &self.mutex.key
    }

    /// The mutex this guard holds.
    pub fn mutex(&self) -> &Mutex {
        &self.mutex
    }

    /// The session the lock is attached to.
    pub fn session(&self) -> &Session {
        &self.mutex.session
    }

    /// True while the session is locally valid (the lock cannot have passed to anyone else).
    pub fn is_valid(&self) -> bool {
        self.mutex.session.is_valid()
    }

    /// Resolves when the session ends, and with it the right to act as the holder.
    pub async fn lost(&self) -> SessionEnd {
        self.mutex.session.done().await
    }

    /// Ask the server whether this guard still owns the lock (its entry is the first live
    /// entry of the queue, at its own revision).
    pub async fn is_owner(&self) -> Result<bool> {
        let client = &self.mutex.session.inner.client.inner;
        let k = &client.keys;
        let keys = vec![k.rev(), k.leases(), self.mutex.key.to_string()];
        let args = vec![self.contender.clone(), self.token.to_string()];
        let v = client.conn.eval(script!("mutex_check"), keys, args).await?;
        let r = Reply::new("mutex check");
        let items = r.array_min(v, 1)?;
        Ok(r.int(&items[0])? == 1)
    }

    /// Release the lock and hand it to the next waiter. [`Error::NotHeld`] when it was no
    /// longer held (the lease ran out or was revoked); the newer holder is never disturbed.
    /// On a Redis error the release is retried in the background.
    pub async fn unlock(mut self) -> Result<()> {
        let v = self.release(script!("mutex_release")).await?;
        self.released = true;
        if Reply::new("mutex release").int(&v)? == 1 {
            Ok(())
        } else {
            Err(Error::NotHeld {
                namespace: self.mutex.session.namespace().to_owned(),
                name: self.mutex.name.to_string(),
                fencing_token: self.token,
            })
        }
    }

    async fn release(&self, script: &LuaScript) -> Result<Value> {
        let client = &self.mutex.session.inner.client.inner;
        let args = self.mutex.release_args(&self.contender, self.token);
        client.conn.eval(script, self.mutex.keys(), args).await
    }
}

impl Drop for MutexGuard {
    fn drop(&mut self) {
        histogram!(crate::metrics::LOCK_HOLD, "kind" => "mutex")
            .record(self.acquired.elapsed().as_secs_f64());
        if !self.released {
            self.mutex
                .release_in_background(&self.contender, self.token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_replies_are_checked() {
        let s = |x: &str| Value::String(x.into());
        assert!(matches!(
            parse_acquire(Value::Array(vec![s("held"), Value::Integer(7)])),
            Ok(Acquire::Held(7))
        ));
        assert!(matches!(
            parse_acquire(Value::Array(vec![
                s("wait"),
                Value::Integer(7),
                s("x"),
                Value::Integer(5)
            ])),
            Ok(Acquire::Wait { .. })
        ));
        assert!(parse_acquire(Value::Array(vec![s("held")])).is_err());
        assert!(parse_acquire(Value::Array(vec![s("held"), Value::Integer(-1)])).is_err());
        assert!(parse_acquire(Value::Array(vec![s("?")])).is_err());
        assert!(parse_acquire(Value::Null).is_err());
    }
}
