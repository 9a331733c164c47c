//! Hearing a Sentinel failover as it happens.
//!
//! fred finds the primary through the sentinels only when it reconnects, and after a failover
//! that leaves the old primary running (a partition, `SENTINEL FAILOVER`) its connections stay
//! up: it went on writing to the demoted primary for about 10 s here, and those writes were
//! lost. So each client also listens to `+switch-master` on every sentinel it knows; when the
//! service it uses switches, the supervisor puts every session in jeopardy, reconnects (fred
//! asks the sentinels again) and renews every lease on the new primary, where a lease that did
//! not make it over is reported lost at once.

use std::time::Instant;

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::config::{Config, ReconnectPolicy, ServerConfig};
use fred::types::Builder;
use metrics::counter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Op, Supervisor, TaskDone};
use crate::base::metrics as m;

const CHANNEL: &str = "+switch-master";

/// A connection listening to one sentinel, and the task reading it.
pub(crate) struct SentinelWatch {
    client: SubscriberClient,
    task: JoinHandle<()>,
}

impl SentinelWatch {
    /// Close the connection and end the task (the supervisor does this when it stops, so no
    /// task outlives its client).
    pub(crate) async fn stop(self) {
        self.task.abort();
        let _ = self.client.quit().await;
    }
}

/// Connections to the sentinels of `config`, when it is a Sentinel configuration; each
/// forwards a switch of its service to the supervisor as [`Op::Failover`].
pub(crate) async fn watch(config: &Config, ops: &mpsc::UnboundedSender<Op>) -> Vec<SentinelWatch> {
    let ServerConfig::Sentinel {
        hosts,
        service_name,
        ..
    } = &config.server
    else {
        return Vec::new();
    };
    let mut watchers = Vec::new();
    for host in hosts {
        let sentinel = Config {
            server: ServerConfig::Centralized {
                server: host.clone(),
            },
            // Same TLS as the data connections; sentinels usually take no credentials.
            #[cfg(feature = "tls")]
            tls: config.tls.clone(),
            ..Default::default()
        };
        let Ok(client) = Builder::from_config(sentinel)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build_subscriber_client()
        else {
            continue;
        };
        // A sentinel that is down now is retried by fred in the background; the others speak.
        client.init().await.ok();
        if client.subscribe(CHANNEL).await.is_err() {
            tracing::debug!(sentinel = %host, "cannot listen for failovers on this sentinel yet");
        }
        let mut messages = client.message_rx();
        let mut reconnects = client.reconnect_rx();
        let (sub, ops, service) = (client.clone(), ops.downgrade(), service_name.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    msg = messages.recv() => {
                        let Ok(msg) = msg else { break };
                        // "+switch-master <service> <old ip> <old port> <new ip> <new port>"
                        let text = msg.value.as_string().unwrap_or_default();
                        if text.split(' ').next() != Some(service.as_str()) {
                            continue;
                        }
                        let Some(ops) = ops.upgrade() else { break };
                        tracing::warn!(switch = %text, "Sentinel failover: following the new primary");
                        let _ = ops.send(Op::Failover);
                    }
                    r = reconnects.recv() => {
                        if r.is_err() {
                            break;
                        }
                        let _ = sub.subscribe(CHANNEL).await;
                    }
                }
            }
        });
        watchers.push(SentinelWatch { client, task });
    }
    watchers
}

impl Supervisor {
    /// The primary switched: every session is in jeopardy until a renewal on the new primary
    /// confirms it. Renewals wait for the reconnection (fred asks the sentinels again), then all
    /// run at once. The sentinels each announce the switch; repeats during a reconnection are
    /// ignored.
    pub(super) fn failover(&mut self) {
        if self.renewals_paused {
            return;
        }
        self.renewals_paused = true;
        for ev in self.keepalive.suspect(Instant::now(), |_| true) {
            counter!(m::SESSION_JEOPARDY, "reason" => "failover").increment(1);
            self.apply(ev);
        }
        let (core, subscriber) = (self.home.clone(), self.subscriber.clone());
        self.tasks.push(Box::pin(async move {
            let reconnect = async {
                let _ = core.conn.pool().force_reconnection().await;
                let _ = subscriber.force_reconnection().await;
            };
            // Bounded: if the sentinels cannot be reached, renewals resume (and fail, and the
            // sessions run out) rather than stay paused.
            let _ = tokio::time::timeout(core.conn.timeout() * 2, reconnect).await;
            TaskDone::Reconnected
        }));
    }
}
