//! Renewal ticks: batched renewal calls, their replies, and what they mean for each session.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, histogram};

use tracing::Instrument;

use super::{Planned, Supervisor, TaskDone, Tracked, SWEEP_LIMIT, SWEEP_TIMEOUT};
use crate::base::error::Error;
use crate::base::lease_id::LeaseId;
use crate::base::metrics as m;
use crate::base::session_state::{end_status, SessionEnd, SessionState};
use crate::lease::keepalive::{split_calls, Event};
use crate::lease::leases::{RenewAs, Renewal};
use crate::lease::sub_lease::Due;
use crate::redis::Core;

impl Supervisor {
    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        for ev in self.keepalive.expire(now) {
            self.apply(ev);
        }
        while !self.renewals_paused {
            let (ids, timeout) = self.keepalive.take_due(now);
            if ids.is_empty() {
                break;
            }
            // `take_due` hands out one namespace's leases at a time: the namespace of any.
            let ns = (ids.iter().find_map(|id| self.sessions.get(id)))
                .map_or(&self.home, |t| &t.ns)
                .clone();
            self.spawn_renewals(ns, ids, timeout);
        }
        if self.renewals_paused {
            return;
        }
        let due: Vec<Arc<Core>> = (self.spaces.values())
            .filter(|s| s.sweep_at().is_some_and(|t| t <= now))
            .map(|s| s.core.clone())
            .collect();
        for ns in due {
            self.space(&ns).sweeping = true;
            self.spawn_sweep(ns);
        }
    }

    /// Renewal calls in namespace `ns` for `ids`, as many as their cost needs
    /// ([`split_calls`]), sent one after another.
    fn spawn_renewals(&mut self, ns: Arc<Core>, ids: Vec<LeaseId>, timeout: Duration) {
        // Each session with entries opens a window: the reply's attachment count is compared
        // with the fewest entries it held since. A sub-lease its session has not used for a
        // renewal interval is dropped instead, if Redis finds it idle too.
        let now = Instant::now();
        let planned: Vec<(LeaseId, RenewAs, Option<u64>, usize)> = ids
            .into_iter()
            .map(|id| {
                let Some(t) = self.sessions.get(&id) else {
                    return (id, RenewAs::Plain, None, 0);
                };
                if let Some((_, sub)) = &t.sub {
                    if let Due::DropIfIdle(epoch) = sub.due(now, t.ttl / 4) {
                        return (id, RenewAs::DropIfIdle(epoch), None, 0);
                    }
                }
                let (generation, held) = t.entries.open_window();
                match held {
                    0 => (id, RenewAs::Plain, None, 0),
                    _ => (id, RenewAs::Counted, Some(generation), held),
                }
            })
            .collect();
        let calls = split_calls(planned, |(_, how, _, held)| how.cost(*held)).into_iter();
        let calls = calls.map(|call| {
            let (leases, windows) = (call.into_iter())
                .map(|(id, how, window, _)| ((id, how), window))
                .unzip();
            Planned {
                leases,
                windows,
                timeout,
            }
        });
        if let Some(call) = self.space(&ns).calls.push(calls) {
            self.spawn_call(ns, call);
        }
    }

    /// A sweep-only call in namespace `ns`: no lease renewed.
    pub(super) fn spawn_sweep(&mut self, ns: Arc<Core>) {
        let sweep = Planned {
            leases: Vec::new(),
            windows: Vec::new(),
            timeout: SWEEP_TIMEOUT,
        };
        self.spawn_call(ns, sweep);
    }

    /// One batched renewal call in namespace `ns` (with no ids: a sweep only).
    fn spawn_call(&mut self, ns: Arc<Core>, call: Planned) {
        let Planned {
            leases,
            windows,
            timeout,
        } = call;
        self.space(&ns).last_sweep = Instant::now();
        let ids: Vec<LeaseId> = leases.iter().map(|(id, _)| *id).collect();
        let span = tracing::debug_span!(
            "leasehold.renew",
            namespace = ns.keys.namespace(),
            leases = leases.len(),
            swept = tracing::field::Empty,
        );
        self.tasks.push(Box::pin(
            async move {
                let sent = Instant::now();
                let result = ns.renew(&leases, SWEEP_LIMIT, true, timeout).await;
                if let Ok(reply) = &result {
                    tracing::Span::current().record("swept", reply.swept);
                }
                TaskDone::Renewed {
                    ns,
                    ids,
                    windows,
                    sent,
                    recv: Instant::now(),
                    result,
                }
            }
            .instrument(span),
        ));
    }

    /// A renewal in namespace `ns` answered from another replication history than the last
    /// one (a replica was promoted, or Redis restarted without its data): leases may have been
    /// lost. Every session of the namespace not confirmed by this very reply goes into jeopardy
    /// and is renewed at once, so a lease missing on the new server is reported lost now, not
    /// when its TTL would have run out.
    pub(super) fn check_server_history(
        &mut self,
        ns: &Arc<Core>,
        replid: &str,
        confirmed: &[LeaseId],
    ) {
        let known = self.space(ns).replid.replace(replid.to_owned());
        let Some(known) = known.filter(|known| known != replid) else {
            return;
        };
        counter!(m::FAILOVERS).increment(1);
        tracing::warn!(
            namespace = ns.keys.namespace(),
            old = %known,
            new = %replid,
            "Redis replication history changed (failover or restart): re-checking every lease"
        );
        let confirmed: HashSet<LeaseId> = confirmed.iter().copied().collect();
        let sessions = &self.sessions;
        let events = self.keepalive.suspect(Instant::now(), |id| {
            !confirmed.contains(&id) && in_namespace(sessions, id, ns)
        });
        for ev in events {
            counter!(m::SESSION_JEOPARDY, "reason" => "failover").increment(1);
            self.apply(ev);
        }
    }

    pub(super) fn on_task(&mut self, done: TaskDone) {
        match done {
            TaskDone::Reconnected => {
                self.renewals_paused = false;
                self.keepalive.all_due(Instant::now());
                return;
            }
            TaskDone::RevokeFailed { ns, id, ttl } => {
                self.orphaned(&ns, id, ttl);
                return;
            }
            _ => {}
        }
        let TaskDone::Renewed {
            ns,
            ids,
            windows,
            sent,
            recv,
            result,
        } = done
        else {
            return;
        };
        counter!(m::RENEW_CALLS).increment(1);
        histogram!(m::RENEW_LATENCY).record((recv - sent).as_secs_f64());
        histogram!(m::RENEW_BATCH).record(ids.len() as f64);
        if ids.is_empty() {
            self.space(&ns).sweeping = false;
        } else {
            for call in self.space(&ns).calls.answered(result.is_err()) {
                self.spawn_call(ns.clone(), call);
            }
        }
        match result {
            Ok(reply) => {
                if reply.sweep_more {
                    // A backlog of expired leases (a crashed process had many), or one with
                    // more attachments than a call releases: keep sweeping, a call at a time.
                    self.spawn_sweep(ns.clone());
                } else {
                    // Everything expired when this call was sent is gone: so are the orphans
                    // that had surely expired by then.
                    let space = self.space(&ns);
                    space.orphans = space.orphans.split_off(&(sent, LeaseId::MAX));
                }
                self.check_server_history(&ns, &reply.replid, &ids);
                ns.held.publish(recv);
                ns.eviction.observe(&reply.maxmemory_policy);
                let step = self.space(&ns).clock.observe(reply.server_us, sent, recv);
                if !step.is_zero() {
                    counter!(m::CLOCK_FORWARD_STEPS).increment(1);
                    tracing::warn!(
                        ?step,
                        "Redis clock ran ahead of the local clock; leases shortened"
                    );
                    // Leases renewed before the step expire that much earlier on the server.
                    let renewed: HashSet<LeaseId> = ids.iter().copied().collect();
                    let sessions = &self.sessions;
                    let affected = |id| !renewed.contains(&id) && in_namespace(sessions, id, &ns);
                    for (id, valid_until) in self.keepalive.shorten(step, affected) {
                        if let Some(t) = self.sessions.get(&id) {
                            // One status may serve several leases (a spread session): it
                            // keeps the least validity.
                            t.status
                                .send_modify(|s| s.valid_until = s.valid_until.min(valid_until));
                        }
                    }
                }
                let answers = ids.into_iter().zip(windows).zip(reply.leases);
                for (((id, window), renewal), attached) in answers.zip(reply.attached) {
                    if let (Renewal::Renewed(_), Some(t)) = (renewal, self.sessions.get(&id)) {
                        if let Some((_, sub)) = &t.sub {
                            sub.kept();
                        }
                    }
                    let ev = match (renewal, attached) {
                        (Renewal::Dropped, _) => {
                            counter!(m::SUB_LEASES_DROPPED).increment(1);
                            self.keepalive.remove(id);
                            self.untrack(id);
                            None
                        }
                        (Renewal::Adopted, _) => self.lost(id, SessionEnd::Adopted),
                        (Renewal::Renewed(_), Some(attached))
                            if self.entries_lost(id, window, attached) =>
                        {
                            self.lost(id, SessionEnd::EntriesLost)
                        }
                        (renewal, _) => self.keepalive.renewed(id, renewal.ttl(), sent, recv, step),
                    };
                    if let Some(ev) = ev {
                        self.apply(ev);
                    }
                }
            }
            Err(e) => {
                let reason = if matches!(e, Error::Timeout(_)) {
                    "timeout"
                } else {
                    "error"
                };
                tracing::debug!(error = %e, leases = ids.len(), "renewal failed");
                let now = Instant::now();
                for id in ids {
                    if self.keepalive.failed(id, now).is_some() {
                        counter!(m::SESSION_JEOPARDY, "reason" => reason).increment(1);
                        self.apply(Event::Jeopardy { id });
                    }
                }
            }
        }
    }

    pub(super) fn apply(&mut self, ev: Event) {
        match ev {
            Event::Renewed {
                id,
                valid_until,
                headroom,
            } => {
                histogram!(m::RENEW_HEADROOM).record(headroom.as_secs_f64());
                let valid_until = self.group_validity(id, valid_until);
                let Some(t) = self.sessions.get(&id) else {
                    return;
                };
                let now = Instant::now();
                let mut expired = false;
                t.status.send_if_modified(|s| {
                    if matches!(s.state, SessionState::Ended(_)) {
                        return false;
                    }
                    if now >= s.valid_until {
                        // Handles already see it expired (by the clock): never revive.
                        expired = true;
                        return false;
                    }
                    s.state = SessionState::Alive;
                    s.valid_until = valid_until;
                    true
                });
                if expired {
                    self.keepalive.remove(id);
                    self.apply(Event::Lost {
                        id,
                        end: SessionEnd::Expired,
                    });
                }
            }
            Event::Jeopardy { id } => {
                if let Some(t) = self.sessions.get(&id) {
                    t.status.send_if_modified(|s| {
                        if s.state != SessionState::Alive {
                            return false;
                        }
                        s.state = SessionState::Jeopardy;
                        true
                    });
                }
            }
            Event::Lost { id, end } => {
                counter!(m::SESSION_LOST, "reason" => end.label()).increment(1);
                let tracked = self.untrack(id);
                if let Some(t) = &tracked {
                    end_status(&t.status, end);
                }
                tracing::warn!(lease = %id, reason = %end, "session lost");
                let anchor = tracked.as_ref().map_or(id, |t| t.anchor(id));
                if let (SessionEnd::Expired | SessionEnd::EntriesLost, Some(t)) = (end, tracked) {
                    // The server may still hold the lease (and what is left of its entries,
                    // which may block others): free it once we can.
                    self.spawn_revoke(t.ns, id, t.ttl);
                }
                // A spread session is lost with any of its leases (etcd's one lease): revoke
                // the others now, so its locks on healthy shards free at once.
                let mut others = self.groups.get(&anchor).cloned().unwrap_or_default();
                others.push(anchor);
                for other in others.into_iter().filter(|o| *o != id) {
                    self.keepalive.remove(other);
                    if let Some(t) = self.untrack(other) {
                        self.spawn_revoke(t.ns, other, t.ttl);
                    }
                }
            }
        }
    }

    /// `valid_until` of lease `id`, or less: for a spread session's lease, the least validity
    /// of the session's leases (they share one status).
    fn group_validity(&self, id: LeaseId, valid_until: Instant) -> Instant {
        let anchor = self.sessions.get(&id).map_or(id, |t| t.anchor(id));
        let Some(members) = self.groups.get(&anchor) else {
            return valid_until;
        };
        (members.iter().chain(std::iter::once(&anchor)))
            .filter(|m| **m != id)
            .filter_map(|m| self.keepalive.valid_until(*m))
            .fold(valid_until, Instant::min)
    }

    /// Stop renewing `id`: its session ended with `end` (if it was still renewed here).
    pub(super) fn lost(&mut self, id: LeaseId, end: SessionEnd) -> Option<Event> {
        self.keepalive.remove(id).then_some(Event::Lost { id, end })
    }

    /// Whether fewer entries are attached to `id` (`attached`, counted by the renewal) than its
    /// session held at every moment of the renewal's `window`.
    fn entries_lost(&self, id: LeaseId, window: Option<u64>, attached: u64) -> bool {
        let fewest = window.and_then(|w| self.sessions.get(&id)?.entries.fewest_since(w));
        fewest.is_some_and(|held| attached < held as u64)
    }
}

/// Whether the session renewing `id` is one of namespace `ns`.
fn in_namespace(sessions: &HashMap<LeaseId, Tracked>, id: LeaseId, ns: &Core) -> bool {
    (sessions.get(&id)).is_some_and(|t| t.ns.keys.namespace() == ns.keys.namespace())
}
