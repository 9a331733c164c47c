//! A barrier (etcd's `recipe.Barrier`): `wait` blocks while it is held. Scripts:
//! `lua/recipes/barrier_hold.lua`, `lua/recipes/barrier_release.lua`,
//! `lua/recipes/barrier_check.lua`.

use std::time::Duration;

use crate::base::error::{Error, Result};
use crate::base::limits::check_name;
use crate::base::session_state::SessionEnd;
use crate::redis::{scripts, Reply};
use crate::session::Session;
use crate::wait::contend::until_expiry;

const KIND: &str = "barrier";

/// A barrier named `name` (`{ns}:barrier:<name>`): [`hold`](Self::hold) raises it,
/// [`release`](Self::release) lowers it, and [`wait`](Self::wait) blocks while it is raised.
///
/// Unlike etcd's, the hold is attached to the holder's session: if the holder's session ends
/// (a crash included), the barrier is released as if `release` had been called, so a dead
/// coordinator cannot block its workers forever.
///
/// ```no_run
/// # async fn demo(coordinator: leasehold::Session, worker: leasehold::Session) -> leasehold::Result<()> {
/// coordinator.barrier("deploy")?.hold().await?;
/// // workers:
/// let barrier = worker.barrier("deploy")?;
/// # tokio::spawn(async move { coordinator.barrier("deploy").unwrap().release().await });
/// barrier.wait().await?; // returns once the coordinator releases
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Barrier {
    session: Session,
    name: String,
}

impl Barrier {
    /// The barrier `name` (non-empty, at most [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes) for
    /// `session`. No I/O happens here.
    pub fn new(session: &Session, name: &str) -> Result<Barrier> {
        check_name(session.namespace(), KIND, name)?;
        Ok(Barrier {
            session: session.for_name(name),
            name: name.to_owned(),
        })
    }

    fn keys(&self) -> Vec<String> {
        let k = &self.session.keys();
        vec![k.rev(), k.leases(), k.barrier(&self.name)]
    }

    /// Raise the barrier. [`Error::Locked`] when someone else holds it; holding it again with
    /// the same session is a no-op.
    pub async fn hold(&self) -> Result<()> {
        self.session.check()?;
        let _pin = self.session.touch().await?;
        let client = &self.session.shared();
        let mut keys = self.keys();
        keys.push(client.keys.attached(self.session.lease()));
        let v = client
            .conn
            .eval(
                &scripts::BARRIER_HOLD,
                keys,
                vec![self.session.lease().to_string()],
            )
            .await?;
        let r = Reply::new("barrier hold");
        if let fred::types::Value::Array(_) = v {
            self.session.mark_lost(SessionEnd::LeaseNotFound);
            return Err(self.session.lost(SessionEnd::LeaseNotFound));
        }
        if r.int(&v)? == 1 {
            Ok(())
        } else {
            Err(Error::Locked {
                namespace: self.session.namespace().to_owned(),
                kind: KIND,
                name: self.name.clone(),
            })
        }
    }

    /// Lower the barrier (whoever holds it); every waiter returns. Returns whether it was held.
    pub async fn release(&self) -> Result<bool> {
        let client = &self.session.shared();
        let v = client
            .conn
            .eval(&scripts::BARRIER_RELEASE, self.keys(), vec![])
            .await?;
        Ok(Reply::new("barrier release").int(&v)? == 1)
    }

    /// Is the barrier held right now?
    pub async fn is_held(&self) -> Result<bool> {
        Ok(self.check().await?.is_some())
    }

    /// `Some(time left on the holder's lease)` while held.
    async fn check(&self) -> Result<Option<Duration>> {
        let client = &self.session.shared();
        let v = client
            .conn
            .eval(&scripts::BARRIER_CHECK, self.keys(), vec![])
            .await?;
        parse_check(v)
    }

    /// Block while the barrier is held; returns at once when it is not. Wakes on release (one
    /// pub/sub message), or when the holder's lease would expire. Cancel safe.
    pub async fn wait(&self) -> Result<()> {
        let client = &self.session.shared();
        let mut ticket = client
            .watch(client.keys.barrier_changes(&self.name))
            .await?;
        loop {
            match self.check().await? {
                None => return Ok(()),
                Some(left) => ticket.changed_within(until_expiry(left)).await,
            }
        }
    }
}

/// `{1, ms left on the holder's lease}` or `{0, 0}`: `Some(left)` while held.
pub(crate) fn parse_check(v: fred::types::Value) -> Result<Option<Duration>> {
    let r = Reply::new("barrier check");
    let items = r.array_min(v, 2)?;
    Ok((r.int(&items[0])? == 1).then(|| Duration::from_millis(r.uint(&items[1]).unwrap_or(0))))
}

impl Session {
    /// The barrier `name` for this session.
    pub fn barrier(&self, name: &str) -> Result<Barrier> {
        Barrier::new(self, name)
    }
}
