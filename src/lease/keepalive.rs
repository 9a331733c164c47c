//! The keepalive state machine, free of I/O so it can be tested with synthetic clocks.
//! The supervisor (`src/lease/supervisor/`) feeds it time and renewal replies and carries out what it decides.
//!
//! Safety rule: after a renewal **sent** at instant `t` succeeds, the lease is
//! locally valid until `t + ttl − margin`, where the margin covers clock-rate drift. The server
//! set its expiry no earlier than `t` by its own clock, so the client never believes in a lease
//! the server may already have expired, as long as the clocks run at rates within `DRIFT`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::base::lease_id::LeaseId;
use crate::base::session_state::SessionEnd;

/// Clock-rate drift allowed between this host and Redis (1%).
pub(crate) const DRIFT: f64 = 0.01;
/// Fixed part of the validity margin.
pub(crate) const MARGIN_FIXED: Duration = Duration::from_millis(5);
/// Most leases renewed by one script call.
pub(crate) const MAX_BATCH: usize = 1000;
/// Most work one renewal call asks of Redis, in the units of `RenewAs::cost` (2 to 2.5 µs
/// each). A call blocks Redis for its whole run, so this bounds the stall other clients of
/// that Redis see, to about 20 ms on a small machine (BENCHMARKS.md, sections 4 and 4b),
/// whether the call renews 1,000 leases that hold one lock each or 500 that hold ten.
pub(crate) const CALL_BUDGET: u32 = 8000;

/// `items` in call order, split into calls of at most `MAX_BATCH` items and `CALL_BUDGET`
/// cost (an item costing more than the budget goes alone).
pub(crate) fn split_calls<T>(items: Vec<T>, cost: impl Fn(&T) -> u32) -> Vec<Vec<T>> {
    let mut calls = Vec::new();
    let mut call = Vec::new();
    let mut spent = 0;
    for item in items {
        let c = cost(&item);
        if !call.is_empty() && (call.len() >= MAX_BATCH || spent + c > CALL_BUDGET) {
            calls.push(std::mem::take(&mut call));
            spent = 0;
        }
        spent += c;
        call.push(item);
    }
    if !call.is_empty() {
        calls.push(call);
    }
    calls
}

/// A namespace's planned renewal calls, sent one after another while Redis answers: other
/// clients of its Redis then wait behind one call at a time, never behind a whole round. Once
/// a call fails (an error or a timeout), the rest go at once: nobody is there to stall, and
/// one at a time each would spend a timeout before the next could try.
#[derive(Debug)]
pub(crate) struct CallQueue<T> {
    queued: VecDeque<T>,
    in_flight: usize,
}

impl<T> Default for CallQueue<T> {
    fn default() -> Self {
        CallQueue {
            queued: VecDeque::new(),
            in_flight: 0,
        }
    }
}

impl<T> CallQueue<T> {
    /// Queue `calls`; returns the one to send now, if no call is in flight.
    pub(crate) fn push(&mut self, calls: impl IntoIterator<Item = T>) -> Option<T> {
        self.queued.extend(calls);
        if self.in_flight > 0 {
            return None;
        }
        self.next()
    }

    /// A call in flight was answered (`failed`: with an error, or not in time): returns the
    /// calls to send now.
    pub(crate) fn answered(&mut self, failed: bool) -> Vec<T> {
        self.in_flight = self.in_flight.saturating_sub(1);
        if failed {
            let all: Vec<T> = self.queued.drain(..).collect();
            self.in_flight += all.len();
            return all;
        }
        if self.in_flight > 0 {
            return Vec::new();
        }
        self.next().into_iter().collect()
    }

    fn next(&mut self) -> Option<T> {
        let call = self.queued.pop_front();
        self.in_flight += usize::from(call.is_some());
        call
    }
}

/// Local validity of a lease whose renewal was sent at `sent` and granted `ttl`, shortened by
/// `clock_step` (a detected forward step of the server clock).
pub(crate) fn validity(sent: Instant, ttl: Duration, clock_step: Duration) -> Instant {
    let margin = ttl.mul_f64(DRIFT) + MARGIN_FIXED + clock_step;
    sent + ttl.saturating_sub(margin)
}

/// When a lease renewed at `sent` is due again: TTL/3 later.
pub(crate) fn next_due(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl / 3
}

/// Retry delay after a failed renewal: short enough to get several tries within the validity.
pub(crate) fn retry_delay(ttl: Duration) -> Duration {
    (ttl / 20).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// How long one renewal call may take before it counts as failed (late).
pub(crate) fn attempt_timeout(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// An instant by which a lease that nobody renews any more has surely expired on the server,
/// when its last renewal (or grant) call was sent before `now`: that call may still be
/// carried out up to its attempt timeout later, and the server clock may run up to `DRIFT`
/// slower than ours.
pub(crate) fn surely_expired(now: Instant, ttl: Duration) -> Instant {
    now + attempt_timeout(ttl) + ttl.mul_f64(1.0 + DRIFT) + MARGIN_FIXED
}

/// Detects the server clock running ahead of the local monotonic clock, from the `TIME` that
/// renewal replies carry.
#[derive(Debug, Default)]
pub(crate) struct ServerClock {
    last: Option<(u64, Instant)>,
}

impl ServerClock {
    /// Record a reply whose call was sent at `sent` and answered at `recv`, carrying server time
    /// `server_us` (µs since the epoch). Returns how far the server clock ran ahead of what the
    /// local clock allows (zero when within the drift bound).
    pub(crate) fn observe(&mut self, server_us: u64, sent: Instant, recv: Instant) -> Duration {
        let step = match self.last {
            // The previous sample was taken after `last_sent`, this one before `recv`: the real
            // time between them is at most `recv - last_sent`.
            Some((last_us, last_sent)) if server_us > last_us && recv > last_sent => {
                let server = Duration::from_micros(server_us - last_us);
                let local = recv - last_sent;
                let allowed = local.mul_f64(1.0 + DRIFT) + MARGIN_FIXED;
                server.saturating_sub(allowed)
            }
            _ => Duration::ZERO,
        };
        self.last = Some((server_us, sent));
        step
    }
}

#[derive(Debug)]
struct Entry {
    /// The namespace its renewals go to (one script call renews leases of one namespace).
    space: u64,
    ttl: Duration,
    valid_until: Instant,
    /// Next renewal; `None` while a renewal is in flight.
    due: Option<Instant>,
    jeopardy: bool,
}

/// What a reply or a timer did to a lease.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// Renewed: locally valid until `valid_until`; `headroom` was left when the reply came.
    Renewed {
        id: LeaseId,
        valid_until: Instant,
        headroom: Duration,
    },
    /// A renewal failed or was late; retries go on until the validity runs out.
    Jeopardy { id: LeaseId },
    /// The lease is lost; the entry was removed.
    Lost { id: LeaseId, end: SessionEnd },
}

/// When each lease is due, overall and per namespace.
#[derive(Debug, Default)]
struct Schedule {
    all: BTreeSet<(Instant, LeaseId)>,
    by_space: HashMap<u64, BTreeSet<(Instant, LeaseId)>>,
}

impl Schedule {
    fn insert(&mut self, space: u64, due: Instant, id: LeaseId) {
        self.all.insert((due, id));
        self.by_space.entry(space).or_default().insert((due, id));
    }

    fn remove(&mut self, space: u64, due: Instant, id: LeaseId) {
        self.all.remove(&(due, id));
        if let Some(set) = self.by_space.get_mut(&space) {
            set.remove(&(due, id));
            if set.is_empty() {
                self.by_space.remove(&space);
            }
        }
    }

    fn first(&self) -> Option<&(Instant, LeaseId)> {
        self.all.first()
    }
}

/// One deadline queue for every lease of a client.
#[derive(Debug, Default)]
pub(crate) struct Keepalive {
    entries: HashMap<LeaseId, Entry>,
    due: Schedule,
    expiry: BTreeSet<(Instant, LeaseId)>,
}

impl Keepalive {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, id: LeaseId) -> bool {
        self.entries.contains_key(&id)
    }

    /// Start renewing a lease last confirmed by a call sent at `sent`, in the default
    /// namespace (tests).
    #[cfg(test)]
    pub(crate) fn insert(
        &mut self,
        id: LeaseId,
        ttl: Duration,
        valid_until: Instant,
        sent: Instant,
    ) {
        self.insert_in(0, id, ttl, valid_until, sent);
    }

    /// Start renewing a lease of namespace `space` (any number that tells namespaces apart)
    /// last confirmed by a call sent at `sent`.
    pub(crate) fn insert_in(
        &mut self,
        space: u64,
        id: LeaseId,
        ttl: Duration,
        valid_until: Instant,
        sent: Instant,
    ) {
        self.remove(id);
        let due = next_due(sent, ttl);
        self.due.insert(space, due, id);
        self.expiry.insert((valid_until, id));
        self.entries.insert(
            id,
            Entry {
                space,
                ttl,
                valid_until,
                due: Some(due),
                jeopardy: false,
            },
        );
    }

    /// Stop renewing a lease. Returns whether it was there.
    pub(crate) fn remove(&mut self, id: LeaseId) -> bool {
        match self.entries.remove(&id) {
            Some(e) => {
                if let Some(due) = e.due {
                    self.due.remove(e.space, due, id);
                }
                self.expiry.remove(&(e.valid_until, id));
                true
            }
            None => false,
        }
    }

    /// Until when lease `id` is locally valid, while it is renewed here.
    pub(crate) fn valid_until(&self, id: LeaseId) -> Option<Instant> {
        self.entries.get(&id).map(|e| e.valid_until)
    }

    /// The next instant something must happen (a renewal is due or a validity runs out).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let due = self.due.first().map(|(t, _)| *t);
        let exp = self.expiry.first().map(|(t, _)| *t);
        match (due, exp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next instant a lease's local validity runs out.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.expiry.first().map(|(t, _)| *t)
    }

    /// Leases to renew now: the namespace of the lease due first, and of its leases all that
    /// are due, plus those due within their TTL/3 (renewing early lets one call serve the
    /// namespace: its renewals fall into step, one call per renewal interval per call's worth
    /// of leases, instead of one per lease's own due time). They are marked in flight and
    /// are all to be sent now ([`split_calls`]): a namespace with more than a call's worth
    /// renews them in one step rather than in parts that would each take the others along
    /// early. Returns the ids (empty when nothing is due) and the timeout the calls should use.
    ///
    /// Namespaces keep their own phase: their renewals spread over the interval instead of
    /// reaching each shard in one burst that lock calls would queue behind.
    pub(crate) fn take_due(&mut self, now: Instant) -> (Vec<LeaseId>, Duration) {
        let mut timeout = Duration::from_secs(5);
        let Some(&(first, first_id)) = self.due.first() else {
            return (Vec::new(), timeout);
        };
        if first > now {
            return (Vec::new(), timeout);
        }
        let space = self.entries[&first_id].space;
        let mut picked = Vec::new();
        for &(due, id) in self.due.by_space.get(&space).into_iter().flatten() {
            let e = &self.entries[&id];
            if due.saturating_duration_since(now) > e.ttl / 3 {
                break;
            }
            timeout = timeout.min(attempt_timeout(e.ttl));
            picked.push((due, id));
        }
        let ids = picked
            .into_iter()
            .map(|(due, id)| {
                self.due.remove(space, due, id);
                if let Some(e) = self.entries.get_mut(&id) {
                    e.due = None;
                }
                id
            })
            .collect();
        (ids, timeout)
    }

    /// A renewal sent at `sent` came back at `recv`: `ttl` is `Some` when the server renewed
    /// the lease, `None` when it said the lease is gone. `clock_step` comes from
    /// [`ServerClock::observe`].
    pub(crate) fn renewed(
        &mut self,
        id: LeaseId,
        ttl: Option<Duration>,
        sent: Instant,
        recv: Instant,
        clock_step: Duration,
    ) -> Option<Event> {
        let e = self.entries.get_mut(&id)?;
        if recv >= e.valid_until {
            // Callers were already told (by the clock) that the lease is lost; a reply that
            // comes later must not revive it.
            self.remove(id);
            return Some(Event::Lost {
                id,
                end: SessionEnd::Expired,
            });
        }
        let Some(ttl) = ttl else {
            self.remove(id);
            return Some(Event::Lost {
                id,
                end: SessionEnd::LeaseNotFound,
            });
        };
        let headroom = e.valid_until.saturating_duration_since(recv);
        let fresh = validity(sent, ttl, clock_step);
        // Without a clock step a validity only grows (an older reply may arrive late); with
        // one, the shorter figure wins.
        let valid_until = if clock_step.is_zero() {
            fresh.max(e.valid_until)
        } else {
            fresh
        };
        self.expiry.remove(&(e.valid_until, id));
        if let Some(due) = e.due.take() {
            self.due.remove(e.space, due, id);
        }
        e.ttl = ttl;
        e.jeopardy = false;
        e.valid_until = valid_until;
        let due = next_due(sent, ttl).max(recv);
        e.due = Some(due);
        self.due.insert(e.space, due, id);
        self.expiry.insert((valid_until, id));
        Some(Event::Renewed {
            id,
            valid_until,
            headroom,
        })
    }

    /// The server clock stepped forward by `step`: every lease of that server renewed before
    /// the step (those for which `affected` holds: not the ones the reply that revealed it
    /// renewed) expires on the server that much earlier. Returns their new validity.
    pub(crate) fn shorten(
        &mut self,
        step: Duration,
        affected: impl Fn(LeaseId) -> bool,
    ) -> Vec<(LeaseId, Instant)> {
        let mut out = Vec::new();
        for (&id, e) in self.entries.iter_mut() {
            if !affected(id) {
                continue;
            }
            self.expiry.remove(&(e.valid_until, id));
            e.valid_until = e.valid_until.checked_sub(step).unwrap_or(e.valid_until);
            self.expiry.insert((e.valid_until, id));
            out.push((id, e.valid_until));
        }
        out
    }

    /// Renew everything at once (after a reconnect: the server may have lost our leases).
    pub(crate) fn all_due(&mut self, now: Instant) {
        for (&id, e) in self.entries.iter_mut() {
            if let Some(due) = e.due {
                self.due.remove(e.space, due, id);
                e.due = Some(now);
                self.due.insert(e.space, now, id);
            }
        }
    }

    /// The server may have lost leases (a failover or a restart was detected): every lease for
    /// which `suspect` holds (those the server held, but not the ones just confirmed by it) is
    /// in jeopardy and is renewed at once; those already in flight are retried when they come
    /// back. Returns `Jeopardy` for each that was not in jeopardy yet.
    pub(crate) fn suspect(
        &mut self,
        now: Instant,
        suspect: impl Fn(LeaseId) -> bool,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        for (&id, e) in self.entries.iter_mut() {
            if !suspect(id) {
                continue;
            }
            if let Some(due) = e.due {
                self.due.remove(e.space, due, id);
                e.due = Some(now);
                self.due.insert(e.space, now, id);
            }
            if !e.jeopardy {
                e.jeopardy = true;
                out.push(Event::Jeopardy { id });
            }
        }
        out
    }

    /// A renewal of `id` failed (error or timeout) at `now`: retry soon. Returns `Jeopardy` the
    /// first time in a row.
    pub(crate) fn failed(&mut self, id: LeaseId, now: Instant) -> Option<Event> {
        let e = self.entries.get_mut(&id)?;
        if let Some(due) = e.due.take() {
            self.due.remove(e.space, due, id);
        }
        let due = now + retry_delay(e.ttl);
        e.due = Some(due);
        self.due.insert(e.space, due, id);
        let first = !e.jeopardy;
        e.jeopardy = true;
        first.then_some(Event::Jeopardy { id })
    }

    /// Remove every lease whose local validity has run out by `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(&(t, id)) = self.expiry.first() {
            if t > now {
                break;
            }
            self.remove(id);
            out.push(Event::Lost {
                id,
                end: SessionEnd::Expired,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> LeaseId {
        LeaseId::from_u128(n)
    }

    const TTL: Duration = Duration::from_secs(9);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Leases 0..n of namespace `space`, granted evenly over one renewal interval from `t0`.
    fn granted_over_an_interval(k: &mut Keepalive, space: u64, n: u32, t0: Instant) {
        for i in 0..n {
            let sent = t0 + TTL / 3 * i / n;
            k.insert_in(
                space,
                id(i.into()),
                TTL,
                validity(sent, TTL, Duration::ZERO),
                sent,
            );
        }
    }

    /// The leases `take_due` hands out at `now`.
    fn take(k: &mut Keepalive, now: Instant) -> Vec<LeaseId> {
        k.take_due(now).0
    }

    #[test]
    fn validity_is_sent_plus_ttl_minus_margin() {
        let t = Instant::now();
        assert_eq!(validity(t, TTL, Duration::ZERO), t + TTL - ms(90) - ms(5));
        assert_eq!(
            validity(t, TTL, ms(500)),
            t + TTL - ms(90) - ms(5) - ms(500)
        );
        // Never before the send instant, even with an absurd step.
        assert_eq!(validity(t, TTL, Duration::from_secs(100)), t);
    }

    #[test]
    fn renewal_due_at_a_third_and_batched_early() {
        let t0 = Instant::now();
        let mut k = Keepalive::default();
        k.insert(id(1), TTL, validity(t0, TTL, Duration::ZERO), t0);
        // Due 2 s later than id 1: within TTL/3 = 3 s, so it goes along.
        let t1 = t0 + ms(2000);
        k.insert(id(2), TTL, validity(t1, TTL, Duration::ZERO), t1);
        // Due 4 s later: beyond TTL/3.
        let t2 = t0 + ms(4000);
        k.insert(id(3), TTL, validity(t2, TTL, Duration::ZERO), t2);
        assert_eq!(k.next_deadline(), Some(t0 + ms(3000)));
        assert!(take(&mut k, t0 + ms(2999)).is_empty(), "nothing due yet");
        let (ids, timeout) = k.take_due(t0 + ms(3000));
        assert_eq!(ids, vec![id(1), id(2)]);
        assert_eq!(timeout, attempt_timeout(TTL));
        // In flight: not taken again.
        assert!(take(&mut k, t0 + ms(3000)).is_empty());
        assert_eq!(k.next_deadline(), Some(t2 + ms(3000)));
    }

    #[test]
    fn a_namespaces_renewals_fall_into_step_and_go_out_one_call_per_namespace() {
        let t0 = Instant::now();
        let mut k = Keepalive::default();
        // Namespace 1: leases granted over one renewal interval; namespace 2: one lease.
        granted_over_an_interval(&mut k, 1, 10, t0);
        k.insert_in(2, id(100), TTL, validity(t0, TTL, Duration::ZERO), t0);
        // The first due lease takes its namespace's others along, not the other namespace's.
        let now = t0 + TTL / 3;
        let first = take(&mut k, now);
        let second = take(&mut k, now);
        let (ns1, ns2) = if first.len() == 10 {
            (first, second)
        } else {
            (second, first)
        };
        assert_eq!(ns1.len(), 10);
        assert_eq!(ns2, vec![id(100)]);
        assert!(take(&mut k, now).is_empty());
        // Renewed by that one call, they are due together from now on.
        for id in ns1 {
            k.renewed(id, Some(TTL), now, now + ms(1), Duration::ZERO);
        }
        let later = now + TTL / 3;
        assert_eq!(take(&mut k, later - ms(1)).len(), 0);
        assert_eq!(take(&mut k, later).len(), 10);
    }

    #[test]
    fn calls_are_split_by_count_and_by_what_they_cost_redis() {
        let sizes = |calls: Vec<Vec<u32>>| calls.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(split_calls(vec![1; 2500], |c| *c)), [1000, 1000, 500]);
        let budget = CALL_BUDGET as usize;
        assert_eq!(
            sizes(split_calls(vec![10; budget / 10 + 1], |c| *c)),
            [budget / 10, 1]
        );
        // One over the budget still goes, alone.
        assert_eq!(
            sizes(split_calls(vec![1, CALL_BUDGET + 1, 1], |c| *c)),
            [1, 1, 1]
        );
        assert!(split_calls(Vec::<u32>::new(), |c| *c).is_empty());
    }

    #[test]
    fn a_full_call_renews_1000_leases_of_one_lock_or_500_of_ten() {
        use crate::lease::leases::RenewAs;
        let per_call =
            |how: RenewAs, held: usize| split_calls(vec![(); 5000], |_| how.cost(held))[0].len();
        assert_eq!(per_call(RenewAs::Plain, 0), 1000);
        assert_eq!(per_call(RenewAs::Counted, 1), 1000);
        assert_eq!(per_call(RenewAs::Counted, 10), 500);
    }

    #[test]
    fn a_namespaces_calls_go_one_at_a_time_in_order() {
        let mut q = CallQueue::default();
        assert_eq!(q.push([1, 2]), Some(1));
        // In flight: later calls wait, whoever plans them.
        assert_eq!(q.push([3]), None);
        assert_eq!(q.answered(false), [2]);
        assert_eq!(q.answered(false), [3]);
        assert!(q.answered(false).is_empty());
        // Idle again: the next call goes at once.
        assert_eq!(q.push([4]), Some(4));
        assert_eq!(q.push(Vec::new()), None);
        assert!(q.answered(false).is_empty());
        assert_eq!(q.push(Vec::new()), None);
    }

    #[test]
    fn after_a_failed_call_the_rest_go_at_once() {
        let mut q = CallQueue::default();
        assert_eq!(q.push([1, 2, 3, 4]), Some(1));
        // Redis did not answer call 1: waiting one by one would cost a timeout per call.
        assert_eq!(q.answered(true), [2, 3, 4]);
        // Those three are in flight: answers to the first two send nothing new.
        assert_eq!(q.push([5]), None);
        assert!(q.answered(false).is_empty());
        assert!(q.answered(false).is_empty());
        // The last answer lets the queue go on one at a time.
        assert_eq!(q.answered(false), [5]);
        assert!(q.answered(false).is_empty());
        assert_eq!(q.push([6]), Some(6));
    }

    #[test]
    fn a_namespaces_leases_are_renewed_once_per_interval_not_taken_along_early() {
        let t0 = Instant::now();
        let mut k = Keepalive::default();
        // Granted over one interval: due at different times.
        granted_over_an_interval(&mut k, 0, 10, t0);
        let mut renewals = 0;
        let end = t0 + TTL * 3;
        while let Some(now) = k.next_deadline().filter(|t| *t < end) {
            // As the supervisor does: everything due now goes out, then the replies come.
            let mut sent = Vec::new();
            loop {
                let ids = take(&mut k, now);
                if ids.is_empty() {
                    break;
                }
                sent.extend(ids);
            }
            for id in sent {
                renewals += 1;
                k.renewed(id, Some(TTL), now, now + ms(1), Duration::ZERO);
            }
            assert!(k.expire(now).is_empty(), "nothing may expire");
        }
        // 9 renewal intervals: each lease once per interval, its first renewal included.
        assert!(
            renewals <= 10 * 9,
            "{renewals} renewals of 10 leases over 9 intervals"
        );
    }

    #[test]
    fn success_extends_validity_from_the_send_instant() {
        let t0 = Instant::now();
        let mut k = Keepalive::default();
        k.insert(id(1), TTL, validity(t0, TTL, Duration::ZERO), t0);
        let sent = t0 + ms(3000);
        let ids = take(&mut k, sent);
        assert_eq!(ids, vec![id(1)]);
        let recv = sent + ms(400); // a slow reply does not stretch validity
        let ev = k
            .renewed(id(1), Some(TTL), sent, recv, Duration::ZERO)
            .unwrap();
        let Event::Renewed {
            valid_until,
            headroom,
            ..
        } = ev
        else {
            panic!("{ev:?}")
        };
        assert_eq!(valid_until, validity(sent, TTL, Duration::ZERO));
        assert_eq!(headroom, validity(t0, TTL, Duration::ZERO) - recv);
        assert_eq!(k.next_deadline(), Some(sent + TTL / 3));
    }

    #[test]
    fn failures_put_in_jeopardy_then_expire_at_validity() {
        let t0 = Instant::now();
        let mut k = Keepalive::default();
        let valid = validity(t0, TTL, Duration::ZERO);
        k.insert(id(1), TTL, valid, t0);
        let mut now = t0 + TTL / 3;
        let ids = take(&mut k, now);
        assert_eq!(k.failed(ids[0], now), Some(Event::Jeopardy { id: id(1) }));
        // Retries keep coming, jeopardy is reported once.
        loop {
            now = k.next_deadline().unwrap();
            if now >= valid {
                break;
            }
            let ids = take(&mut k, now);
            assert_eq!(ids, vec![id(1)]);
            assert_eq!(k.failed(id(1), now), None);
        }
        assert!(k.expire(valid - ms(1)).is_empty());
        assert_eq!(
            k.expire(valid),
            vec![Event::Lost {
                id: id(1),
                end: SessionEnd::Expired
            }]
        );
        assert_eq!(k.len(), 0);
        // A late reply for a removed lease changes nothing.
        assert!(k
            .renewed(id(1), Some(TTL), now, now, Duration::ZERO)
            .is_none());
    }

    #[test]
    fn a_reply_after_the_validity_ran_out_does_not_revive() {
        let t0 = Instant::now();
        let mut k = Keepalive::default();
        let valid = validity(t0, TTL, Duration::ZERO);
        k.insert(id(1), TTL, valid, t0);
        let sent = t0 + TTL / 3;
        take(&mut k, sent);
        assert_eq!(
            k.renewed(id(1), Some(TTL), sent, valid, Duration::ZERO),
            Some(Event::Lost {
                id: id(1),
                end: SessionEnd::Expired
            })
        );
        assert_eq!(k.len(), 0);
    }

    #[test]
    fn a_clock_step_shortens_the_leases_renewed_before_it() {
        let t0 = Instant::now();
        let mut k = Keepalive::default();
        let valid = validity(t0, TTL, Duration::ZERO);
        k.insert(id(1), TTL, valid, t0);
        k.insert(id(2), TTL, valid, t0);
        let changed = k.shorten(ms(2000), |i| i != id(2));
        assert_eq!(changed, vec![(id(1), valid - ms(2000))]);
        assert!(k.expire(valid - ms(2000)).contains(&Event::Lost {
            id: id(1),
            end: SessionEnd::Expired
        }));
        assert!(k.contains(id(2)));
    }

    #[test]
    fn all_due_renews_everything_now() {
        let t0 = Instant::now();
        let mut k = Keepalive::default();
        k.insert(id(1), TTL, validity(t0, TTL, Duration::ZERO), t0);
        k.insert(id(2), TTL, validity(t0, TTL, Duration::ZERO), t0);
        let now = t0 + ms(10);
        k.all_due(now);
        assert_eq!(take(&mut k, now).len(), 2);
    }

    #[test]
    fn a_suspected_failover_puts_unconfirmed_leases_in_jeopardy_and_renews_them_now() {
        let t0 = Instant::now();
        let mut k = Keepalive::default();
        for n in 1..=3 {
            k.insert(id(n), TTL, validity(t0, TTL, Duration::ZERO), t0);
        }
        let now = t0 + ms(10);
        // Lease 1 was just confirmed by the reply that revealed the new server.
        let events = k.suspect(now, |i| i != id(1));
        let mut jeopardy: Vec<_> = events
            .iter()
            .map(|e| match e {
                Event::Jeopardy { id } => *id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        jeopardy.sort();
        assert_eq!(jeopardy, vec![id(2), id(3)]);
        let due = take(&mut k, now);
        assert!(
            due.contains(&id(2)) && due.contains(&id(3)),
            "both renewed at once (lease 1, of the same namespace and due within TTL/3, may go along)"
        );
        // Already in jeopardy: not reported twice.
        assert!(k
            .suspect(now, |_| true)
            .iter()
            .all(|e| matches!(e, Event::Jeopardy { id: i } if *i == id(1))));
        // A confirming renewal clears it.
        assert!(matches!(
            k.renewed(id(2), Some(TTL), now, now, Duration::ZERO),
            Some(Event::Renewed { .. })
        ));
    }

    #[test]
    fn not_found_is_lost_at_once() {
        let t0 = Instant::now();
        let mut k = Keepalive::default();
        k.insert(id(1), TTL, validity(t0, TTL, Duration::ZERO), t0);
        let now = t0 + TTL / 3;
        take(&mut k, now);
        assert_eq!(
            k.renewed(id(1), None, now, now, Duration::ZERO),
            Some(Event::Lost {
                id: id(1),
                end: SessionEnd::LeaseNotFound
            })
        );
        assert!(!k.contains(id(1)));
        assert_eq!(k.next_deadline(), None);
    }

    #[test]
    fn server_clock_forward_step_is_measured() {
        let mut c = ServerClock::default();
        let t0 = Instant::now();
        let s0 = 1_800_000_000_000_000u64;
        assert_eq!(c.observe(s0, t0, t0 + ms(1)), Duration::ZERO);
        // 3 s later by both clocks: no step.
        let t1 = t0 + ms(3000);
        assert_eq!(c.observe(s0 + 3_000_000, t1, t1 + ms(1)), Duration::ZERO);
        // Next reply: local 3 s, server 5 s: a step of about 2 s minus the allowance.
        let t2 = t1 + ms(3000);
        let step = c.observe(s0 + 8_000_000, t2, t2 + ms(1));
        let allowed = ms(3001).mul_f64(1.0 + DRIFT) + MARGIN_FIXED;
        assert_eq!(step, Duration::from_secs(5) - allowed);
        // A server clock stepping back is not a hazard.
        let t3 = t2 + ms(3000);
        assert_eq!(c.observe(s0, t3, t3), Duration::ZERO);
    }
}
