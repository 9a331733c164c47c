//! A session's sub-lease in one sub-namespace of a spread namespace (`docs/architecture.md`,
//! "Spread namespaces"): the state its session and the supervisor share. No I/O here.
//!
//! The session grants the sub-lease on its first use of the sub-namespace (a lock call
//! there), and the supervisor renews it with the session's other leases. When the session has
//! used it for nothing during a whole renewal interval (no call in progress, no entry held), the
//! supervisor's next renewal asks Redis to drop it instead, if nothing is attached to it and
//! it is still the same grant (its epoch): a session pays for the sub-namespaces it holds or
//! waits in, not for every one it ever touched.
//!
//! Who owns what: the session moves `Absent → Granting → Live` and pins a live sub-lease for
//! each call; the supervisor moves `Live → Retiring` when it sends a drop, and `Retiring →
//! Live` (Redis kept it: something was attached) or `→ Absent` (dropped, or the session
//! ended). A call that finds it `Granting` or `Retiring` waits for [`SubLease::changed`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::base::lease_id::LeaseId;
use crate::base::session_state::EntryCount;

/// Where a sub-lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Not granted (or dropped): the next use grants it.
    Absent,
    /// A grant is in flight.
    Granting,
    /// Granted as `epoch`; `pins` calls use it now; the supervisor saw it unused at
    /// `idle_since` and at every renewal since.
    Live {
        epoch: u64,
        pins: usize,
        idle_since: Option<Instant>,
    },
    /// A renewal that drops it if idle (grant `epoch`) is in flight, or will be retried.
    Retiring { epoch: u64 },
}

impl State {
    /// Pin a live sub-lease for one call (the supervisor does not drop it while pinned);
    /// returns whether it was live.
    pub(crate) fn pin(&mut self) -> bool {
        match self {
            State::Live {
                pins, idle_since, ..
            } => {
                *pins += 1;
                *idle_since = None;
                true
            }
            _ => false,
        }
    }
}

/// One session's sub-lease in one sub-namespace.
#[derive(Debug)]
pub(crate) struct SubLease {
    /// The sub-lease's id (the session's, derived: `LeaseId::in_sub_namespace`).
    pub(crate) id: LeaseId,
    /// Entries its session holds or waits with in this sub-namespace.
    pub(crate) entries: EntryCount,
    state: Mutex<State>,
    /// Notified at every move out of `Granting` or `Retiring`.
    pub(crate) changed: Notify,
}

/// What the supervisor does with a sub-lease that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Renew it.
    Renew,
    /// Drop it if nothing is attached and it is still grant `epoch` (else renew it).
    DropIfIdle(u64),
}

impl SubLease {
    pub(crate) fn new(id: LeaseId) -> Arc<SubLease> {
        Arc::new(SubLease {
            id,
            entries: EntryCount::default(),
            state: Mutex::new(State::Absent),
            changed: Notify::new(),
        })
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, state: State) {
        *self.state() = state;
        self.changed.notify_waiters();
    }

    /// It is not (or no longer) granted: the grant failed, it was dropped, or the session
    /// ended.
    pub(crate) fn absent(&self) {
        self.set(State::Absent);
    }

    /// A pinned call ended.
    pub(crate) fn unpin(&self) {
        if let State::Live { pins, .. } = &mut *self.state() {
            *pins = pins.saturating_sub(1);
        }
    }

    /// It is due at `now`, with renewals every `interval`: renew it, or drop it when its
    /// session has used it for nothing since the previous due renewal (no pinned call, no
    /// entry held). Moves it to `Retiring` then.
    pub(crate) fn due(&self, now: Instant, interval: Duration) -> Due {
        let held = self.entries.held();
        let mut state = self.state();
        match &mut *state {
            State::Live {
                epoch,
                pins,
                idle_since,
            } => {
                if *pins > 0 || held > 0 {
                    *idle_since = None;
                    return Due::Renew;
                }
                match *idle_since {
                    Some(since) if now.saturating_duration_since(since) >= interval => {
                        let epoch = *epoch;
                        *state = State::Retiring { epoch };
                        Due::DropIfIdle(epoch)
                    }
                    Some(_) => Due::Renew,
                    None => {
                        *idle_since = Some(now);
                        Due::Renew
                    }
                }
            }
            State::Retiring { epoch } => Due::DropIfIdle(*epoch),
            State::Absent | State::Granting => Due::Renew,
        }
    }

    /// A renewal kept it (it was renewed): a drop in flight found something attached.
    pub(crate) fn kept(&self) {
        let mut state = self.state();
        if let State::Retiring { epoch } = *state {
            *state = State::Live {
                epoch,
                pins: 0,
                idle_since: None,
            };
            drop(state);
            self.changed.notify_waiters();
        }
    }
}

/// A sub-lease pinned for one call: the supervisor does not drop it meanwhile.
#[derive(Debug)]
pub(crate) struct Pin(pub(crate) Arc<SubLease>);

impl Drop for Pin {
    fn drop(&mut self) {
        self.0.unpin();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(10);

    fn live() -> Arc<SubLease> {
        let s = SubLease::new(LeaseId::generate());
        // As a grant leaves it: pinned once, by the call that granted it.
        *s.state() = State::Live {
            epoch: 7,
            pins: 1,
            idle_since: None,
        };
        s
    }

    #[test]
    fn a_sub_lease_in_use_is_never_dropped() {
        let s = live();
        let t = Instant::now();
        // Pinned by the call that granted it.
        assert_eq!(s.due(t, INTERVAL), Due::Renew);
        assert_eq!(s.due(t + 3 * INTERVAL, INTERVAL), Due::Renew);
        s.unpin();
        s.entries.add();
        assert_eq!(s.due(t + 4 * INTERVAL, INTERVAL), Due::Renew);
        assert_eq!(s.due(t + 6 * INTERVAL, INTERVAL), Due::Renew);
    }

    #[test]
    fn an_unused_sub_lease_is_dropped_after_a_whole_interval_unused() {
        let s = live();
        s.unpin();
        let t = Instant::now();
        assert_eq!(s.due(t, INTERVAL), Due::Renew);
        assert_eq!(s.due(t + INTERVAL / 2, INTERVAL), Due::Renew);
        assert_eq!(s.due(t + INTERVAL, INTERVAL), Due::DropIfIdle(7));
        assert_eq!(*s.state(), State::Retiring { epoch: 7 });
        // A retry of the drop (its reply was lost) asks the same.
        assert_eq!(s.due(t + 2 * INTERVAL, INTERVAL), Due::DropIfIdle(7));
    }

    #[test]
    fn a_use_between_two_renewals_restarts_the_idle_interval() {
        let s = live();
        s.unpin();
        let t = Instant::now();
        assert_eq!(s.due(t, INTERVAL), Due::Renew);
        assert!(s.state().pin());
        s.unpin();
        assert_eq!(s.due(t + INTERVAL, INTERVAL), Due::Renew);
        assert_eq!(s.due(t + 2 * INTERVAL, INTERVAL), Due::DropIfIdle(7));
    }

    #[test]
    fn a_retiring_or_absent_sub_lease_cannot_be_pinned() {
        let s = live();
        s.unpin();
        let t = Instant::now();
        s.due(t, INTERVAL);
        s.due(t + INTERVAL, INTERVAL);
        assert!(!s.state().pin());
        s.kept();
        assert!(s.state().pin(), "kept by Redis: live again");
        s.absent();
        assert!(!s.state().pin());
    }
}
