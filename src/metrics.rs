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
//! | `leasehold_script_reloads_total` | counter | `script` | NOSCRIPT answered by a reload |
//! | `leasehold_redis_errors_total` | counter | `kind` | Redis errors by kind |

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
pub const SCRIPT_RELOADS: &str = "leasehold_script_reloads_total";
pub const REDIS_ERRORS: &str = "leasehold_redis_errors_total";

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
