//! The doorbell subscription: routing its messages, and subscribing again after a reconnection
//! or a slot migration.

use std::time::{Duration, Instant};

use fred::interfaces::{ClientLike, ClusterInterface};
use fred::types::Message;

use super::{Supervisor, TaskDone};
use crate::base::session_state::SessionEnd;
use crate::redis::doorbell::Ring;
use crate::redis::names;

impl Supervisor {
    pub(super) fn resubscribe(&mut self, renew_all: bool) {
        if renew_all {
            // Redis may have restarted and lost our leases: find out now, not at the next
            // renewal.
            self.keepalive.all_due(Instant::now());
        }
        let (sub, doorbell) = (self.subscriber.clone(), self.doorbell.clone());
        let clustered = sub.is_clustered();
        let name = names::connection_name(&self.home.keys, &self.home.id);
        self.tasks.push(Box::pin(async move {
            // Before subscribing: a subscribed RESP2 connection takes no CLIENT SETNAME.
            names::name_subscriber(&sub, &name).await;
            // On a cluster, a slot migration can still be settling: a shard channel subscribed
            // on the old owner just before it lets go is dropped again without notice. So
            // subscribe once now and once more a second later, each time from a fresh slot map.
            let rounds = if clustered { 2 } else { 1 };
            for round in 0..rounds {
                if round > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                for attempt in 1..=5u32 {
                    if clustered {
                        let _ = sub.sync_cluster().await;
                    }
                    match sub.resubscribe_all().await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, attempt, "doorbell resubscribe failed");
                            tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                        }
                    }
                }
                // Rings sent while we were not subscribed are lost: every waiter and observer
                // re-checks.
                doorbell.ring_all();
                doorbell.bump_all_channels();
            }
            TaskDone::Other
        }));
    }

    /// A message on a watched shared channel, or on one of this client's doorbell channels
    /// (one per namespace, see [`Ring`]); anything else is ignored.
    pub(super) fn on_message(&mut self, msg: Message) {
        if !self.doorbell.is_wake_channel(&msg.channel) {
            self.doorbell.channel_message(&msg.channel);
            return;
        }
        let Some(text) = msg.value.as_str() else {
            return;
        };
        let Some(ring) = Ring::parse(&text) else {
            return;
        };
        let (id, end) = match ring {
            Ring::Turn(contender) => return self.doorbell.ring(contender),
            Ring::Owner(contender, revision) => {
                return self.doorbell.ring_owner(contender, revision)
            }
            Ring::Revoked(id) => (id, SessionEnd::Revoked),
            Ring::Expired(id) => (id, SessionEnd::LeaseNotFound),
            Ring::Adopted(id) => (id, SessionEnd::Adopted),
        };
        if let Some(ev) = self.lost(id, end) {
            self.apply(ev);
        }
    }

    /// Nobody in this process watches `channel` any more: unsubscribe (unless someone started
    /// watching it again meanwhile).
    pub(super) fn unwatch(&mut self, channel: String) {
        if self.doorbell.channel_watched(&channel) {
            return;
        }
        let (core, doorbell) = (self.home.clone(), self.doorbell.clone());
        self.tasks.push(Box::pin(async move {
            let _ = core.unsubscribe(channel.clone()).await;
            // Someone started watching again while we unsubscribed: subscribe again and have
            // them re-check.
            if doorbell.channel_watched(&channel) {
                let _ = core.subscribe(channel.clone()).await;
                doorbell.channel_message(&channel);
            }
            TaskDone::Other
        }));
    }
}
