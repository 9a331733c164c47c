//! The vocabulary every layer speaks, with no I/O: errors, limits and the checks of what a
//! caller names, metric names, lease ids, and where a session stands.

pub(crate) mod error;
pub(crate) mod held;
pub(crate) mod lease_id;
pub(crate) mod limits;
pub mod metrics;
pub(crate) mod session_state;
