//! Metric names (all prefixed `leasehold_`) and what they mean, via the `metrics` facade.
//!
//! Install any `metrics` recorder (e.g. `metrics-exporter-prometheus`) to collect them.
//! Labels are low-cardinality only: never a lock name or a lease id.
//!
//! [`ALL`] is the one list: the descriptions given to the recorder ([`describe`]), the table in
//! the README and the Grafana dashboard's coverage are checked against it. Exporters that need
//! histogram buckets (Prometheus) take them from it.

use std::sync::Once;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Gauge: sessions (handles) alive in this process.
pub const SESSIONS_LIVE: &str = "leasehold_sessions_live";
/// Counter: leases granted by this process.
pub const LEASES_GRANTED: &str = "leasehold_leases_granted_total";
/// Counter: leases revoked by this process.
pub const LEASES_REVOKED: &str = "leasehold_leases_revoked_total";
/// Counter: expired leases (of any client) swept by this process's renewals.
pub const LEASES_EXPIRED: &str = "leasehold_leases_expired_total";
/// Counter: batched renewal script calls.
pub const RENEW_CALLS: &str = "leasehold_renew_calls_total";
/// Histogram, seconds: round trip of one renewal call.
pub const RENEW_LATENCY: &str = "leasehold_renew_latency_seconds";
/// Histogram, seconds: local validity left on a lease when its renewal came back.
pub const RENEW_HEADROOM: &str = "leasehold_renew_headroom_seconds";
/// Histogram: leases renewed per renewal call.
pub const RENEW_BATCH: &str = "leasehold_renew_batch_size";
/// Counter, label `reason`: renewals that failed or were late.
pub const SESSION_JEOPARDY: &str = "leasehold_session_jeopardy_total";
/// Counter, label `reason`: sessions that ended without being closed.
pub const SESSION_LOST: &str = "leasehold_session_lost_total";
/// Counter: renewals that found the Redis clock ahead of the local monotonic clock.
pub const CLOCK_FORWARD_STEPS: &str = "leasehold_clock_forward_steps_total";
/// Counter: renewals answered from a new replication history (failover, or restart
/// without data).
pub const FAILOVERS: &str = "leasehold_failovers_total";
/// Histogram, seconds, label `kind`: time from a lock call to acquisition.
pub const LOCK_WAIT: &str = "leasehold_lock_wait_seconds";
/// Histogram, seconds, label `kind`: time from acquisition to release.
pub const LOCK_HOLD: &str = "leasehold_lock_hold_seconds";
/// Gauge, seconds, label `kind`: age of the oldest lock of each kind this process holds.
pub const LOCK_OLDEST_HELD: &str = "leasehold_lock_oldest_held_seconds";
/// Counter, label `kind`: acquisitions after waiting behind a holder.
pub const LOCK_HANDOFFS: &str = "leasehold_lock_handoffs_total";
/// Histogram: mutex lock/unlock calls sent in one script call (only calls that queued
/// behind the client's lock calls in flight).
pub const LOCK_BATCH: &str = "leasehold_lock_batch_size";
/// Counter, label `script`: `NOSCRIPT` replies for a script this process had loaded before,
/// answered by loading it again.
pub const SCRIPT_RELOADS: &str = "leasehold_script_reloads_total";
/// Counter, label `kind`: Redis errors, by kind of error.
pub const REDIS_ERRORS: &str = "leasehold_redis_errors_total";
/// Gauge: 1 when the server's `maxmemory-policy` can evict leasehold's keys, 0 when it
/// cannot; unset until a policy was read.
pub const REDIS_CAN_EVICT: &str = "leasehold_redis_can_evict";

/// Counter: sub-leases granted: a session's first lock call into a sub-namespace of a spread
/// namespace (or its first since the sub-lease was dropped).
pub const SUB_LEASES_GRANTED: &str = "leasehold_sub_leases_granted_total";
/// Counter: sub-leases of spread namespaces dropped by a renewal after a renewal interval
/// unused.
pub const SUB_LEASES_DROPPED: &str = "leasehold_sub_leases_dropped_total";
/// Counter, label `sub`: acquisitions in each sub-namespace of a spread namespace (the
/// sub-namespace's index, so at most as many values as sub-namespaces).
pub const SPREAD_ACQUISITIONS: &str = "leasehold_spread_acquisitions_total";

/// What kind of value a metric is.
///
/// Exhaustive: these are the `metrics` facade's three kinds, so an exporter's `match` may rely
/// on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A count that only grows (`counter!`).
    Counter,
    /// A value that goes up and down (`gauge!`).
    Gauge,
    /// A distribution of observations (`histogram!`).
    Histogram,
}

impl Kind {
    /// `counter`, `gauge` or `histogram`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric this crate emits.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Metric {
    /// The full name, e.g. `leasehold_sessions_live` (one of this module's constants).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Label keys it carries (all low-cardinality).
    pub labels: &'static [&'static str],
    /// Suggested bucket upper bounds for a histogram (empty otherwise), for exporters that need
    /// fixed buckets, e.g. `metrics-exporter-prometheus`'s `set_buckets_for_metric`.
    pub buckets: &'static [f64],
    /// What it counts or measures (the description given to the recorder), with the values of
    /// its labels.
    pub help: &'static str,
    unit: Option<Unit>,
}

/// Every metric this crate emits.
pub const ALL: &[Metric] = &[
    gauge(SESSIONS_LIVE, "sessions (handles) alive in this process"),
    counter(LEASES_GRANTED, &[], "leases granted by this process"),
    counter(LEASES_REVOKED, &[], "leases revoked by this process"),
    counter(
        LEASES_EXPIRED,
        &[],
        "expired leases swept by this process's renewals",
    ),
    counter(RENEW_CALLS, &[], "batched renewal script calls"),
    histogram(
        RENEW_LATENCY,
        &[],
        Unit::Seconds,
        LATENCY_BUCKETS,
        "round trip of one renewal call",
    ),
    histogram(
        RENEW_HEADROOM,
        &[],
        Unit::Seconds,
        HEADROOM_BUCKETS,
        "local validity left on a lease when its renewal came back",
    ),
    histogram(
        RENEW_BATCH,
        &[],
        Unit::Count,
        BATCH_BUCKETS,
        "leases renewed per renewal call",
    ),
    counter(
        SESSION_JEOPARDY,
        &["reason"],
        "renewals that failed or were late, by reason",
    ),
    counter(
        SESSION_LOST,
        &["reason"],
        "sessions that ended without being closed, by reason",
    ),
    counter(
        CLOCK_FORWARD_STEPS,
        &[],
        "renewals that found the Redis clock ahead of the local monotonic clock",
    ),
    counter(
        FAILOVERS,
        &[],
        "renewals answered from a new replication history (failover, or restart without data)",
    ),
    histogram(
        LOCK_WAIT,
        &["kind"],
        Unit::Seconds,
        LOCK_BUCKETS,
        "time from lock() to acquisition",
    ),
    histogram(
        LOCK_HOLD,
        &["kind"],
        Unit::Seconds,
        LOCK_BUCKETS,
        "time from acquisition to release",
    ),
    gauge_with(
        LOCK_OLDEST_HELD,
        &["kind"],
        "age of the oldest lock of each kind this process holds (0 when it holds none), updated \
         at acquisitions, releases and every renewal",
    ),
    counter(
        LOCK_HANDOFFS,
        &["kind"],
        "acquisitions after waiting behind a holder",
    ),
    histogram(
        LOCK_BATCH,
        &[],
        Unit::Count,
        LOCK_BATCH_BUCKETS,
        "mutex lock/unlock calls sent in one script call, for calls that queued behind the \
         client's lock calls in flight",
    ),
    counter(
        SCRIPT_RELOADS,
        &["script"],
        "NOSCRIPT replies for a script this process had loaded before (Redis restarted, failed \
         over or flushed its scripts), answered by loading it again",
    ),
    counter(REDIS_ERRORS, &["kind"], "Redis errors, by kind of error"),
    counter(
        SUB_LEASES_GRANTED,
        &[],
        "sub-leases granted: a session's first lock call into a sub-namespace of a spread \
         namespace (or its first since the sub-lease was dropped)",
    ),
    counter(
        SUB_LEASES_DROPPED,
        &[],
        "sub-leases of spread namespaces dropped by a renewal after a renewal interval unused",
    ),
    counter(
        SPREAD_ACQUISITIONS,
        &["sub"],
        "acquisitions in each sub-namespace of a spread namespace, by the sub-namespace's index",
    ),
    gauge(
        REDIS_CAN_EVICT,
        "1 when the server's maxmemory-policy can evict leasehold's keys (any policy but \
         noeviction), 0 when it cannot; unset until a policy was read",
    ),
];

// A renewal is one small script call: sub-millisecond locally, up to the attempt timeout (5 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
// Normally about two thirds of the TTL (renewed every TTL/3); the low end is where a session
// comes close to expiring, so it is finer there. TTLs go up to 24 h.
const HEADROOM_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 86400.0,
];
// At most `keepalive::MAX_BATCH` (1000) leases per call.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
// At most `batch::MAX_CALLS` (32) calls per script call.
const LOCK_BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0];
// Waits and holds range from a free lock (sub-millisecond) to jobs that hold it for an hour.
const LOCK_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 3600.0,
];

const fn gauge(name: &'static str, help: &'static str) -> Metric {
    gauge_with(name, &[], help)
}

const fn gauge_with(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    counter(name, labels, help).of_kind(Kind::Gauge)
}

const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        labels,
        buckets: &[],
        help,
        unit: None,
    }
}

const fn histogram(
    name: &'static str,
    labels: &'static [&'static str],
    unit: Unit,
    buckets: &'static [f64],
    help: &'static str,
) -> Metric {
    let mut m = counter(name, labels, help).of_kind(Kind::Histogram);
    m.buckets = buckets;
    m.unit = Some(unit);
    m
}

impl Metric {
    const fn of_kind(mut self, kind: Kind) -> Metric {
        self.kind = kind;
        self
    }
}

/// Describe every metric to the installed recorder. Called when a client is built; safe to call
/// again after installing a recorder later.
pub fn describe() {
    for m in ALL {
        match (m.kind, m.unit) {
            (Kind::Counter, _) => describe_counter!(m.name, m.help),
            (Kind::Gauge, _) => describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(unit)) => describe_histogram!(m.name, unit, m.help),
            (Kind::Histogram, None) => describe_histogram!(m.name, m.help),
        }
    }
}

static ONCE: Once = Once::new();

pub(crate) fn describe_once() {
    ONCE.call_once(describe);
}

/// The README's metric table, as generated from [`ALL`].
#[cfg(test)]
pub(crate) fn markdown_table() -> String {
    let mut out = String::from("| name | type | labels | meaning |\n|---|---|---|---|\n");
    for m in ALL {
        let labels: Vec<String> = m.labels.iter().map(|l| format!("`{l}` ")).collect();
        out.push_str(&format!(
            "| `{}` | {} | {}| {} |\n",
            m.name,
            m.kind.name(),
            labels.concat(),
            m.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_readme_lists_every_metric_as_declared() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let table = super::markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's metric table differs from metrics::ALL; it should read:\n{table}"
        );
    }
}
