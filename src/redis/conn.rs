//! The command pool: every script call goes through [`Conn`]: EVALSHA with a NOSCRIPT
//! reload-and-retry, per-call timeouts, `WAIT` for [`Durability`], and batched lock calls
//! ([`super::batch`]). Errors are mapped by [`super::classify`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use fred::clients::Pool;
use fred::error::Error as RedisError;
use fred::interfaces::{ClientLike, LuaInterface, ServerInterface};
use fred::types::config::Options;
use fred::types::{ClusterHash, Value};
use metrics::counter;

use super::batch::{Batcher, DirectSlot};
use super::classify::{classify, denied_during, error_kind, not_sent};
use super::durability::Durability;
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
    /// Lock calls waiting to go in a batch; `None` when batching is off or with durability.
    pub(super) batcher: Option<Arc<Batcher>>,
}

/// Script loads after NOSCRIPT, one at a time per client. After a restart, failover or SCRIPT
/// FLUSH every call in flight meets NOSCRIPT at once; without this each of them would load
/// the script again (about 0.7 ms of Redis CPU per load of a full script on a small machine),
/// in every process.
#[derive(Default)]
struct Loads {
    /// Completed loads per script name: a caller that met NOSCRIPT skips its load when the
    /// count moved since it sent the call.
    done: StdMutex<HashMap<&'static str, u64>>,
    gate: tokio::sync::Mutex<()>,
}

impl Loads {
    fn count(&self, script: &LuaScript) -> u64 {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.get(script.name).copied().unwrap_or(0)
    }

    /// Load `script` unless a load completed since the caller read `seen` (`None`: load).
    async fn load(
        &self,
        client: &fred::clients::Client,
        script: &LuaScript,
        seen: Option<u64>,
    ) -> Result<(), RedisError> {
        let _one_at_a_time = self.gate.lock().await;
        if seen.is_some_and(|seen| self.count(script) != seen) {
            return Ok(());
        }
        // A script this client loaded before was lost (restart, failover, SCRIPT FLUSH); a
        // first load is not news.
        if self.count(script) > 0 {
            counter!(m::SCRIPT_RELOADS, "script" => script.name).increment(1);
            tracing::info!(
                script = script.name,
                "Redis lost a script (restart, failover or SCRIPT FLUSH): loading it again"
            );
        }
        script.script.load(client).await?;
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        *done.entry(script.name).or_default() += 1;
        Ok(())
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

    pub(super) async fn evalsha(
        &self,
        client: &fred::clients::Client,
        script: &LuaScript,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, RedisError> {
        let sha = script.script.sha1().clone();
        // Converted once: fred's keys and values share their bytes, so the copies kept for a
        // retry after NOSCRIPT cost no string copies on the common path.
        let keys: Vec<fred::types::Key> = keys.into_iter().map(Into::into).collect();
        let args: Vec<Value> = args.into_iter().map(Into::into).collect();
        let noscript = |r: &Result<Value, RedisError>| matches!(r, Err(e) if e.details().starts_with("NOSCRIPT"));
        let seen = self.loads.count(script);
        // The pool sends a command at most once, so a command that found its connection down
        // fails at once without having been sent: wait for the reconnection and send it again
        // (the caller's timeout bounds this).
        let mut client = client;
        let mut backoff = Duration::from_millis(5);
        let first = loop {
            let r = client
                .evalsha::<Value, _, _, _>(sha.clone(), keys.clone(), args.clone())
                .await;
            match r {
                Err(e) if not_sent(&e) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                    client = self.pool.next_connected();
                }
                r => break r,
            }
        };
        if !noscript(&first) {
            return first;
        }
        // Redis restarted, failed over or ran SCRIPT FLUSH: load (or let the call that is
        // loading it finish) and retry; if it is missing again, load it ourselves, once.
        self.loads.load(client, script, Some(seen)).await?;
        let second = client
            .evalsha::<Value, _, _, _>(sha.clone(), keys.clone(), args.clone())
            .await;
        if !noscript(&second) {
            return second;
        }
        self.loads.load(client, script, None).await?;
        client.evalsha(sha, keys, args).await
    }
}

/// The cluster slot of a namespace's keys.
fn slot_of(namespace: &str) -> u16 {
    fred::util::redis_keyslot(format!("{{{namespace}}}").as_bytes())
}
