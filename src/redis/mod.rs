//! Redis I/O: every command leasehold sends goes through here. The command pool ([`Conn`]:
//! EVALSHA with NOSCRIPT reload, per-call timeouts, `WAIT` for durability, batches of lock
//! calls), the script registry, the key layout, reply decoding, error classification, TLS and
//! the doorbell's routing table.

pub(crate) mod batch;
pub(crate) mod classify;
pub(crate) mod conn;
pub(crate) mod doorbell;
pub(crate) mod durability;
pub(crate) mod eviction;
pub(crate) mod keys;
pub(crate) mod names;
pub(crate) mod reply;
pub(crate) mod scripts;
pub(crate) mod shared;
pub(crate) mod spread;
pub(crate) mod tls;

pub(crate) use conn::Conn;
pub(crate) use keys::Keys;
pub(crate) use reply::Reply;
pub(crate) use scripts::LuaScript;
pub(crate) use shared::Core;
