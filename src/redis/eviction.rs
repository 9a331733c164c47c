//! The server's `maxmemory-policy`: whether Redis may evict leasehold's keys. Every policy but
//! `noeviction` can (the `volatile-*` ones evict lease hashes, the only keys leasehold gives a
//! TTL), and an evicted queue entry can give a lock to two holders. Read when the client
//! connects (`INFO memory`) and from every renewal reply, so a `CONFIG SET` or a failover to a
//! server configured otherwise is seen within one renewal interval.

use std::sync::Mutex as StdMutex;

use fred::clients::Pool;
use fred::interfaces::ClientLike;
use fred::types::InfoKind;

use crate::base::error::{Error, Result};
use crate::base::metrics as m;

/// The policy as last seen, and whether one that can evict was accepted.
#[derive(Debug)]
pub(crate) struct Eviction {
    allowed: bool,
    policy: StdMutex<Option<String>>,
}

impl Eviction {
    pub(crate) fn new(allowed: bool, policy: Option<String>) -> Eviction {
        if let Some(policy) = &policy {
            publish(policy);
        }
        Eviction {
            allowed,
            policy: StdMutex::new(policy),
        }
    }

    /// The policy a server last reported (`None`: never read, e.g. `INFO` not permitted).
    pub(crate) fn policy(&self) -> Option<String> {
        self.lock().clone()
    }

    /// Record the policy a renewal reply reported.
    pub(crate) fn observe(&self, policy: &str) {
        if policy.is_empty() {
            return;
        }
        let mut seen = self.lock();
        if seen.as_deref() != Some(policy) {
            if can_evict(policy) {
                tracing::error!(
                    policy,
                    allowed = self.allowed,
                    "Redis maxmemory-policy can now evict lock keys"
                );
            }
            *seen = Some(policy.to_owned());
            publish(policy);
        }
    }

    /// [`Error::EvictionPolicy`] when the last policy seen can evict and that was not allowed.
    pub(crate) fn check(&self) -> Result<()> {
        match self.lock().as_deref() {
            Some(policy) if can_evict(policy) && !self.allowed => Err(Error::EvictionPolicy {
                policy: policy.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.policy.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn publish(policy: &str) {
    metrics::gauge!(m::REDIS_CAN_EVICT).set(if can_evict(policy) { 1.0 } else { 0.0 });
}

/// Whether `policy` lets Redis evict keys leasehold relies on.
pub(crate) fn can_evict(policy: &str) -> bool {
    policy != "noeviction"
}

/// The `maxmemory_policy` field of an `INFO memory` reply.
pub(crate) fn policy_in_info(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.strip_prefix("maxmemory_policy:"))
        .map(str::trim)
}

/// Ask the server for its policy; `None` when it does not say (or `INFO` is not permitted).
pub(crate) async fn read_policy(pool: &Pool) -> Option<String> {
    match pool.next().info::<String>(Some(InfoKind::Memory)).await {
        Ok(info) => policy_in_info(&info).map(str::to_owned),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read maxmemory-policy");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_noeviction_is_safe_and_a_refusal_names_the_policy() {
        assert!(!can_evict("noeviction"));
        for p in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-ttl",
        ] {
            assert!(can_evict(p), "{p}");
        }
        let info = "# Memory\r\nused_memory:1\r\nmaxmemory_policy:allkeys-lru\r\nx:y\r\n";
        assert_eq!(policy_in_info(info), Some("allkeys-lru"));
        assert_eq!(policy_in_info("# Memory\r\n"), None);
        let refused = Eviction::new(false, Some("allkeys-lru".into()));
        assert!(matches!(
            refused.check(),
            Err(Error::EvictionPolicy { ref policy }) if policy == "allkeys-lru"
        ));
        assert!(Eviction::new(true, Some("allkeys-lru".into()))
            .check()
            .is_ok());
        let changed = Eviction::new(false, Some("noeviction".into()));
        assert!(changed.check().is_ok());
        changed.observe("volatile-lru");
        assert!(changed.check().is_err());
        changed.observe("");
        assert_eq!(changed.policy().as_deref(), Some("volatile-lru"));
        changed.observe("noeviction");
        assert!(changed.check().is_ok());
        assert!(Eviction::new(false, None).check().is_ok());
    }
}
