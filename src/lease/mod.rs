//! Leases and their keepalive: the lease records and the scripts that grant, renew, adopt,
//! revoke and read them; the renewal state machine (no I/O); the one supervisor task per
//! client that drives it.

pub(crate) mod keepalive;
pub(crate) mod leases;
pub(crate) mod sub_lease;
pub(crate) mod supervisor;

pub(crate) use supervisor::Op;
