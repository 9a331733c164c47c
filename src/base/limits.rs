//! Validation of everything a caller names: namespaces, lock names, TTLs, labels.
//! All checks run before any I/O.

use std::time::Duration;

use crate::base::error::{Error, Result};

/// Shortest lease TTL accepted. Renewal runs every TTL/3, so 1 s means a renewal every ~333 ms.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest lease TTL accepted: a crashed holder blocks its locks for at most this long.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default session TTL, as etcd's.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Longest lock/election/key name in bytes (UTF-8).
pub const MAX_NAME_LEN: usize = 1024;
/// Largest value of a key or an election candidate, in bytes.
pub const MAX_VALUE_LEN: usize = 512 * 1024;
/// Longest session label in bytes (UTF-8).
pub const MAX_LABEL_LEN: usize = 256;
/// Longest namespace name.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// An election's log of leader changes keeps about this many entries; an observer that falls
/// further behind resumes at the current leader, told it missed changes.
pub const ELECTION_LOG_ENTRIES: usize = 1000;
/// An election's log keeps at most this many bytes of values (at least the newest entry): with
/// large values it holds fewer entries than [`ELECTION_LOG_ENTRIES`].
pub const ELECTION_LOG_BYTES: usize = 8 * 1024 * 1024;
// The work bounds of the scripts, which enforce them (`lua/`); named here, where the tests
// hold the scripts to them and the docs can be checked against one place.

/// Attachments one revoke, sweep or adoption script call releases at most (the rest by later
/// calls), so that a lease with millions of them never holds Redis for long.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const RELEASES_PER_CALL: u64 = 64;
/// Index entries one `get_prefix` script call looks at, at most.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const INDEX_ENTRIES_PER_CALL: u64 = 256;
/// Waiters one call of a shared queue (rwlock, semaphore) admits, at most; the next is rung
/// and its re-check goes on.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const ADMITS_PER_CALL: u64 = 128;

/// The key event log that watches read ([`Client::watch`](crate::Client::watch)) keeps about
/// this many events (the newest); a watch that falls further behind is told so
/// ([`WatchEvent::Compacted`](crate::WatchEvent::Compacted)). The log has no TTL: like the
/// revision counter, it stays, within these bounds.
pub const KV_EVENT_LOG_ENTRIES: usize = 10_000;
/// The key event log keeps at most this many bytes of values (at least the newest event).
pub const KV_EVENT_LOG_BYTES: usize = 8 * 1024 * 1024;

/// Longest lock-delay of a mutex ([`Mutex::with_lock_delay`](crate::Mutex::with_lock_delay)).
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

/// Most compares and ops one transaction ([`Txn`](crate::Txn)) holds, so that one call stays
/// short.
pub const MAX_TXN_ITEMS: usize = 128;

/// [`Client::time_to_live_with_keys`](crate::Client::time_to_live_with_keys) lists at most this
/// many of a lease's attachments.
pub const MAX_ATTACHMENTS_SHOWN: usize = 1000;

/// Check a namespace name: `[A-Za-z0-9_.-]{1,64}`.
pub(crate) fn check_namespace(ns: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidNamespace {
            namespace: ns.to_owned(),
            reason,
        })
    };
    if ns.is_empty() {
        return bad("must not be empty");
    }
    if ns.len() > MAX_NAMESPACE_LEN {
        return bad("longer than 64 characters");
    }
    if !ns
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return bad("only A-Z, a-z, 0-9, '_', '.' and '-' are allowed");
    }
    Ok(())
}

/// Check a user-supplied object name (mutex, election, key).
pub(crate) fn check_name(namespace: &str, kind: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "must not be empty".to_owned()
    } else if name.len() > MAX_NAME_LEN {
        format!("{} bytes, at most {MAX_NAME_LEN} allowed", name.len())
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        namespace: namespace.to_owned(),
        kind,
        reason,
    })
}

/// Check a TTL and return it in whole milliseconds (sub-millisecond parts are dropped).
pub(crate) fn check_ttl(ttl: Duration) -> Result<u64> {
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(Error::InvalidTtl {
            ttl,
            min: MIN_TTL,
            max: MAX_TTL,
        });
    }
    Ok(ttl.as_millis() as u64)
}

pub(crate) fn check_value(
    namespace: &str,
    kind: &'static str,
    name: &str,
    value: &str,
) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::ValueTooLarge {
            namespace: namespace.to_owned(),
            kind,
            name: name.to_owned(),
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

pub(crate) fn check_label(label: &str) -> Result<()> {
    if label.len() > MAX_LABEL_LEN {
        return Err(Error::InvalidArgument(format!(
            "session label is {} bytes, at most {MAX_LABEL_LEN} allowed",
            label.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `local NAME = <digits>` in a Lua file under `lua/`.
    fn lua_constant(file: &str, name: &str) -> u64 {
        let path = format!("{}/lua/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let prefix = format!("local {name} = ");
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{path} declares no {name}"));
        line.trim().parse().unwrap()
    }

    #[test]
    fn the_scripts_enforce_the_limits_declared_here() {
        let ms = |d: Duration| d.as_millis() as u64;
        assert_eq!(lua_constant("prelude/core.lua", "MAX_TTL_MS"), ms(MAX_TTL));
        assert_eq!(
            lua_constant("prelude/queues.lua", "LOG_CAP"),
            ELECTION_LOG_ENTRIES as u64
        );
        assert_eq!(
            lua_constant("prelude/queues.lua", "LOG_BYTES"),
            ELECTION_LOG_BYTES as u64
        );
        assert_eq!(
            lua_constant("lease/lease_ttl.lua", "ATTACHMENTS_SHOWN"),
            MAX_ATTACHMENTS_SHOWN as u64
        );
        for (file, name) in [
            ("prelude/queues.lua", "DROP_BUDGET"),
            ("lease/lease_adopt.lua", "DROP_SCAN"),
        ] {
            assert_eq!(lua_constant(file, name), RELEASES_PER_CALL, "{file} {name}");
        }
        assert_eq!(
            lua_constant("kv/kv_range.lua", "LOOK"),
            INDEX_ENTRIES_PER_CALL
        );
        assert_eq!(
            lua_constant("prelude/queues.lua", "ADMIT_BATCH"),
            ADMITS_PER_CALL
        );
        assert_eq!(
            lua_constant("kv/kv_txn.lua", "MAX_ITEMS"),
            MAX_TXN_ITEMS as u64
        );
        assert_eq!(
            lua_constant("prelude/core.lua", "MAX_LOCK_DELAY_MS"),
            ms(MAX_LOCK_DELAY)
        );
        assert_eq!(
            lua_constant("prelude/queues.lua", "KV_LOG_CAP"),
            KV_EVENT_LOG_ENTRIES as u64
        );
        assert_eq!(
            lua_constant("prelude/queues.lua", "KV_LOG_BYTES"),
            KV_EVENT_LOG_BYTES as u64
        );
    }

    #[test]
    fn namespaces() {
        for ok in ["a", "orders", "A-b_c.9", &"x".repeat(64)] {
            assert!(check_namespace(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "{x}", "a:b", "é", &"x".repeat(65), "a*"] {
            assert!(
                matches!(check_namespace(bad), Err(Error::InvalidNamespace { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn names() {
        assert!(check_name("ns", "mutex", "a/b:c {d} é").is_ok());
        assert!(check_name("ns", "mutex", &"n".repeat(MAX_NAME_LEN)).is_ok());
        assert!(matches!(
            check_name("ns", "mutex", ""),
            Err(Error::InvalidName { .. })
        ));
        let err = check_name("ns", "mutex", &"n".repeat(MAX_NAME_LEN + 1)).unwrap_err();
        assert!(err.to_string().contains("namespace \"ns\""), "{err}");
    }

    #[test]
    fn ttls() {
        assert_eq!(check_ttl(Duration::from_millis(1500)).unwrap(), 1500);
        assert_eq!(check_ttl(MAX_TTL).unwrap(), MAX_TTL.as_millis() as u64);
        for bad in [
            Duration::ZERO,
            Duration::from_millis(999),
            MAX_TTL + Duration::from_millis(1),
            Duration::MAX,
        ] {
            assert!(matches!(check_ttl(bad), Err(Error::InvalidTtl { .. })));
        }
    }
}
