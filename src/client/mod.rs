//! The client: one connection pool, one subscriber connection (the doorbell), one keepalive
//! supervisor task, shared by every session of the process, in every namespace it serves.

mod builder;
mod leases;

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

pub use builder::ClientBuilder;

use crate::base::error::Result;
use crate::base::limits::check_namespace;
use crate::base::session_state::OnDrop;
use crate::lease::Op;
use crate::redis::classify::{classify, denied_during};
use crate::redis::doorbell::{ChannelTicket, Doorbell};
use crate::redis::spread::Layout;
use crate::redis::Core;

/// Namespace used when none is set.
pub const DEFAULT_NAMESPACE: &str = "default";

pub(crate) struct ClientInner {
    /// This handle's namespace.
    core: Arc<Core>,
    ops: mpsc::UnboundedSender<Op>,
    pub(crate) doorbell: Arc<Doorbell>,
    /// Live sessions of the whole client, every namespace.
    pub(crate) live_sessions: Arc<AtomicUsize>,
    pub(crate) on_drop: OnDrop,
    /// The lock-delay of this client's mutexes unless set per mutex.
    pub(crate) lock_delay: std::time::Duration,
    /// A spread namespace's layout and its sub-namespaces (`None` when unspread).
    pub(crate) spread: Option<Arc<Spread>>,
}

/// A spread namespace, as a client sees it: its layout, and a handle of this client on each
/// sub-namespace (sharing its connections, doorbell connection and supervisor).
pub(crate) struct Spread {
    pub(crate) layout: Layout,
    pub(crate) subs: Vec<Client>,
}

impl Deref for ClientInner {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl ClientInner {
    /// This handle's namespace, as the supervisor's work names it.
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

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

/// A leasehold client: a handle on one namespace of a set of connections.
///
/// Cheap to clone (an `Arc` inside); every clone, session and guard shares one connection pool,
/// one subscriber connection and one keepalive supervisor task, and so does every handle on
/// another namespace made by [`with_namespace`](Client::with_namespace). When the last of them
/// is dropped, the supervisor finishes pending background work (bounded to a few seconds) and
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

    /// A handle on `namespace` that shares this client's connections, doorbell connection and
    /// keepalive supervisor (and its settings: timeouts, durability, eviction policy, what a
    /// dropped session does). A process that works in many namespaces needs one client, not
    /// one per namespace: each namespace adds one doorbell channel subscription
    /// (`{namespace}:wake:<client id>`) and, while it has sessions, one renewal call per tick
    /// (a namespace is one Cluster slot, so its leases are renewed together). The connections
    /// keep the name of the namespace the client was built for.
    ///
    /// Fails with [`Error::InvalidNamespace`](crate::Error::InvalidNamespace) for a malformed
    /// name, and with [`Error::PermissionDenied`](crate::Error::PermissionDenied) when the
    /// Redis user may not use the namespace's doorbell channel; nothing is written either way.
    ///
    /// ```no_run
    /// # async fn demo() -> leasehold::Result<()> {
    /// let orders = leasehold::Client::builder()
    ///     .url("redis://127.0.0.1:6379")
    ///     .namespace("orders")
    ///     .build()
    ///     .await?;
    /// let billing = orders.with_namespace("billing").await?;
    /// // Two sessions, two namespaces, one set of connections and one keepalive task.
    /// let a = orders.session().await?;
    /// let b = billing.session().await?;
    /// assert_eq!(a.namespace(), "orders");
    /// assert_eq!(b.namespace(), "billing");
    /// # Ok(()) }
    /// ```
    pub async fn with_namespace(&self, namespace: &str) -> Result<Client> {
        check_namespace(namespace)?;
        if namespace == self.namespace() {
            return Ok(self.clone());
        }
        self.namespace_handle(namespace).await
    }

    /// A handle on `namespace` (already checked, or a sub-namespace's name), unspread.
    pub(crate) async fn namespace_handle(&self, namespace: &str) -> Result<Client> {
        let core = Arc::new(self.inner.core.for_namespace(namespace));
        let wake = core.keys.wake(&core.id);
        self.inner.doorbell.add_wake_channel(&wake);
        let subscribed = async {
            builder::may_use_channel(core.conn.pool(), &wake)
                .await
                .map_err(|e| classify(e, core.conn.timeout()))?;
            core.subscribe(wake.clone()).await
        };
        subscribed.await.map_err(|e| {
            denied_during(e, || {
                format!("doorbell channel {wake} of namespace {namespace:?}")
            })
        })?;
        Ok(Client {
            inner: Arc::new(ClientInner {
                core,
                ops: self.inner.ops.clone(),
                doorbell: self.inner.doorbell.clone(),
                live_sessions: self.inner.live_sessions.clone(),
                on_drop: self.inner.on_drop,
                lock_delay: self.inner.lock_delay,
                spread: None,
            }),
        })
    }

    /// How many sub-namespaces this client spreads its namespace over
    /// ([`ClientBuilder::spread`]); 1 when it does not.
    pub fn spread(&self) -> u16 {
        self.spread_layout().map_or(1, Layout::n)
    }

    /// The namespace where lock, election or recipe `name` lives: on a spread namespace, its
    /// sub-namespace (`<ns>/<k>/<j>`, the hash tag of its keys); otherwise this client's
    /// namespace. Keys put with [`put`](Client::put) and everything else namespace-wide
    /// (watch, transactions, the lease registry) stay in the namespace itself.
    ///
    /// ```no_run
    /// # async fn demo() -> leasehold::Result<()> {
    /// let client = leasehold::Client::builder()
    ///     .url("redis-cluster://127.0.0.1:7000")
    ///     .namespace("orders")
    ///     .spread(48)
    ///     .build()
    ///     .await?;
    /// // Names that share a {tag} share a sub-namespace.
    /// assert_eq!(
    ///     client.sub_namespace_of("{invoice-42}:charge"),
    ///     client.sub_namespace_of("{invoice-42}:refund"),
    /// );
    /// # Ok(()) }
    /// ```
    pub fn sub_namespace_of(&self, name: &str) -> &str {
        match &self.inner.spread {
            Some(spread) => spread.layout.sub(spread.layout.index_of(name)),
            None => self.namespace(),
        }
    }

    /// The spread layout, when this client spreads its namespace.
    pub(crate) fn spread_layout(&self) -> Option<&Layout> {
        self.inner.spread.as_deref().map(|s| &s.layout)
    }

    /// This client's handle on sub-namespace `k` of its spread namespace.
    pub(crate) fn sub_client(&self, k: u16) -> Option<&Client> {
        self.inner.spread.as_ref()?.subs.get(usize::from(k))
    }

    /// This client's handles on the sub-namespaces of its spread namespace (none when unspread).
    pub(crate) fn sub_clients(&self) -> impl Iterator<Item = &Client> + Clone {
        self.inner.spread.iter().flat_map(|s| s.subs.iter())
    }

    /// The handle to use for object `name`: on a spread namespace, the name's sub-namespace's.
    pub(crate) fn for_name(&self, name: &str) -> &Client {
        match &self.inner.spread {
            Some(spread) => spread
                .subs
                .get(usize::from(spread.layout.index_of(name)))
                .unwrap_or(self),
            None => self,
        }
    }

    /// This handle, spread over `layout`'s sub-namespaces: one handle per sub-namespace,
    /// subscribed to its doorbell channel.
    pub(crate) async fn spread_over(self, layout: Layout) -> Result<Client> {
        let subs = layout.subs().iter().map(|sub| self.namespace_handle(sub));
        let subs = futures_util::future::try_join_all(subs).await?;
        let i = &self.inner;
        Ok(Client {
            inner: Arc::new(ClientInner {
                core: i.core.clone(),
                ops: i.ops.clone(),
                doorbell: i.doorbell.clone(),
                live_sessions: i.live_sessions.clone(),
                on_drop: i.on_drop,
                lock_delay: i.lock_delay,
                spread: Some(Arc::new(Spread { layout, subs })),
            }),
        })
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

    /// Whether this client calls leasehold's scripts as Redis functions (`FCALL` of its
    /// function library, Redis 7 and Valkey) rather than with EVALSHA. Decided when the client
    /// connects: functions are used when the library is on the server or this client's Redis
    /// user may load it (see `docs/acl.md`). It turns false if a later call finds functions
    /// refused, or the library lost and not loadable by this user; it never turns true again.
    /// Both ways run the same scripts with the same guarantees; functions cost Redis less per
    /// call (BENCHMARKS.md).
    pub fn uses_functions(&self) -> bool {
        self.inner.conn.functions()
    }

    /// Load leasehold's function library ([`function_library_name`](crate::function_library_name))
    /// on the server, on every primary of a cluster, and call it from now on: what an operator
    /// does once per deploy where namespace users may not load functions themselves
    /// (`docs/acl.md`; the CLI's `leasehold functions load`). Loading a library that is there
    /// already is not an error.
    ///
    /// Fails with [`Error::PermissionDenied`](crate::Error::PermissionDenied) when this user
    /// may not `FUNCTION LOAD`, and with [`Error::Redis`](crate::Error::Redis) on a server
    /// without functions (Redis 6.2); nothing is loaded then, and calls go on as before.
    ///
    /// ```no_run
    /// # async fn demo() -> leasehold::Result<()> {
    /// let admin = leasehold::Client::connect("redis://admin:secret@redis.internal:6379").await?;
    /// admin.load_functions().await?;
    /// println!("loaded {}", leasehold::function_library_name());
    /// # Ok(()) }
    /// ```
    pub async fn load_functions(&self) -> Result<()> {
        self.inner.conn.load_functions().await
    }

    /// What this client shares with its sessions and supervisor.
    pub(crate) fn shared(&self) -> &ClientInner {
        &self.inner
    }

    /// Sessions of this client whose handles are alive, in every namespace it serves (also
    /// the `leasehold_sessions_live` gauge). A number that grows with traffic is the session-per-request leak.
    pub fn live_sessions(&self) -> usize {
        self.inner.live_sessions.load(Ordering::SeqCst)
    }
}
