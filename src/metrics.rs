//! Metric names (all prefixed `leasehold_`) and their descriptions, via the `metrics` facade.
//!
//! Install any `metrics` recorder (e.g. `metrics-exporter-prometheus`) to collect them.
//! Labels are low-cardinality only: never a lock name or a lease id.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `leasehold_sessions_live` | gauge | | sessions (handles) alive in this process |
//! | `leasehold_leases_granted_total` | counter | | leases granted by this process |
//! | `leasehold_leases_revoked_total` | counter | | leases revoked by this process |
//! | `leasehold_leases_expired_total` | counter | | expired leases swept by this process's renewals |
//! | `leasehold_renew_calls_total` | counter | | batched renewal script calls |
//! | `leasehold_renew_latency_seconds` | histogram | | round trip of one renewal call |
//! | `leasehold_renew_headroom_seconds` | histogram | | local validity left when a renewal came back |
//! | `leasehold_renew_batch_size` | histogram | | leases renewed per call |
//! | `leasehold_session_jeopardy_total` | counter | `reason` | a renewal failed or was late |
//! | `leasehold_session_lost_total` | counter | `reason` | a session ended without being closed |
//! | `leasehold_clock_forward_steps_total` | counter | | server clock ran ahead of ours |
//! | `leasehold_failovers_total` | counter | | renewals answered from a new replication history (failover, restart) |
//! | `leasehold_lock_wait_seconds` | histogram | `kind` | time from `lock()` to acquisition |
//! | `leasehold_lock_hold_seconds` | histogram | `kind` | time from acquisition to release |
//! | `leasehold_lock_handoffs_total` | counter | `kind` | acquisitions after waiting behind a holder |
//! | `leasehold_lock_batch_size` | histogram | | mutex lock/unlock calls per script call, for calls that queued behind a client's in-flight ones |
//! | `leasehold_script_reloads_total` | counter | `script` | NOSCRIPT answered by a reload |
//! | `leasehold_redis_errors_total` | counter | `kind` | Redis errors by kind |
//!
//! [`ALL`] lists them for code: exporters that need histogram buckets (Prometheus), dashboard
//! checks, documentation generators.

use std::sync::Once;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const SESSIONS_LIVE: &str = "leasehold_sessions_live";
pub const LEASES_GRANTED: &str = "leasehold_leases_granted_total";
pub const LEASES_REVOKED: &str = "leasehold_leases_revoked_total";
pub const LEASES_EXPIRED: &str = "leasehold_leases_expired_total";
pub const RENEW_CALLS: &str = "leasehold_renew_calls_total";
pub const RENEW_LATENCY: &str = "leasehold_renew_latency_seconds";
pub const RENEW_HEADROOM: &str = "leasehold_renew_headroom_seconds";
pub const RENEW_BATCH: &str = "leasehold_renew_batch_size";
pub const SESSION_JEOPARDY: &str = "leasehold_session_jeopardy_total";
pub const SESSION_LOST: &str = "leasehold_session_lost_total";
pub const CLOCK_FORWARD_STEPS: &str = "leasehold_clock_forward_steps_total";
pub const FAILOVERS: &str = "leasehold_failovers_total";
pub const LOCK_WAIT: &str = "leasehold_lock_wait_seconds";
pub const LOCK_HOLD: &str = "leasehold_lock_hold_seconds";
pub const LOCK_HANDOFFS: &str = "leasehold_lock_handoffs_total";
pub const LOCK_BATCH: &str = "leasehold_lock_batch_size";
pub const SCRIPT_RELOADS: &str = "leasehold_script_reloads_total";
pub const REDIS_ERRORS: &str = "leasehold_redis_errors_total";

/// What kind of value a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric this crate emits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// Label keys it carries (all low-cardinality).
    pub labels: &'static [&'static str],
    /// Suggested bucket upper bounds for a histogram (empty otherwise), for exporters that need
    /// fixed buckets, e.g. `metrics-exporter-prometheus`'s `set_buckets_for_metric`.
    pub buckets: &'static [f64],
}

/// Every metric this crate emits, in the order of the table above.
pub const ALL: &[Metric] = &[
    metric(SESSIONS_LIVE, Kind::Gauge, &[]),
    metric(LEASES_GRANTED, Kind::Counter, &[]),
    metric(LEASES_REVOKED, Kind::Counter, &[]),
    metric(LEASES_EXPIRED, Kind::Counter, &[]),
    metric(RENEW_CALLS, Kind::Counter, &[]),
    histogram(RENEW_LATENCY, &[], LATENCY_BUCKETS),
    histogram(RENEW_HEADROOM, &[], HEADROOM_BUCKETS),
    histogram(RENEW_BATCH, &[], BATCH_BUCKETS),
    metric(SESSION_JEOPARDY, Kind::Counter, &["reason"]),
    metric(SESSION_LOST, Kind::Counter, &["reason"]),
    metric(CLOCK_FORWARD_STEPS, Kind::Counter, &[]),
    metric(FAILOVERS, Kind::Counter, &[]),
    histogram(LOCK_WAIT, &["kind"], LOCK_BUCKETS),
    histogram(LOCK_HOLD, &["kind"], LOCK_BUCKETS),
    metric(LOCK_HANDOFFS, Kind::Counter, &["kind"]),
    histogram(LOCK_BATCH, &[], LOCK_BATCH_BUCKETS),
    metric(SCRIPT_RELOADS, Kind::Counter, &["script"]),
    metric(REDIS_ERRORS, Kind::Counter, &["kind"]),
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
// At most `keepalive::MAX_BATCH` (500) leases per call.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
// At most `batch::MAX_CALLS` (32) calls per script call.
const LOCK_BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0];
// Waits and holds range from a free lock (sub-millisecond) to jobs that hold it for an hour.
const LOCK_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 3600.0,
];

const fn metric(name: &'static str, kind: Kind, labels: &'static [&'static str]) -> Metric {
    Metric {
        name,
        kind,
        labels,
        buckets: &[],
    }
}

const fn histogram(
    name: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
) -> Metric {
    Metric {
        name,
        kind: Kind::Histogram,
        labels,
        buckets,
    }
}

/// Describe every metric to the installed recorder. Called when a client is built; safe to call
/// again after installing a recorder later.
pub fn describe() {
    describe_gauge!(SESSIONS_LIVE, "Sessions alive in this process");
    describe_counter!(LEASES_GRANTED, "Leases granted by this process");
    describe_counter!(LEASES_REVOKED, "Leases revoked by this process");
    describe_counter!(
        LEASES_EXPIRED,
        "Expired leases swept by this process's renewals"
    );
    describe_counter!(RENEW_CALLS, "Batched lease renewal calls sent to Redis");
    describe_histogram!(
        RENEW_LATENCY,
        Unit::Seconds,
        "Round trip of one renewal call"
    );
    describe_histogram!(
        RENEW_HEADROOM,
        Unit::Seconds,
        "Local validity left on a lease when its renewal came back"
    );
    describe_histogram!(RENEW_BATCH, Unit::Count, "Leases renewed per renewal call");
    describe_counter!(
        SESSION_JEOPARDY,
        "Renewals that failed or were late, by reason"
    );
    describe_counter!(
        SESSION_LOST,
        "Sessions that ended without being closed, by reason"
    );
    describe_counter!(
        CLOCK_FORWARD_STEPS,
        "Renewals that found the Redis clock ahead of the local monotonic clock"
    );
    describe_counter!(
        FAILOVERS,
        "Renewals answered from a new replication history (failover or restart without data)"
    );
    describe_histogram!(LOCK_WAIT, Unit::Seconds, "Time from lock() to acquisition");
    describe_histogram!(LOCK_HOLD, Unit::Seconds, "Time a lock was held");
    describe_counter!(LOCK_HANDOFFS, "Acquisitions after waiting behind a holder");
    describe_histogram!(
        LOCK_BATCH,
        Unit::Count,
        "Mutex lock/unlock calls sent in one script call, for calls that queued while the \
         client already had its lock calls in flight"
    );
    describe_counter!(
        SCRIPT_RELOADS,
        "NOSCRIPT replies answered by reloading the script"
    );
    describe_counter!(REDIS_ERRORS, "Redis errors, by kind");
}

static ONCE: Once = Once::new();

pub(crate) fn describe_once() {
    ONCE.call_once(describe);
}
