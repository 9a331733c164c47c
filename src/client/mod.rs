//! The client: one connection pool, one subscriber connection (the doorbell), one keepalive
//! supervisor task, shared by every session of the process.

mod builder;
mod leases;

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

pub use builder::ClientBuilder;

use crate::base::error::Result;
use crate::base::session_state::OnDrop;
use crate::lease::Op;
use crate::redis::doorbell::{ChannelTicket, Doorbell};
use crate::redis::Core;

/// Namespace used when none is set.
pub const DEFAULT_NAMESPACE: &str = "default";

pub(crate) struct ClientInner {
    core: Arc<Core>,
    ops: mpsc::UnboundedSender<Op>,
    pub(crate) doorbell: Arc<Doorbell>,
    pub(crate) live_sessions: AtomicUsize,
    pub(crate) on_drop: OnDrop,
}

impl Deref for ClientInner {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl ClientInner {
    /// Hand work to the supervisor. Never blocks; usable from `Drop`.
    pub(crate) fn send(&self, op: Op) {
        // Fails only once the supervisor is gone (runtime shut down): leases then expire by TTL.
        let _ = self.ops.send(op);
    }

    /// Watch `channel` and subscribe to it; once this returns, no message on it goes
    /// unnoticed.
    pub(crate) async fn watch(&self, channel: String) -> Result<ChannelTicket> {
        let ticket = self.doorbell.watch_channel(&channel);
        self.subscribe(channel).await?;
        Ok(ticket)
    }
}

/// A leasehold client for one namespace.
///
/// Cheap to clone (an `Arc` inside); every clone, session and guard shares one connection pool,
/// one subscriber connection and one keepalive supervisor task. When the last of them is
/// dropped, the supervisor finishes pending background work (bounded to a few seconds) and
/// closes the connections.
///
/// ```no_run
/// # async fn demo() -> leasehold::Result<()> {
/// use leasehold::Client;
///
/// let client = Client::builder()
///     .url("redis://127.0.0.1:6379")
///     .namespace("orders")
///     .build()
///     .await?;
/// let session = client.session().await?;
/// let guard = session.mutex("invoice-42")?.lock().await?;
/// println!("fencing token {}", guard.fencing_token());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("namespace", &self.namespace())
            .field("id", &self.inner.id)
            .finish()
    }
}

impl Client {
    /// Connect to `url` (`redis://[user:pass@]host:port[/db]`, `rediss://…`) with the default
    /// namespace and settings.
    pub async fn connect(url: &str) -> Result<Client> {
        Client::builder().url(url).build().await
    }

    /// A builder for a client with more than the default settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The namespace every key of this client lives under (as the hash tag `{ns}`).
    pub fn namespace(&self) -> &str {
        self.inner.keys.namespace()
    }

    /// This client's id (recorded in its leases; names its doorbell channel).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The server's `maxmemory-policy` as last seen (when the client connected, then at each
    /// renewal); `None` when the server does not say (e.g. the ACL user may not run `INFO`).
    /// Any policy but `noeviction` can evict lock keys: see
    /// [`ClientBuilder::allow_eviction`].
    pub fn maxmemory_policy(&self) -> Option<String> {
        self.inner.eviction.policy()
    }

    /// What this client shares with its sessions and supervisor.
    pub(crate) fn shared(&self) -> &ClientInner {
        &self.inner
    }

    /// Sessions of this client whose handles are alive (also the `leasehold_sessions_live`
    /// gauge). A number that grows with traffic is the session-per-request leak.
    pub fn live_sessions(&self) -> usize {
        self.inner.live_sessions.load(Ordering::SeqCst)
    }
}
