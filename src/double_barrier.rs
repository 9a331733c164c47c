//! A double barrier (etcd's `recipe.DoubleBarrier`): `count` participants enter together and
//! leave together. Scripts: `lua/dbarrier_enter.lua`, `lua/dbarrier_leave.lua`.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use crate::doorbell::watch;
use crate::error::{Error, Result};
use crate::names::check_name;
use crate::reply::Reply;
use crate::script::script;
use crate::session::{Session, SessionEnd};
use crate::waiter::{release_op, written_nothing};

const KIND: &str = "double barrier";
/// Re-check interval while waiting, in case a message was lost.
const RECHECK: Duration = Duration::from_secs(30);

/// A double barrier named `name` for `count` participants (`{ns}:dbarrier:<name>`):
/// [`enter`](Self::enter) blocks until `count` participants have entered, and
/// [`leave`](Self::leave) blocks until all of them have left.
///
/// Participants are attached to their sessions: one whose session ends counts as gone, so a
/// crashed participant does not block the others' `leave` forever (while entering, the others
/// keep waiting for `count` live participants). An extra participant while a round is full or
/// in progress gets [`Error::BarrierFull`].
///
/// ```no_run
/// # async fn demo(session: leasehold::Session) -> leasehold::Result<()> {
/// let barrier = session.double_barrier("batch-7", 10)?;
/// barrier.enter().await?;  // all 10 start together
/// // ... work ...
/// barrier.leave().await?;  // and finish together
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct DoubleBarrier {
    session: Session,
    name: String,
    count: u32,
    /// This handle's participant id while entered.
    entered: Arc<StdMutex<Option<String>>>,
}

pub(crate) enum Step {
    Done,
    Wait(Duration),
    Full(u64),
    Gone,
    Lost,
}

impl DoubleBarrier {
    pub fn new(session: &Session, name: &str, count: u32) -> Result<DoubleBarrier> {
        check_name(session.namespace(), KIND, name)?;
        if count == 0 {
            return Err(Error::InvalidArgument(format!(
                "double barrier {name:?} needs a count of at least 1"
            )));
        }
        Ok(DoubleBarrier {
            session: session.clone(),
            name: name.to_owned(),
            count,
            entered: Arc::default(),
        })
    }

    fn keys(&self) -> Vec<String> {
        let k = &self.session.inner.client.inner.keys;
        vec![
            k.rev(),
            k.leases(),
            k.dbarrier(&self.name),
            k.dbarrier_ready(&self.name),
            k.attached(self.session.lease()),
        ]
    }

    async fn step(
        &self,
        script: &'static crate::script::LuaScript,
        args: Vec<String>,
    ) -> Result<Step> {
        let client = &self.session.inner.client.inner;
        let v = client.conn.eval(script, self.keys(), args).await?;
        parse_step(v)
    }

    fn entered(&self) -> Option<String> {
        self.entered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_entered(&self, member: Option<String>) -> Option<String> {
        std::mem::replace(
            &mut *self.entered.lock().unwrap_or_else(|e| e.into_inner()),
            member,
        )
    }

    /// Enter and wait until `count` live participants have. Cancel safe: dropping the future
    /// withdraws this participant.
    pub async fn enter(&self) -> Result<()> {
        let session = &self.session;
        session.check()?;
        let client = &session.inner.client.inner;
        let mut ticket = watch(client, client.keys.dbarrier_changes(&self.name)).await?;
        let member = session.new_contender("");
        let key = client.keys.dbarrier(&self.name);
        // Withdraws this participant if the wait is dropped or fails before the round starts.
        let mut withdraw = WithdrawOnDrop(Some((
            session.clone(),
            release_op(session, &key, &member, 0, KIND),
        )));
        let mut recheck = false;
        loop {
            let args = vec![
                session.lease().to_string(),
                member.clone(),
                self.count.to_string(),
                if recheck { "1" } else { "0" }.to_owned(),
            ];
            let step = tokio::select! {
                biased;
                end = session.done() => return Err(session.lost(end)),
                s = self.step(script!("dbarrier_enter"), args) => match s {
                    Ok(s) => s,
                    Err(e) => {
                        // Refused before any write: nothing to withdraw (see waiter::contend).
                        if !recheck && written_nothing(&e) {
                            withdraw.0 = None;
                        }
                        return Err(e);
                    }
                },
            };
            match step {
                Step::Done => {
                    withdraw.0 = None;
                    self.set_entered(Some(member));
                    return Ok(());
                }
                Step::Wait(left) => {
                    recheck = true;
                    tokio::select! {
                        biased;
                        end = session.done() => return Err(session.lost(end)),
                        _ = ticket.changed_within(wait_for(left)) => {}
                    }
                }
                Step::Full(n) => {
                    withdraw.0 = None;
                    return Err(Error::BarrierFull {
                        namespace: session.namespace().to_owned(),
                        name: self.name.clone(),
                        count: self.count,
                        participants: n,
                    });
                }
                Step::Gone | Step::Lost => {
                    withdraw.0 = None;
                    session.mark_lost(SessionEnd::LeaseNotFound);
                    return Err(session.lost(SessionEnd::LeaseNotFound));
                }
            }
        }
    }

    /// Leave and wait until every participant has left (or its session ended).
    /// [`Error::InvalidArgument`] when this handle has not entered.
    pub async fn leave(&self) -> Result<()> {
        // Taken for good only once our leave reached Redis, so a leave that fails or is
        // dropped early can be retried.
        let member = self.entered().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "double barrier {:?}: leave without enter",
                self.name
            ))
        })?;
        let session = &self.session;
        let client = &session.inner.client.inner;
        let mut ticket = watch(client, client.keys.dbarrier_changes(&self.name)).await?;
        let mut first = true;
        loop {
            let args = vec![
                session.lease().to_string(),
                member.clone(),
                if first { "1" } else { "0" }.to_owned(),
            ];
            match self.step(script!("dbarrier_leave"), args).await? {
                Step::Wait(left) => {
                    if first {
                        self.set_entered(None);
                    }
                    first = false;
                    ticket.changed_within(wait_for(left)).await;
                }
                _ => {
                    self.set_entered(None);
                    return Ok(());
                }
            }
        }
    }
}

/// How long to wait for a message: until the first participant's lease would expire.
/// `{'ready'} | {'done'} | {'wait', n, ms} | {'full', n} | {'gone'} | {'lost'}`.
pub(crate) fn parse_step(v: fred::types::Value) -> Result<Step> {
    let r = Reply::new("double barrier");
    let items = r.array_min(v, 1)?;
    match r.string(&items[0])?.as_str() {
        "ready" | "done" => Ok(Step::Done),
        "wait" if items.len() >= 3 => Ok(Step::Wait(Duration::from_millis(r.uint(&items[2])?))),
        "full" if items.len() >= 2 => Ok(Step::Full(r.uint(&items[1])?)),
        "gone" => Ok(Step::Gone),
        "lost" => Ok(Step::Lost),
        other => Err(r.bad(format!("unknown status {other:?}"))),
    }
}

fn wait_for(left: Duration) -> Duration {
    if left.is_zero() {
        RECHECK
    } else {
        (left + Duration::from_millis(2)).min(RECHECK)
    }
}

struct WithdrawOnDrop(Option<(Session, crate::supervisor::Op)>);

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        if let Some((session, op)) = self.0.take() {
            session.inner.client.inner.send(op);
        }
    }
}

impl Session {
    /// The double barrier `name` for `count` participants.
    pub fn double_barrier(&self, name: &str, count: u32) -> Result<DoubleBarrier> {
        DoubleBarrier::new(self, name, count)
    }
}
