//! One namespace's view of Redis, shared by the command path and the keepalive supervisor:
//! the key layout, the command pool ([`Conn`]), the doorbell subscriber and the client's
//! identity.

use std::sync::Arc;

use fred::clients::SubscriberClient;
use fred::interfaces::PubsubInterface;

use super::classify::classify;
use super::eviction::Eviction;
use super::{Conn, Keys};
use crate::base::error::Result;

/// What the command path and the supervisor share: key layout, connections, identity.
pub(crate) struct Core {
    pub(crate) keys: Keys,
    pub(crate) conn: Conn,
    /// Client id: names this process's doorbell channel and is recorded in its leases.
    pub(crate) id: String,
    pub(crate) host: String,
    pub(crate) pid: u32,
    /// The doorbell connection (a handle; the supervisor reads its messages).
    pub(crate) subscriber: SubscriberClient,
    /// Whether the server has sharded pub/sub (Redis >= 7): the scripts then SPUBLISH, so we
    /// SSUBSCRIBE; on a cluster that keeps doorbell traffic on the namespace's shard.
    pub(crate) sharded: bool,
    /// The server's `maxmemory-policy`, and whether one that can evict was accepted.
    pub(crate) eviction: Arc<Eviction>,
    /// The locks held through this client, for the age of the oldest.
    pub(crate) held: std::sync::Arc<crate::base::held::Held>,
    /// How many sub-namespaces this namespace is spread over, as this client was built for
    /// (1: unspread, and for every sub-namespace); every lease grant checks it
    /// (`src/redis/spread.rs`).
    pub(crate) spread: u16,
}

impl Core {
    /// The same client in another namespace: the same connections, doorbell connection,
    /// identity, eviction policy and held-lock gauge; its own keys and batches.
    pub(crate) fn for_namespace(&self, namespace: &str) -> Core {
        Core {
            keys: Keys::new(namespace),
            conn: self.conn.for_namespace(namespace),
            id: self.id.clone(),
            host: self.host.clone(),
            pid: self.pid,
            subscriber: self.subscriber.clone(),
            sharded: self.sharded,
            eviction: self.eviction.clone(),
            held: self.held.clone(),
            spread: 1,
        }
    }

    /// Subscribe the doorbell connection to `channel` (idempotent).
    pub(crate) async fn subscribe(&self, channel: String) -> Result<()> {
        self.subscription(channel, true).await
    }

    /// Undo [`Core::subscribe`].
    pub(crate) async fn unsubscribe(&self, channel: String) -> Result<()> {
        self.subscription(channel, false).await
    }

    /// (Un)subscribe, sharded when the server has sharded pub/sub.
    async fn subscription(&self, channel: String, on: bool) -> Result<()> {
        let s = &self.subscriber;
        let done = match (self.sharded, on) {
            (true, true) => s.ssubscribe(channel).await,
            (true, false) => s.sunsubscribe(channel).await,
            (false, true) => s.subscribe(channel).await,
            (false, false) => s.unsubscribe(channel).await,
        };
        done.map_err(|e| classify(e, self.conn.timeout()))
    }
}

/// Subscribe to this client's doorbell channel, sharded when the server knows how (the scripts
/// decide the same way, from the server's version). Returns whether it is sharded.
pub(crate) async fn subscribe_doorbell(
    subscriber: &SubscriberClient,
    channel: &str,
) -> Result<bool, fred::error::Error> {
    match subscriber.ssubscribe(channel).await {
        Ok(()) => Ok(true),
        Err(e) if e.details().to_ascii_lowercase().contains("unknown command") => {
            subscriber.subscribe(channel).await.map(|()| false)
        }
        Err(e) => Err(e),
    }
}
