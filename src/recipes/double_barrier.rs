//! A double barrier (etcd's `recipe.DoubleBarrier`): `count` participants enter together and
//! leave together. Scripts: `lua/recipes/dbarrier_enter.lua`, `lua/recipes/dbarrier_leave.lua`.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use crate::base::error::{Error, Result};
use crate::base::limits::check_name;
use crate::redis::{scripts, LuaScript, Reply};
use crate::session::Session;
use crate::wait::contend::{recheck_after, Contender, Turn, Wake, Won};
use crate::wait::LockKind;

const KIND: LockKind = LockKind::DoubleBarrier;

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
    /// The double barrier `name` for `session`, for `count` participants (at least 1, else
    /// [`Error::InvalidArgument`]). No I/O happens here.
    pub fn new(session: &Session, name: &str, count: u32) -> Result<DoubleBarrier> {
        check_name(session.namespace(), KIND.label(), name)?;
        if count == 0 {
            return Err(Error::InvalidArgument(format!(
                "double barrier {name:?} needs a count of at least 1"
            )));
        }
        Ok(DoubleBarrier {
            session: session.for_name(name),
            name: name.to_owned(),
            count,
            entered: Arc::default(),
        })
    }

    fn keys(&self) -> Vec<String> {
        let k = self.session.keys();
        vec![
            k.rev(),
            k.leases(),
            KIND.key(k, &self.name),
            k.dbarrier_ready(&self.name),
            k.attached(self.session.lease()),
        ]
    }

    async fn step(&self, script: &'static LuaScript, args: Vec<String>) -> Result<Step> {
        let _pin = self.session.touch().await?;
        let client = &self.session.shared();
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

    /// Enter and wait until `count` live participants have.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before the round starts withdraws this participant (in the
    /// background).
    pub async fn enter(&self) -> Result<()> {
        let session = &self.session;
        session.check()?;
        let client = session.shared();
        // Watched before the first request, so no change after it goes unnoticed.
        let ticket = client
            .watch(client.keys.dbarrier_changes(&self.name))
            .await?;
        let queue = KIND.key(&client.keys, &self.name);
        let participant = Contender::new(session, KIND, &queue, "");
        let won = participant
            .contend(
                Wake::Channel(ticket),
                || participant.withdrawal(),
                |recheck| {
                    let args = vec![
                        session.lease().to_string(),
                        participant.id.clone(),
                        self.count.to_string(),
                        if recheck { "1" } else { "0" }.to_owned(),
                    ];
                    async move {
                        Ok(match self.step(&scripts::DBARRIER_ENTER, args).await? {
                            Step::Done => Turn::Held(0),
                            Step::Wait(left) => Turn::Wait(left, None),
                            Step::Full(n) => Turn::Other(Full(n)),
                            // The entry is gone with the lease.
                            Step::Gone | Step::Lost => Turn::Lost,
                        })
                    }
                },
            )
            .await?;
        match won {
            Won::Held(_) => {
                self.set_entered(Some(participant.id));
                Ok(())
            }
            Won::Other(Full(participants)) => Err(Error::BarrierFull {
                namespace: session.namespace().to_owned(),
                name: self.name.clone(),
                count: self.count,
                participants,
            }),
            // The script never refuses an enter without saying why.
            Won::Refused => Err(Reply::new(KIND.acquire_op()).bad("refused")),
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
        let client = &session.shared();
        let mut ticket = client
            .watch(client.keys.dbarrier_changes(&self.name))
            .await?;
        let mut first = true;
        loop {
            let args = vec![
                session.lease().to_string(),
                member.clone(),
                if first { "1" } else { "0" }.to_owned(),
            ];
            match self.step(&scripts::DBARRIER_LEAVE, args).await? {
                Step::Wait(left) => {
                    if first {
                        self.set_entered(None);
                    }
                    first = false;
                    ticket.changed_within(recheck_after(left)).await;
                }
                _ => {
                    self.set_entered(None);
                    return Ok(());
                }
            }
        }
    }
}

/// The reply of both double barrier scripts:
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

/// The barrier already has its count of participants (or a round is in progress).
struct Full(u64);

impl Session {
    /// The double barrier `name` for `count` participants.
    pub fn double_barrier(&self, name: &str, count: u32) -> Result<DoubleBarrier> {
        DoubleBarrier::new(self, name, count)
    }
}
