//! The command pool: every script call goes through [`Conn`]: `FCALL` of leasehold's function
//! library where the server has functions, else EVALSHA; a reload-and-retry when the server
//! lost the library or the script (restart, failover, `FUNCTION FLUSH`, `SCRIPT FLUSH`);
//! per-call timeouts; `WAIT` for [`Durability`]; and batched lock calls ([`super::batch`]).
//! Errors are mapped by [`super::classify`].
//!
//! Which of `FCALL` and EVALSHA is detected, not configured: [`Conn::use_functions`] loads the
//! library when the client connects, and calls go by `FCALL` if that worked. A server without
//! `FUNCTION` (Redis 6.2) or a user not allowed `FUNCTION LOAD` keeps EVALSHA; a user allowed to
//! load but not to `FCALL` is switched to EVALSHA by its first refused call, which is then sent
//! again as EVALSHA (a refused call ran nothing).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use fred::clients::Pool;
use fred::error::Error as RedisError;
use fred::interfaces::{ClientLike, FunctionInterface, LuaInterface, ServerInterface};
use fred::types::config::Options;
use fred::types::{ClusterHash, Value};
use metrics::counter;

use super::batch::{Batcher, DirectSlot};
use super::classify::{classify, denied_during, error_kind, not_sent};
use super::durability::Durability;
use super::scripts::LIBRARY;
use super::LuaScript;
use crate::base::error::{Error, Result};
use crate::base::metrics as m;

#[derive(Clone)]
pub(crate) struct Conn {
    pub(super) pool: Pool,
    pub(super) timeout: Duration,
    namespace: String,
    durability: Option<Durability>,
    /// The namespace's cluster slot: where `WAIT` must go to follow the script it covers.
    slot: u16,
    loads: Arc<Loads>,
    /// Whether calls go by `FCALL` (see the module doc); shared by every namespace's `Conn`.
    functions: Arc<AtomicBool>,
    /// Lock calls waiting to go in a batch; `None` when batching is off or with durability.
    pub(super) batcher: Option<Arc<Batcher>>,
}

/// What a call needs loaded: the function library, or one script.
#[derive(Clone, Copy)]
enum Loadable {
    Library,
    Script(&'static LuaScript),
}

impl Loadable {
    /// Its label in the reload metric and the logs.
    fn name(self) -> &'static str {
        match self {
            Loadable::Library => "library",
            Loadable::Script(script) => script.name,
        }
    }

    /// Load it (on every primary of a cluster).
    async fn load(self, client: &fred::clients::Client) -> Result<(), RedisError> {
        match self {
            Loadable::Library => load_library(client).await,
            Loadable::Script(script) => script.script.load(client).await,
        }
    }

    /// Whether `e` says the server does not have it.
    fn missing(self, e: &RedisError) -> bool {
        match self {
            Loadable::Library => e.details().contains("Function not found"),
            Loadable::Script(_) => e.details().starts_with("NOSCRIPT"),
        }
    }
}

/// Loads after NOSCRIPT or "function not found", one at a time per client. After a restart,
/// failover or flush every call in flight meets it at once; without this each of them would
/// load again (about 0.7 ms of Redis CPU per load of a full script on a small machine, more for
/// the library), in every process.
#[derive(Default)]
struct Loads {
    /// Completed loads per name: a caller that met NOSCRIPT skips its load when the count
    /// moved since it sent the call.
    done: StdMutex<HashMap<&'static str, u64>>,
    gate: tokio::sync::Mutex<()>,
}

impl Loads {
    fn count(&self, what: Loadable) -> u64 {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.get(what.name()).copied().unwrap_or(0)
    }

    /// Load `what` unless a load completed since the caller read `seen` (`None`: load).
    async fn load(
        &self,
        client: &fred::clients::Client,
        what: Loadable,
        seen: Option<u64>,
    ) -> Result<(), RedisError> {
        let _one_at_a_time = self.gate.lock().await;
        if seen.is_some_and(|seen| self.count(what) != seen) {
            return Ok(());
        }
        // Something this client loaded before was lost (restart, failover, flush); a first
        // load is not news.
        if self.count(what) > 0 {
            counter!(m::SCRIPT_RELOADS, "script" => what.name()).increment(1);
            tracing::info!(
                script = what.name(),
                "Redis lost leasehold's scripts (restart, failover or flush): loading them again"
            );
        }
        what.load(client).await?;
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        *done.entry(what.name()).or_default() += 1;
        Ok(())
    }
}

/// Whether `e` is the ACL refusing `FCALL` itself (not one of its keys or channels).
fn fcall_refused(e: &RedisError) -> bool {
    let details = e.details();
    details.starts_with("NOPERM") && details.to_ascii_lowercase().contains("'fcall'")
}

/// Whether `e` is the ACL refusing `FUNCTION LOAD`.
fn load_refused(e: &RedisError) -> bool {
    let details = e.details();
    details.starts_with("NOPERM") && details.to_ascii_lowercase().contains("'function|load'")
}

/// `FUNCTION LOAD` of the library on the server, or on every primary of a cluster. Never with
/// `REPLACE`: a library of this name holds this very code (the name is its digest), so one that
/// is there already (another client loaded it meanwhile) is as good.
async fn load_library(client: &fred::clients::Client) -> Result<(), RedisError> {
    if !client.is_clustered() {
        return load_library_on(client).await;
    }
    for server in client.active_connections() {
        load_library_on(&client.with_cluster_node(server)).await?;
    }
    Ok(())
}

async fn load_library_on<C: FunctionInterface + Sync>(client: &C) -> Result<(), RedisError> {
    let loaded = client
        .function_load::<Value, _>(false, LIBRARY.code.as_str())
        .await;
    match loaded {
        Err(e) if e.details().contains("already exists") => Ok(()),
        r => r.map(drop),
    }
}

impl Conn {
    pub(crate) fn new(
        pool: Pool,
        timeout: Duration,
        namespace: &str,
        durability: Option<Durability>,
        batch_locks: bool,
    ) -> Conn {
        Conn {
            pool,
            timeout,
            namespace: namespace.to_owned(),
            durability,
            slot: slot_of(namespace),
            loads: Arc::default(),
            functions: Arc::default(),
            // With durability every grant needs its own WAIT: no batches.
            batcher: (batch_locks && durability.is_none()).then(Arc::default),
        }
    }

    /// The same connections for another namespace: script loads are shared (they are per
    /// server), batches are not (a batch is one call in one namespace's slot).
    pub(crate) fn for_namespace(&self, namespace: &str) -> Conn {
        Conn {
            namespace: namespace.to_owned(),
            slot: slot_of(namespace),
            batcher: self.batcher.as_ref().map(|_| Arc::default()),
            ..self.clone()
        }
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Make calls by `FCALL` from now on if the server has leasehold's function library or
    /// this client can load it; returns whether calls go by `FCALL`. Anything else (no
    /// `FUNCTION` before Redis 7, a user allowed neither `FCALL` nor `FUNCTION LOAD`, the
    /// server unreachable) leaves calls on EVALSHA.
    pub(crate) async fn use_functions(&self) -> bool {
        let client = self.pool.next();
        let probe = client
            .fcall::<String, _, _, _>(LIBRARY.version_function.as_str(), (), ())
            .await;
        let usable = match probe {
            Ok(version) => version == LIBRARY.digest,
            Err(e) if Loadable::Library.missing(&e) => {
                match self.loads.load(client, Loadable::Library, None).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::info!(
                            error = %e,
                            "cannot load leasehold's function library: calling scripts with EVALSHA"
                        );
                        false
                    }
                }
            }
            Err(e) => {
                tracing::info!(
                    error = %e,
                    "Redis functions not available (Redis before 7, or FCALL not allowed): calling scripts with EVALSHA"
                );
                false
            }
        };
        if usable {
            tracing::debug!(library = %LIBRARY.name, "calling scripts with FCALL");
        }
        self.functions.store(usable, Ordering::Relaxed);
        usable
    }

    /// Load the function library (on every primary of a cluster), and make calls by `FCALL`.
    pub(crate) async fn load_functions(&self) -> Result<()> {
        let loaded = self.loads.load(self.pool.next(), Loadable::Library, None);
        loaded.await.map_err(|e| {
            denied_during(classify(e, self.timeout), || {
                format!("loading function library {}", LIBRARY.name)
            })
        })?;
        self.functions.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether calls go by `FCALL`.
    pub(crate) fn functions(&self) -> bool {
        self.functions.load(Ordering::Relaxed)
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether grants wait for replicas ([`Durability`]).
    pub(crate) fn durable(&self) -> bool {
        self.durability.is_some()
    }

    /// Run `script` with the client's command timeout.
    pub(crate) async fn eval(
        &self,
        script: &'static LuaScript,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value> {
        self.eval_within(script, keys, args, self.timeout).await
    }

    /// Run `script`, giving up after `timeout` (the call may still have been applied).
    /// Calls of the lock hot path may go to Redis in a batch with other tasks' calls
    /// (`src/redis/batch.rs`); that changes nothing the caller sees.
    pub(crate) async fn eval_within(
        &self,
        script: &'static LuaScript,
        keys: Vec<String>,
        args: Vec<String>,
        timeout: Duration,
    ) -> Result<Value> {
        let run = async {
            // A batchable call goes out on its own, as below, while this client has a slot
            // free and nothing queued; otherwise it joins the next batch.
            let mut _direct = None;
            if let (Some(batcher), true) = (&self.batcher, script.batched) {
                if !batcher.try_direct() {
                    return self
                        .eval_batched(batcher, script, keys, args, timeout)
                        .await;
                }
                _direct = Some(DirectSlot {
                    conn: self,
                    batcher,
                });
            }
            let client = self.pool.next_connected();
            let value = self
                .evalsha(client, script, keys, args)
                .await
                .map_err(|e| classify(e, timeout))?;
            if let (true, Some(d)) = (script.grants, &self.durability) {
                self.wait_replicas(client, script, d, timeout).await?;
            }
            Ok(value)
        };
        let result = match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(timeout)),
        };
        if let Err(e) = &result {
            counter!(m::REDIS_ERRORS, "kind" => error_kind(e)).increment(1);
        }
        result.map_err(|e| {
            denied_during(e, || {
                format!(
                    "running script {} in namespace {:?}",
                    script.name, self.namespace
                )
            })
        })
    }

    /// `WAIT` on the connection that ran the script, so it covers the script's writes.
    async fn wait_replicas(
        &self,
        client: &fred::clients::Client,
        script: &LuaScript,
        d: &Durability,
        timeout: Duration,
    ) -> Result<()> {
        let routed = client.with_options(&Options {
            cluster_hash: Some(ClusterHash::Custom(self.slot)),
            ..Default::default()
        });
        let millis = i64::try_from(d.timeout.as_millis()).unwrap_or(i64::MAX);
        let acked: i64 = routed
            .wait(i64::from(d.replicas), millis)
            .await
            .map_err(|e| classify(e, timeout))?;
        if acked >= i64::from(d.replicas) {
            return Ok(());
        }
        Err(Error::NotReplicated {
            namespace: self.namespace.clone(),
            operation: script.name,
            acked: u32::try_from(acked).unwrap_or(0),
            wanted: d.replicas,
            timeout: d.timeout,
        })
    }

    /// Run `script` on `client`: by `FCALL` or EVALSHA (see the module doc), loading what the
    /// server lost and retrying. Boxed: the future of every call made through the pool would
    /// otherwise nest fred's futures deeply enough to pass the compiler's default recursion
    /// limit in a caller's `async fn`.
    pub(super) fn evalsha<'a>(
        &'a self,
        client: &'a fred::clients::Client,
        script: &'static LuaScript,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Pin<Box<dyn Future<Output = Result<Value, RedisError>> + Send + 'a>> {
        Box::pin(self.run(client, script, keys, args))
    }

    async fn run(
        &self,
        client: &fred::clients::Client,
        script: &'static LuaScript,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, RedisError> {
        // Converted once: fred's keys and values share their bytes, so the copies kept for a
        // retry cost no string copies on the common path.
        let keys: Vec<fred::types::Key> = keys.into_iter().map(Into::into).collect();
        let args: Vec<Value> = args.into_iter().map(Into::into).collect();
        if self.functions() {
            let r = self
                .call(client, script, Loadable::Library, &keys, &args)
                .await;
            match r {
                // The ACL refuses FCALL, or the library was lost (restart without persistence,
                // FUNCTION FLUSH) and this user may not load it: the call ran nothing.
                Err(e)
                    if fcall_refused(&e) || Loadable::Library.missing(&e) || load_refused(&e) =>
                {
                    tracing::warn!(error = %e, "cannot call leasehold's function library: calling scripts with EVALSHA from now on");
                    self.functions.store(false, Ordering::Relaxed);
                }
                r => return r,
            }
        }
        let what = Loadable::Script(script);
        self.call(client, script, what, &keys, &args).await
    }

    /// One call, by `FCALL` when `what` is the library: sent again after a connection that was
    /// down (never sent), and after loading `what` when the server lacks it.
    async fn call(
        &self,
        client: &fred::clients::Client,
        script: &'static LuaScript,
        what: Loadable,
        keys: &[fred::types::Key],
        args: &[Value],
    ) -> Result<Value, RedisError> {
        // In a Cluster, fred never follows a redirection (`max_redirections = 0`, see
        // `ClientBuilder::build`): a call refused with `MOVED` (fred has then read the new slot
        // layout), `ASK` or `TRYAGAIN` ran nothing and is sent again below.
        let send = |client: &fred::clients::Client| {
            let (keys, args) = (keys.to_vec(), args.to_vec());
            let client = client.clone();
            async move {
                match what {
                    Loadable::Library => client.fcall(script.function.as_str(), keys, args).await,
                    Loadable::Script(_) => {
                        let sha = script.script.sha1().clone();
                        client.evalsha(sha, keys, args).await
                    }
                }
            }
        };
        let missing = |r: &Result<Value, RedisError>| matches!(r, Err(e) if what.missing(e));
        let seen = self.loads.count(what);
        // The pool sends a command at most once, so a command that found its connection down
        // fails at once without having been sent: wait for the reconnection and send it again
        // (the caller's timeout bounds this).
        let mut client = client;
        let mut backoff = Duration::from_millis(5);
        let first = loop {
            match send(client).await {
                Err(e) if not_sent(&e) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                    client = self.pool.next_connected();
                }
                r => break r,
            }
        };
        if !missing(&first) {
            return first;
        }
        // Redis restarted, failed over or was flushed: load (or let the call that is loading
        // it finish) and retry; if it is missing again, load it ourselves, once.
        self.loads.load(client, what, Some(seen)).await?;
        let second = send(client).await;
        if !missing(&second) {
            return second;
        }
        self.loads.load(client, what, None).await?;
        send(client).await
    }
}

/// The cluster slot of a namespace's keys.
fn slot_of(namespace: &str) -> u16 {
    fred::util::redis_keyslot(format!("{{{namespace}}}").as_bytes())
}
