//! Background cleanups: revokes of dropped sessions, withdrawals and releases of dropped
//! waiters and guards, and sweeps of leases left to expire.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Supervisor, TaskDone};
use crate::base::lease_id::LeaseId;
use crate::lease::keepalive::surely_expired;
use crate::redis::{Core, LuaScript};

impl Supervisor {
    pub(super) fn spawn_revoke(&mut self, ns: Arc<Core>, id: LeaseId, ttl: Duration) {
        self.tasks.push(Box::pin(async move {
            match ns.revoke_unused(id).await {
                Ok(_) => TaskDone::Other,
                Err(e) => {
                    tracing::debug!(lease = %id, error = %e, "background revoke failed; the lease will expire by its TTL");
                    TaskDone::RevokeFailed { ns, id, ttl }
                }
            }
        }));
    }

    /// Nobody renews `id` (of namespace `ns`) any more and it was not revoked: have it swept
    /// once it has surely expired, if no renewal call does it first.
    pub(super) fn orphaned(&mut self, ns: &Arc<Core>, id: LeaseId, ttl: Duration) {
        self.space(ns)
            .orphans
            .insert((surely_expired(Instant::now(), ttl), id));
    }

    /// When the first sweep-only call for orphaned leases is due, if one is needed.
    pub(super) fn orphan_sweep_at(&self) -> Option<Instant> {
        self.spaces.values().filter_map(|s| s.sweep_at()).min()
    }
}

/// Run a cleanup script, retrying transient failures with backoff for up to `retry_for`
/// (after that the lease has run out and the entry is gone with it).
pub(super) async fn cleanup(
    core: Arc<Core>,
    script: &'static LuaScript,
    keys: Vec<String>,
    args: Vec<String>,
    retry_for: Duration,
) {
    let give_up = Instant::now() + retry_for;
    let mut backoff = Duration::from_millis(50);
    loop {
        match core.conn.eval(script, keys.clone(), args.clone()).await {
            Ok(_) => return,
            Err(e) if e.is_transient() && Instant::now() + backoff < give_up => {
                tracing::debug!(script = script.name, error = %e, "background cleanup failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::warn!(script = script.name, error = %e, "background cleanup failed; the entry goes when its lease does");
                return;
            }
        }
    }
}
