//! When each lock this process holds was acquired, so that the age of the oldest can be
//! reported while it is still held: the hold-time histogram records a hold only when it ends,
//! so a lock stuck for hours would show nothing until it is let go.
//!
//! Guards register here when they acquire and leave when they drop ([`HeldSince`]); the
//! keepalive supervisor publishes the gauge at each renewal (so at least every TTL/3 while any
//! lock is held, since a held lock has a live session), and so do acquisitions and releases.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

use metrics::gauge;

use super::metrics as m;

/// Per kind label: (acquired, ticket) of every lock held.
type ByKind = BTreeMap<&'static str, BTreeSet<(Instant, u64)>>;

/// The locks held in one client, by kind label and acquisition instant.
#[derive(Debug, Default)]
pub(crate) struct Held {
    next: AtomicU64,
    /// Per kind: (acquired, ticket) of every lock held; a kind stays once seen, so its gauge
    /// drops to 0 when its last lock goes.
    by_kind: StdMutex<ByKind>,
}

impl Held {
    /// Record a lock of `kind` acquired at `at`; it stays recorded until the ticket drops.
    pub(crate) fn insert(self: &Arc<Held>, kind: &'static str, at: Instant) -> HeldSince {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(kind).or_default().insert((at, ticket));
        self.publish(Instant::now());
        HeldSince {
            held: self.clone(),
            kind,
            key: (at, ticket),
        }
    }

    /// The age of the oldest lock of each kind seen so far (zero for a kind none is held of).
    pub(crate) fn oldest(&self, now: Instant) -> Vec<(&'static str, f64)> {
        self.lock()
            .iter()
            .map(|(kind, held)| {
                let age = held.first().map_or(0.0, |(at, _)| {
                    now.saturating_duration_since(*at).as_secs_f64()
                });
                (*kind, age)
            })
            .collect()
    }

    /// Set the gauge of every kind.
    pub(crate) fn publish(&self, now: Instant) {
        for (kind, age) in self.oldest(now) {
            gauge!(m::LOCK_OLDEST_HELD, "kind" => kind).set(age);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ByKind> {
        self.by_kind.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A lock's place in [`Held`]: dropping it takes the lock out.
#[derive(Debug)]
pub(crate) struct HeldSince {
    held: Arc<Held>,
    kind: &'static str,
    key: (Instant, u64),
}

impl Drop for HeldSince {
    fn drop(&mut self) {
        if let Some(of_kind) = self.held.lock().get_mut(self.kind) {
            of_kind.remove(&self.key);
        }
        self.held.publish(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_oldest_held_lock_of_each_kind_is_reported_until_it_goes() {
        let held = Arc::new(Held::default());
        let t0 = Instant::now();
        let old = held.insert("mutex", t0);
        let young = held.insert("mutex", t0 + Duration::from_secs(5));
        let now = t0 + Duration::from_secs(10);
        assert_eq!(held.oldest(now), vec![("mutex", 10.0)]);
        drop(old);
        assert_eq!(held.oldest(now), vec![("mutex", 5.0)]);
        drop(young);
        assert_eq!(
            held.oldest(now),
            vec![("mutex", 0.0)],
            "a kind seen stays, at zero"
        );
    }

    #[test]
    fn kinds_are_reported_apart() {
        let held = Arc::new(Held::default());
        let t0 = Instant::now();
        let _m = held.insert("mutex", t0);
        let _s = held.insert("semaphore", t0 + Duration::from_secs(3));
        let now = t0 + Duration::from_secs(4);
        assert_eq!(held.oldest(now), vec![("mutex", 4.0), ("semaphore", 1.0)]);
    }
}
