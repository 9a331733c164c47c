//! The wait engine shared by every queue-based primitive: the kinds of lock, waiting for a
//! turn (doorbell, re-check, withdrawal on cancel), and the held entry behind every guard.

pub(crate) mod contend;
pub(crate) mod entry;
pub(crate) mod kind;
pub(crate) mod named;

pub(crate) use kind::LockKind;
