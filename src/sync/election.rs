//! Leader election (etcd's `concurrency.Election`) with an ordered, gap-free observe.
//! Scripts: `lua/election/election_campaign.lua`, `lua/election/election_proclaim.lua`,
//! `lua/election/election_resign.lua`, `lua/election/election_observe.lua`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use fred::types::Value;
use futures_util::Stream;

use crate::base::error::{Error, Result};
use crate::base::lease_id::LeaseId;
use crate::base::limits::{check_name, check_value};
use crate::client::ClientInner;
use crate::lease::Op;
use crate::redis::doorbell::ChannelTicket;
use crate::redis::{scripts, Reply};
use crate::session::Session;
use crate::wait::contend::{parse_turn, recheck_after, Contender, Turn, Wake, Won};
use crate::wait::LockKind;

/// The log id before the first entry.
const LOG_START: &str = "0-0";
/// Log entries read per call.
const OBSERVE_BATCH: usize = 64;

/// The current leader of an election.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Leader {
    /// The value it campaigned with or last proclaimed.
    pub value: String,
    /// The leader's lease.
    pub lease: LeaseId,
    /// The revision at which the leader's candidacy was created: a fencing token for actions
    /// taken as leader, greater than every earlier leader's.
    pub fencing_token: u64,
}

/// One entry of [`Election::observe`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaderEvent {
    /// Revision of the change; strictly increasing along one observe stream.
    pub revision: u64,
    /// The leader from this revision on, or `None` when nobody leads.
    pub leader: Option<Leader>,
    /// True when the observer fell so far behind that the log no longer held the changes it
    /// missed: this event is the current state, and changes between were skipped.
    pub after_gap: bool,
}

/// A leader election named `name`, campaigned for through a session (one candidacy per lease,
/// as in etcd).
///
/// Candidates lead in the order they campaigned (FIFO by revision). A candidacy is attached to
/// the session's lease: when the session ends, the next candidate leads, and observers see it.
///
/// ```no_run
/// # async fn demo(session: leasehold::Session) -> leasehold::Result<()> {
/// use futures_util::StreamExt;
///
/// let election = session.election("scheduler")?;
/// let token = election.campaign("10.0.0.7:8080").await?; // waits until we lead
/// election.proclaim("10.0.0.7:9090").await?;
///
/// let mut changes = Box::pin(election.observe());
/// while let Some(event) = changes.next().await {
///     println!("{:?}", event?.leader);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Election {
    session: Session,
    name: Arc<str>,
    /// Revision of this handle's candidacy while it leads.
    leading: Arc<StdMutex<Option<u64>>>,
}

impl fmt::Debug for Election {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Election")
            .field("name", &self.name)
            .field("lease", &self.session.lease())
            .finish()
    }
}

/// A re-check found the candidacy withdrawn (resigned through another handle).
struct Withdrawn;

impl Election {
    /// The election `name` for `session`. No I/O happens here.
    pub fn new(session: &Session, name: &str) -> Result<Election> {
        check_name(session.namespace(), "election", name)?;
        Ok(Election {
            session: session.for_name(name),
            name: name.into(),
            leading: Arc::default(),
        })
    }

    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Redis key of the candidate queue, `{ns}:election:<name>`.
    pub fn key(&self) -> String {
        self.client().keys.election(&self.name)
    }

    /// The session that campaigns.
    pub fn session(&self) -> &Session {
        &self.session
    }

    fn client(&self) -> &ClientInner {
        self.session.shared()
    }

    fn candidate(&self) -> String {
        format!("{}.c", self.session.lease())
    }

    /// rev, leases, queue, values, log (+ the lease's attachment set).
    fn keys(&self, with_attached: bool) -> Vec<String> {
        let k = &self.client().keys;
        let mut keys = vec![
            k.rev(),
            k.leases(),
            k.election(&self.name),
            k.election_values(&self.name),
            k.election_log(&self.name),
        ];
        if with_attached {
            keys.push(k.attached(self.session.lease()));
        }
        keys
    }

    fn not_leader(&self) -> Error {
        Error::NotLeader {
            namespace: self.session.namespace().to_owned(),
            name: self.name.to_string(),
        }
    }

    fn set_leading(&self, rev: Option<u64>) {
        *self.leading.lock().unwrap_or_else(|e| e.into_inner()) = rev;
    }

    fn leading(&self) -> Option<u64> {
        *self.leading.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This session's candidate in the election's queue, `<lease id>.c` (etcd's `Key()` names
    /// the same thing: the candidate's own entry). One per session and election, so every
    /// handle of a session campaigns as the same candidate.
    pub fn candidate_id(&self) -> String {
        self.candidate()
    }

    /// The revision of this handle's candidacy while it leads, by what this handle last
    /// learned (etcd's `Rev()`): the fencing token [`campaign`](Self::campaign) returned.
    /// `None` before a campaign succeeded, after [`resign`](Self::resign), and after a
    /// [`proclaim`](Self::proclaim) found the candidacy no longer leading; a loss Redis has not
    /// told this handle of yet is not reflected (see [`Session::done`](crate::Session::done)).
    pub fn revision(&self) -> Option<u64> {
        self.leading()
    }

    /// Campaign with `value` and wait until this candidacy leads; returns its fencing token.
    ///
    /// Campaigning again with the same lease (another handle, or a new process that reuses the
    /// lease) resumes the existing candidacy in its place and updates its value. While waiting,
    /// the candidacy is re-checked each time it is woken; if it was withdrawn meanwhile the call
    /// fails with [`Error::NotLeader`], and if the session ends, with [`Error::SessionLost`].
    ///
    /// **Cancel safe**: dropping the future withdraws the candidacy (in the background).
    pub async fn campaign(&self, value: &str) -> Result<u64> {
        check_value(self.session.namespace(), "election", &self.name, value)?;
        let session = &self.session;
        let queue = self.key();
        let candidacy = Contender {
            session,
            kind: LockKind::Election,
            queue: &queue,
            id: self.candidate(),
        };
        let conn = &session.shared().conn;
        let won = candidacy
            .contend(
                Wake::Ring,
                || self.withdraw_op(),
                |recheck| {
                    let args = vec![
                        session.lease().to_string(),
                        candidacy.id.clone(),
                        value.to_owned(),
                        if recheck { "1" } else { "0" }.to_owned(),
                    ];
                    async move {
                        let v = conn
                            .eval(&scripts::ELECTION_CAMPAIGN, self.keys(true), args)
                            .await?;
                        // A re-check that finds the candidacy withdrawn: not leading.
                        parse_turn(LockKind::Election.acquire_op(), v).map(|t| match t {
                            Turn::Gone => Turn::Other(Withdrawn),
                            t => t,
                        })
                    }
                },
            )
            .await?;
        match won {
            Won::Held(rev) => {
                self.set_leading(Some(rev));
                Ok(rev)
            }
            Won::Refused | Won::Other(Withdrawn) => Err(self.not_leader()),
        }
    }

    /// Background withdrawal of this session's candidacy.
    fn withdraw_op(&self) -> Op {
        Op::Cleanup {
            ns: self.session.shared().core().clone(),
            script: &scripts::ELECTION_RESIGN,
            keys: self.keys(true),
            args: vec![
                self.session.lease().to_string(),
                self.candidate(),
                "0".into(),
            ],
            retry_for: self.session.ttl(),
        }
    }

    /// Set the leader's value; [`Error::NotLeader`] unless this handle's candidacy leads.
    pub async fn proclaim(&self, value: &str) -> Result<()> {
        check_value(self.session.namespace(), "election", &self.name, value)?;
        let rev = self.leading().ok_or_else(|| self.not_leader())?;
        let args = vec![self.candidate(), rev.to_string(), value.to_owned()];
        let v = self
            .client()
            .conn
            .eval(&scripts::ELECTION_PROCLAIM, self.keys(false), args)
            .await?;
        if Reply::new("election proclaim").int(&v)? == 1 {
            Ok(())
        } else {
            self.set_leading(None);
            Err(self.not_leader())
        }
    }

    /// Give up leadership (the next candidate leads at once). A no-op when this handle does not
    /// lead, as in etcd.
    pub async fn resign(&self) -> Result<()> {
        let Some(rev) = self.leading() else {
            return Ok(());
        };
        let args = vec![
            self.session.lease().to_string(),
            self.candidate(),
            rev.to_string(),
        ];
        self.client()
            .conn
            .eval(&scripts::ELECTION_RESIGN, self.keys(true), args)
            .await?;
        self.set_leading(None);
        Ok(())
    }

    /// The current leader, or `None`. A leader whose lease has expired is replaced (and the
    /// change logged for observers) by this call.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        let page = self.read_log(None).await?;
        Ok(page.events.into_iter().next_back().and_then(|e| e.leader))
    }

    async fn read_log(&self, after: Option<&str>) -> Result<LogPage> {
        let args = vec![
            after.unwrap_or_default().to_owned(),
            OBSERVE_BATCH.to_string(),
        ];
        let v = self
            .client()
            .conn
            .eval(&scripts::ELECTION_OBSERVE, self.keys(false), args)
            .await?;
        parse_log(v)
    }

    /// A stream of leader changes: the leader current when the stream is first polled (if any),
    /// then every change and proclaim, in order, each with a greater revision (also when nobody
    /// had led yet at the first poll). Nothing is skipped: changes are read
    /// from a log kept in Redis, so a slow or reconnected observer catches up; only if it fell
    /// more than the log's capacity ([`ELECTION_LOG_ENTRIES`](crate::ELECTION_LOG_ENTRIES) changes,
    /// or [`ELECTION_LOG_BYTES`](crate::ELECTION_LOG_BYTES) of values) behind is it resynced to the current
    /// leader, with [`LeaderEvent::after_gap`] set. A leader whose lease expires is reported at
    /// its lease deadline.
    ///
    /// Errors (Redis unreachable) are yielded and the stream goes on after a short pause; drop
    /// it to stop observing.
    pub fn observe(&self) -> impl Stream<Item = Result<LeaderEvent>> + Send + 'static {
        let observer = Observer {
            election: self.clone(),
            ticket: None,
            after: None,
            pending: VecDeque::new(),
            wait: None,
            last_revision: 0,
        };
        futures_util::stream::unfold(observer, |mut o| async move {
            let item = o.next().await;
            Some((item, o))
        })
    }
}

impl Session {
    /// The election `name` for this session.
    pub fn election(&self, name: &str) -> Result<Election> {
        Election::new(self, name)
    }
}

pub(crate) struct LogPage {
    /// Time left on the current leader's lease (zero: no leader).
    leader_left: Duration,
    gap: bool,
    /// Log id of the last entry read.
    last_id: Option<String>,
    events: Vec<LeaderEvent>,
}

pub(crate) fn parse_log(v: Value) -> Result<LogPage> {
    let r = Reply::new("election observe");
    let items = r.array_min(v, 2)?;
    let rows = &items[2..];
    if rows.len() % 4 != 0 {
        return Err(r.bad(format!(
            "{} fields is not a whole number of entries",
            rows.len()
        )));
    }
    let mut events = Vec::with_capacity(rows.len() / 4);
    let mut last_id = None;
    for row in rows.chunks(4) {
        let id = r.string(&row[0])?;
        let revision = id
            .split_once('-')
            .and_then(|(ms, _)| ms.parse().ok())
            .ok_or_else(|| r.bad(format!("log id {id:?}")))?;
        let member = r.string(&row[1])?;
        let leader = if member.is_empty() {
            None
        } else {
            let lease = member
                .split_once('.')
                .and_then(|(l, _)| l.parse().ok())
                .ok_or_else(|| r.bad(format!("candidate {member:?}")))?;
            Some(Leader {
                value: r.string(&row[2])?,
                lease,
                fencing_token: r.uint(&row[3])?,
            })
        };
        events.push(LeaderEvent {
            revision,
            leader,
            after_gap: false,
        });
        last_id = Some(id);
    }
    Ok(LogPage {
        leader_left: Duration::from_millis(r.uint(&items[0])?),
        gap: r.int(&items[1])? == 1,
        last_id,
        events,
    })
}

/// State of one observe stream.
struct Observer {
    election: Election,
    ticket: Option<ChannelTicket>,
    /// Last log id delivered (None before the first read).
    after: Option<String>,
    pending: VecDeque<LeaderEvent>,
    /// Set when the last read found nothing new: wait this long (or for a notification).
    wait: Option<Duration>,
    last_revision: u64,
}

impl Observer {
    async fn next(&mut self) -> Result<LeaderEvent> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                self.last_revision = ev.revision;
                return Ok(ev);
            }
            if let Err(e) = self.step().await {
                // Do not spin on a persistent error; the stream goes on.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Err(e);
            }
        }
    }

    async fn step(&mut self) -> Result<()> {
        if self.ticket.is_none() {
            let client = self.election.client();
            let channel = client.keys.election_changes(&self.election.name);
            // Subscribed before the first read, so no change between the two goes unnoticed.
            self.ticket = Some(client.watch(channel).await?);
        }
        if let (Some(wait), Some(ticket)) = (self.wait.take(), self.ticket.as_mut()) {
            ticket.changed_within(wait).await;
        }
        let mut page = self.election.read_log(self.after.as_deref()).await?;
        if page.gap {
            // The log lost entries we had not seen: resync to the latest.
            page = self.election.read_log(None).await?;
            if let Some(ev) = page.events.last_mut() {
                ev.after_gap = true;
            }
        }
        let first_read = self.after.is_none();
        match page.last_id.take() {
            Some(id) => self.after = Some(id),
            // Nobody has led yet: every entry from now on is news, read from the log's start
            // (the first entry names `0-0` as its predecessor).
            None if first_read => self.after = Some(LOG_START.to_owned()),
            None => {}
        }
        for ev in page.events {
            // The first read returns the latest entry: only a current leader is news.
            if first_read && ev.leader.is_none() {
                continue;
            }
            if ev.revision > self.last_revision {
                self.pending.push_back(ev);
            }
        }
        if self.pending.is_empty() {
            self.wait = Some(recheck_after(page.leader_left));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_replies_are_checked() {
        let s = |x: &str| Value::String(x.into());
        let lease = "0190a5b2-0000-7000-8000-000000000001";
        let page = parse_log(Value::Array(vec![
            Value::Integer(1500),
            Value::Integer(0),
            s("17-0"),
            s(&format!("{lease}.c")),
            s("abc"),
            s("9"),
            s("18-0"),
            s(""),
            s(""),
            s("0"),
        ]))
        .unwrap();
        assert_eq!(page.leader_left, Duration::from_millis(1500));
        assert_eq!(page.last_id.as_deref(), Some("18-0"));
        assert_eq!(page.events.len(), 2);
        assert_eq!(page.events[0].revision, 17);
        assert_eq!(page.events[0].leader.as_ref().unwrap().value, "abc");
        assert_eq!(page.events[0].leader.as_ref().unwrap().fencing_token, 9);
        assert_eq!(page.events[1].leader, None);
        for bad in [
            Value::Null,
            Value::Array(vec![Value::Integer(0)]),
            Value::Array(vec![Value::Integer(0), Value::Integer(0), s("x")]),
            Value::Array(vec![
                Value::Integer(0),
                Value::Integer(0),
                s("nope"),
                s(""),
                s(""),
                s("0"),
            ]),
            Value::Array(vec![
                Value::Integer(0),
                Value::Integer(0),
                s("1-0"),
                s("bad.c"),
                s(""),
                s("0"),
            ]),
        ] {
            assert!(parse_log(bad).is_err());
        }
    }
}
