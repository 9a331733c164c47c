//! [`ClientBuilder`]: from a URL or a fred configuration to a connected client with its
//! doorbell subscription and keepalive supervisor.

use std::sync::Arc;
use std::time::Duration;

use fred::clients::{Pool, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, HashesInterface, PubsubInterface};
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::Builder;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::{Client, ClientInner, DEFAULT_NAMESPACE};
use crate::base::error::{Cause, Error, Result};
use crate::base::limits::check_namespace;
use crate::base::session_state::OnDrop;
use crate::lease::supervisor::{failover, Op, Supervisor};
use crate::redis::classify::{classify, denied_during};
use crate::redis::doorbell::Doorbell;
use crate::redis::durability::Durability;
use crate::redis::eviction::{read_policy, Eviction};
use crate::redis::names;
use crate::redis::shared::subscribe_doorbell;
use crate::redis::spread::{Layout, HASH_VERSION, MAX_SPREAD};
use crate::redis::tls;
use crate::redis::{Conn, Core, Keys};

/// A pool the caller handed in ([`ClientBuilder::fred_pool`]).
#[derive(Clone)]
struct CallersPool(Pool);

impl std::fmt::Debug for CallersPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.0.size())
            .finish()
    }
}

/// Builder for [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    config: Option<Config>,
    pool: Option<CallersPool>,
    namespace: String,
    pool_size: usize,
    command_timeout: Duration,
    connect_timeout: Duration,
    on_drop: OnDrop,
    lock_delay: Duration,
    /// Sub-namespaces the namespace is spread over (1: not spread; `None`: as recorded).
    spread: Option<u16>,
    durability: Option<Durability>,
    batch_locks: bool,
    allow_eviction: bool,
    /// CA certificates (PEM) to trust instead of the system's (feature `tls`).
    tls_roots: Option<Arc<[u8]>>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            url: "redis://127.0.0.1:6379".to_owned(),
            config: None,
            pool: None,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            pool_size: 4,
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            on_drop: OnDrop::Revoke,
            lock_delay: Duration::ZERO,
            spread: Some(1),
            durability: None,
            batch_locks: true,
            allow_eviction: false,
            tls_roots: None,
        }
    }
}

impl ClientBuilder {
    /// Redis URL (default `redis://127.0.0.1:6379`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// A fred configuration to use instead of the URL (Sentinel, Cluster, credentials, TLS with
    /// client certificates).
    ///
    /// `config` is the type of the fred version leasehold is built with: take it from
    /// [`leasehold::fred`](crate::fred) rather than from a `fred` dependency of your own,
    /// which could be another version.
    ///
    /// ```no_run
    /// # async fn demo() -> leasehold::Result<()> {
    /// use leasehold::fred::types::config::Config;
    ///
    /// let url = "redis-sentinel://127.0.0.1:26379?sentinelServiceName=mymaster";
    /// let config = Config::from_url(url).expect("a valid URL");
    /// let client = leasehold::Client::builder().fred_config(config).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn fred_config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Send commands through `pool`, a fred pool of the application's own, instead of a pool
    /// of the client's. leasehold still opens one connection of its own for its doorbell
    /// subscription (pub/sub needs a connection to itself), with the pool's configuration.
    ///
    /// What a caller can rely on:
    /// - The pool stays the caller's: leasehold neither renames its connections nor closes
    ///   them when the client goes; only its own doorbell connection is closed.
    /// - Each script call must go out at most once (a call cut off by a lost connection fails
    ///   with [`Error::Unreachable`] rather than running twice, which could report a lock just
    ///   released as not held, or queue a contender twice). So the pool must be built with
    ///   `max_command_attempts = 1`, as in the example below; `build` refuses
    ///   any other with [`Error::InvalidArgument`]. (fred's per-command options do not stop
    ///   it from resending a command in flight when its connection drops, so leasehold cannot
    ///   set this per call.)
    /// - In a Cluster the pool must be built with `max_redirections = 0`; `build` refuses any
    ///   other with [`Error::InvalidArgument`]. fred follows an `ASK` redirection by writing
    ///   `ASKING` on the connection and taking the next reply as its answer, which on a
    ///   connection with other calls in flight is theirs (a release answered `OK`). Refused
    ///   instead, a call has run nothing, and leasehold sends it again once the slot settles.
    /// - A pool without a reconnect policy does not come back after a lost connection; nor,
    ///   then, does the client.
    /// - The pool must be initialised (`Pool::init`) or be connecting: `build` waits up to the
    ///   [connect timeout](Self::connect_timeout) for it. [`url`](Self::url),
    ///   [`fred_config`](Self::fred_config) and [`pool_size`](Self::pool_size) are then
    ///   ignored.
    ///
    /// `pool` is the type of the fred version leasehold is built with: take it from
    /// [`leasehold::fred`](crate::fred).
    ///
    /// ```no_run
    /// # async fn demo() -> leasehold::Result<()> {
    /// use leasehold::fred::prelude::*;
    ///
    /// let config = Config::from_url("redis://127.0.0.1:6379").expect("a valid URL");
    /// let pool = Builder::from_config(config)
    ///     .with_connection_config(|c| c.max_command_attempts = 1)
    ///     .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
    ///     .build_pool(8)
    ///     .expect("a pool");
    /// pool.init().await.expect("connected");
    /// let client = leasehold::Client::builder()
    ///     .fred_pool(pool.clone())
    ///     .namespace("orders")
    ///     .build()
    ///     .await?;
    /// // `pool` goes on serving the application's own commands.
    /// # Ok(()) }
    /// ```
    pub fn fred_pool(mut self, pool: fred::clients::Pool) -> Self {
        self.pool = Some(CallersPool(pool));
        self
    }

    /// Namespace: `[A-Za-z0-9_.-]{1,64}` (default `default`). All keys live under `{ns}:`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Connections in the command pool (default 4, at least 1).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long one command may take before it fails with [`Error::Timeout`] (default 5 s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// What dropping the last handle of a session does, unless the session says otherwise
    /// (default [`OnDrop::Revoke`]).
    pub fn on_session_drop(mut self, on_drop: OnDrop) -> Self {
        self.on_drop = on_drop;
        self
    }

    /// The lock-delay of every mutex made through this client, unless set per mutex with
    /// [`Mutex::with_lock_delay`](crate::Mutex::with_lock_delay), which says what it does
    /// (default zero: none). At most [`MAX_LOCK_DELAY`](crate::MAX_LOCK_DELAY): `build` fails
    /// with [`Error::InvalidArgument`] beyond it.
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = delay;
        self
    }

    /// Count grants only once `durability` replicas acknowledged them (`WAIT` after every
    /// lock, lease grant/renewal, …). Off by default. See [`Durability`] for exactly what it
    /// changes; use it with Sentinel or any primary with replicas.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = Some(durability);
        self
    }

    /// Accept a server whose `maxmemory-policy` can evict leasehold's keys (default: refuse it
    /// with [`Error::EvictionPolicy`], when connecting and when a session opens). Under
    /// eviction a lock's queue entry can vanish while its holder still believes it holds, and
    /// the next contender gets the lock too; only fencing tokens checked by the resource then
    /// keep it safe. A lease hash that is evicted ends its session at the next renewal.
    ///
    /// ```no_run
    /// # async fn demo() -> leasehold::Result<()> {
    /// // A cache Redis with allkeys-lru, used for advisory locks only.
    /// let client = leasehold::Client::builder()
    ///     .url("redis://cache.internal:6379")
    ///     .allow_eviction(true)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn allow_eviction(mut self, allow: bool) -> Self {
        self.allow_eviction = allow;
        self
    }

    /// Whether mutex lock and unlock calls of many tasks may share one script call when the
    /// client already has a few of them waiting for Redis (default on). Under load this cuts
    /// Redis CPU per lock; with no load it changes nothing, since a lone call goes out at once.
    /// What each caller sees (its reply, its error, cancel safety) is the same either way; off,
    /// every call is its own script call and never waits for another task's batch. Batching is
    /// never used with [`durability`](Self::durability).
    pub fn batch_lock_calls(mut self, on: bool) -> Self {
        self.batch_locks = on;
        self
    }

    /// Trust the CA certificates in `pem` (one or more `CERTIFICATE` blocks), and only them,
    /// when verifying the server's TLS certificate: for servers whose certificate a private CA
    /// signed. Without it, `rediss://` trusts the system's root certificates.
    ///
    /// The URL must use TLS (`rediss://`, `rediss-cluster://`, `rediss-sentinel://`), else
    /// [`build`](Self::build) fails with [`Error::InvalidArgument`], as it does for PEM without
    /// a certificate. With [`fred_config`](Self::fred_config), the configuration is switched to
    /// TLS with these roots. A server that presents a certificate these roots do not vouch
    /// for, or that does not name the host of the URL, fails `build` with [`Error::Tls`].
    ///
    /// ```no_run
    /// # async fn demo() -> leasehold::Result<()> {
    /// let ca = std::fs::read("ca.pem").expect("CA certificate");
    /// let client = leasehold::Client::builder()
    ///     .url("rediss://redis.internal:6380")
    ///     .tls_root_ca_pem(ca)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_roots = Some(pem.into().into());
        self
    }

    /// Spread the namespace over `n` sub-namespaces (default 1: not spread), so that its
    /// locks spread over a Redis Cluster's shards instead of living in one slot
    /// (`docs/architecture.md`, "Spread namespaces"; the README's "Scaling out"). Each lock,
    /// election or recipe name lives in one sub-namespace, chosen by its Cluster key slot
    /// (so a `{tag}` inside names puts them together); keys with a lease, watch,
    /// transactions and STM stay in the namespace itself. What changes: fencing tokens rise per
    /// lock name, not across the namespace; a session takes a sub-lease in each sub-namespace
    /// it uses.
    ///
    /// `n` is part of the namespace: the first spread client records it, and
    /// [`build`](Self::build) refuses a client built with another `n` (also 1) with
    /// [`Error::LayoutMismatch`]; two clients mapping one name to two places would both hold
    /// its lock. A namespace is spread only while no unspread client has a live lease in it.
    /// `n` must be 1 to [`MAX_SPREAD`](crate::MAX_SPREAD) ([`Error::InvalidArgument`] at
    /// `build` otherwise); 48 falls evenly on 2, 3, 4, 6, 8, 12, 16 or 24 shards.
    ///
    /// ```no_run
    /// # async fn demo() -> leasehold::Result<()> {
    /// let client = leasehold::Client::builder()
    ///     .url("redis-cluster://127.0.0.1:7000")
    ///     .namespace("orders")
    ///     .spread(48)
    ///     .build()
    ///     .await?;
    /// let session = client.session().await?;
    /// let guard = session.mutex("invoice-42")?.lock().await?; // in orders' sub-namespace of "invoice-42"
    /// # Ok(()) }
    /// ```
    pub fn spread(mut self, n: u16) -> Self {
        self.spread = Some(n);
        self
    }

    /// Spread the namespace as it is recorded, whatever that is (not spread when nothing is
    /// recorded): for tools that work with any namespace, such as the CLI. A service should
    /// name its layout with [`spread`](Self::spread), so that a mistake is refused rather than
    /// followed.
    pub fn spread_as_recorded(mut self) -> Self {
        self.spread = None;
        self
    }

    /// Connect, subscribe to this client's doorbell and start the keepalive supervisor.
    /// Must be called inside a Tokio runtime.
    pub async fn build(self) -> Result<Client> {
        check_namespace(&self.namespace)?;
        if let Some(n) = self.spread.filter(|n| !(1..=MAX_SPREAD).contains(n)) {
            return Err(Error::InvalidArgument(format!(
                "spread {n} is outside 1..={MAX_SPREAD}"
            )));
        }
        if self.lock_delay > crate::MAX_LOCK_DELAY {
            return Err(Error::InvalidArgument(format!(
                "lock-delay {:?} is longer than {:?}",
                self.lock_delay,
                crate::MAX_LOCK_DELAY
            )));
        }
        crate::base::metrics::describe_once();
        let roots = self.tls_roots.as_deref();
        let config = match (&self.pool, self.config.clone()) {
            (Some(CallersPool(pool)), _) => tls::config_with_roots(pool.client_config(), roots)?,
            (None, Some(config)) => tls::config_with_roots(config, roots)?,
            (None, None) => tls::config_from_url(&self.url, roots)?,
        };
        let sentinel_config = config.clone();
        let clustered = config.server.is_clustered();
        if let Some(CallersPool(pool)) = &self.pool {
            let attempts = pool.connection_config().max_command_attempts;
            if attempts != 1 {
                return Err(Error::InvalidArgument(format!(
                    "the fred pool resends a command whose connection dropped \
                     (max_command_attempts = {attempts}), and a lock script run twice can \
                     report a lock just released as not held: build the pool with \
                     max_command_attempts = 1"
                )));
            }
            let redirections = pool.connection_config().max_redirections;
            if clustered && redirections != 0 {
                return Err(Error::InvalidArgument(format!(
                    "the fred pool follows Cluster redirections (max_redirections = \
                     {redirections}), and an ASK followed on a connection with other calls \
                     in flight hands them each other's replies: build the pool with \
                     max_redirections = 0"
                )));
            }
        }
        let mut builder = Builder::from_config(config);
        if let Some(CallersPool(pool)) = &self.pool {
            builder.set_connection_config(pool.connection_config().clone());
        }
        builder
            .with_connection_config(|c| {
                c.connection_timeout = self.connect_timeout;
                c.internal_command_timeout = self.command_timeout;
                // At most once: fred would send a command again after its connection closed
                // with the command in flight, and a script that had already run would run
                // twice (a release answering "not held" for the lock it had just released, a
                // lock queueing again at a later revision). A call cut off fails with
                // Error::Unreachable instead; callers and the background retries decide what
                // to send again. (A caller's pool must come so configured: see `fred_pool`.)
                c.max_command_attempts = 1;
                // Never follow a Cluster redirection (why: see `fred_pool`); `Conn::call`
                // sends a refused call again. Not per call: fred reads a per-call 0 as "the
                // client's setting".
                c.max_redirections = 0;
            })
            .with_performance_config(|p| p.default_command_timeout = self.command_timeout)
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
        let fail = |e| classify(e, self.connect_timeout);
        let (pool, owns_pool) = match &self.pool {
            Some(CallersPool(pool)) => (pool.clone(), false),
            None => (builder.build_pool(self.pool_size).map_err(fail)?, true),
        };
        let own = owns_pool.then_some(&pool);
        // The subscriber's (UN)SUBSCRIBE commands are idempotent and it runs no script: let
        // fred send them again, and follow a slot that moved.
        builder.with_connection_config(|c| {
            let default = fred::types::config::ConnectionConfig::default();
            c.max_command_attempts = default.max_command_attempts;
            c.max_redirections = default.max_redirections;
        });
        let subscriber = builder.build_subscriber_client().map_err(fail)?;
        let connect = async {
            if owns_pool {
                pool.init().await.map_err(fail)?;
            } else {
                pool.wait_for_connect().await.map_err(fail)?;
            }
            subscriber.init().await.map_err(fail)?;
            Ok::<_, Error>(())
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(unreachable(e, own, &subscriber).await),
            Err(_) => {
                let hint = if owns_pool {
                    ""
                } else {
                    " (a pool handed to leasehold must be initialised: Pool::init)"
                };
                let e = Error::Unreachable(Cause::new(format!(
                    "no connection within {:?}{hint}",
                    self.connect_timeout
                )));
                return Err(unreachable(e, own, &subscriber).await);
            }
        }
        let keys = Keys::new(&self.namespace);
        let id = uuid::Uuid::now_v7().simple().to_string();
        let wake = keys.wake(&id);
        let (doorbell, unwatched) = Doorbell::new();
        doorbell.add_wake_channel(&wake);
        // Before subscribing: a subscribed RESP2 connection takes no CLIENT SETNAME.
        let name = names::connection_name(&keys, &id);
        names::name_subscriber(&subscriber, &name).await;
        let subscribed = async {
            may_use_channel(&pool, &wake).await?;
            subscribe_doorbell(&subscriber, &wake).await
        };
        let sharded = match subscribed.await {
            Ok(sharded) => sharded,
            Err(e) => {
                let e = denied_during(fail(e), || {
                    format!("doorbell channel {wake} of namespace {:?}", self.namespace)
                });
                return Err(unreachable(e, own, &subscriber).await);
            }
        };
        if owns_pool {
            for client in pool.clients() {
                names::name_client(client, None, &name).await;
            }
        }
        let policy = read_policy(&pool).await;
        let eviction = Eviction::new(self.allow_eviction, policy);
        if let Err(e) = eviction.check() {
            return Err(unreachable(e, own, &subscriber).await);
        }
        let spread = match self.spread {
            Some(n) => n,
            None => match recorded_spread(&pool, &keys, self.command_timeout).await {
                Ok(n) => n,
                Err(e) => return Err(unreachable(e, own, &subscriber).await),
            },
        };
        let core = Arc::new(Core {
            eviction: Arc::new(eviction),
            keys,
            conn: Conn::new(
                pool,
                self.command_timeout,
                &self.namespace,
                self.durability,
                self.batch_locks,
            ),
            id,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            subscriber: subscriber.clone(),
            sharded,
            held: Arc::default(),
            spread,
        });
        core.conn.use_functions().await;
        if let Err(e) = core.check_layout().await {
            let own = owns_pool.then(|| core.conn.pool().clone());
            return Err(unreachable(e, own.as_ref(), &subscriber).await);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        if core.conn.pool().is_clustered() {
            forward_topology_changes(core.conn.pool(), &tx);
        }
        if owns_pool {
            forward_reconnections(core.conn.pool(), &tx);
        }
        let sentinels = failover::watch(&sentinel_config, &tx).await;
        tokio::spawn(
            Supervisor::new(
                core.clone(),
                owns_pool,
                subscriber,
                rx,
                doorbell.clone(),
                unwatched,
                sentinels,
            )
            .run(),
        );
        let client = Client {
            inner: Arc::new(ClientInner {
                core,
                ops: tx,
                doorbell,
                live_sessions: Arc::default(),
                on_drop: self.on_drop,
                lock_delay: self.lock_delay,
                spread: None,
            }),
        };
        if spread <= 1 {
            return Ok(client);
        }
        client
            .spread_over(Layout::new(&self.namespace, spread))
            .await
    }
}

/// The spread recorded in the namespace (1 when none is), for
/// [`ClientBuilder::spread_as_recorded`].
async fn recorded_spread(pool: &Pool, keys: &Keys, timeout: Duration) -> Result<u16> {
    let (n, hash): (Option<String>, Option<String>) = pool
        .hmget(keys.meta(), vec!["spread", "hash"])
        .await
        .map_err(|e| classify(e, timeout))?;
    let Some(n) = n else {
        return Ok(1);
    };
    match (n.parse::<u16>(), hash.as_deref()) {
        (Ok(n), Some(HASH_VERSION)) if (1..=MAX_SPREAD).contains(&n) => Ok(n),
        _ => Err(Error::LayoutMismatch(format!(
            "the namespace records spread {n:?} with name hash {hash:?}, which this client \
             does not know (it knows name hash {HASH_VERSION})"
        ))),
    }
}

/// Tell the supervisor when any pooled connection sees the cluster's slots move. One small task
/// per pooled connection, ending when the pool closes; it holds only a weak handle on the
/// supervisor's inbox, so it never keeps the supervisor alive.
fn forward_topology_changes(pool: &Pool, ops: &mpsc::UnboundedSender<Op>) {
    for client in pool.clients() {
        let mut changes = client.cluster_change_rx();
        let ops = ops.downgrade();
        tokio::spawn(async move {
            // Lagged means changes were missed: still a change.
            while !matches!(changes.recv().await, Err(RecvError::Closed)) {
                let Some(ops) = ops.upgrade() else { break };
                let _ = ops.send(Op::TopologyChanged);
            }
        });
    }
}

/// Tell the supervisor when a pooled connection comes back, so that it names it again. As
/// [`forward_topology_changes`]: one small task per connection, holding only a weak handle on
/// the supervisor's inbox, ending when the client closes.
fn forward_reconnections(pool: &Pool, ops: &mpsc::UnboundedSender<Op>) {
    let receivers = pool.clients().iter().map(|c| c.reconnect_rx());
    for (pooled, mut reconnects) in receivers.enumerate() {
        let ops = ops.downgrade();
        tokio::spawn(async move {
            loop {
                let server = match reconnects.recv().await {
                    Ok(server) => server,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                };
                let Some(ops) = ops.upgrade() else { break };
                let _ = ops.send(Op::Reconnected { pooled, server });
            }
        });
    }
}

/// fred reports nothing when the server refuses a SUBSCRIBE (the reply comes out of band), so
/// a Redis user without the namespace's channels would get a client whose doorbell never rings.
/// The same ACL rule governs PUBLISH, which does report: publish to the channel (nobody
/// listens yet) to surface a refusal at connect time.
pub(super) async fn may_use_channel(pool: &Pool, channel: &str) -> Result<(), fred::error::Error> {
    pool.next()
        .publish::<i64, _, _>(channel, "")
        .await
        .map(drop)
}

/// Stop the reconnect loops of a client that failed to connect (and of its pool, when it is
/// its own), and report why. QUIT on a connection that never came up waits out the command
/// timeout, so it runs in the background: `build` fails within the connect timeout.
async fn unreachable(e: Error, own_pool: Option<&Pool>, subscriber: &SubscriberClient) -> Error {
    let (pool, subscriber) = (own_pool.cloned(), subscriber.clone());
    tokio::spawn(async move {
        if let Some(pool) = pool {
            let _ = pool.quit().await;
        }
        let _ = subscriber.quit().await;
    });
    e
}
