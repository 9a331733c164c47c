//! All Redis I/O of the command path goes through [`Conn`]: EVALSHA with NOSCRIPT
//! reload-and-retry, per-call timeouts, batches of lock calls (`src/batch.rs`), and the
//! mapping of Redis errors to [`Error`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use fred::clients::Pool;
use fred::error::{Error as RedisError, ErrorKind};
use fred::interfaces::{ClientLike, LuaInterface, ServerInterface};
use fred::types::config::Options;
use fred::types::{ClusterHash, Value};
use metrics::{counter, histogram};

use crate::batch::{self, Batcher, Call};
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::script::LuaScript;

#[derive(Clone)]
pub(crate) struct Conn {
    pool: Pool,
    timeout: Duration,
    namespace: String,
    durability: Option<Durability>,
    /// The namespace's cluster slot: where `WAIT` must go to follow the script it covers.
    slot: u16,
    loads: Arc<Loads>,
    /// Lock calls waiting to go in a batch; `None` when batching is off or with durability.
    batcher: Option<Arc<Batcher>>,
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
        counter!(m::SCRIPT_RELOADS, "script" => script.name).increment(1);
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
            slot: fred::util::redis_keyslot(format!("{{{namespace}}}").as_bytes()),
            loads: Arc::default(),
            // With durability every grant needs its own WAIT: no batches.
            batcher: (batch_locks && durability.is_none()).then(Arc::default),
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
    /// (`src/batch.rs`); that changes nothing the caller sees.
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
            if let (Some(batcher), true) = (&self.batcher, batch::batched(script)) {
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

    /// Queue a batchable call and wait for its reply; the first calls start flushers.
    async fn eval_batched(
        &self,
        batcher: &Batcher,
        script: &'static LuaScript,
        keys: Vec<String>,
        args: Vec<String>,
        timeout: Duration,
    ) -> Result<Value> {
        let (reply, replied) = tokio::sync::oneshot::channel();
        let call = Call {
            script,
            keys,
            args,
            reply,
        };
        if batcher.push(call) {
            // A task of its own, so that the batch goes on when this caller is dropped.
            tokio::spawn(self.clone().flush());
        }
        match replied.await {
            Ok(result) => result.map_err(|e| classify(e, timeout)),
            // The flusher was dropped with the runtime.
            Err(_) => Err(Error::Closed),
        }
    }

    /// Send queued batchable calls until none are left: a lone call as its own script, more
    /// as one `mutex_batch` call.
    async fn flush(self) {
        let Some(batcher) = self.batcher.clone() else {
            return;
        };
        while let Some(mut calls) = batcher.next() {
            histogram!(m::LOCK_BATCH).record(calls.len() as f64);
            let client = self.pool.next_connected();
            let within = |call| async {
                tokio::time::timeout(self.timeout, call)
                    .await
                    .unwrap_or_else(|_| {
                        Err(RedisError::new(ErrorKind::Timeout, "script call timed out"))
                    })
            };
            if calls.len() == 1 {
                let c = calls.remove(0);
                let result = within(self.evalsha(client, c.script, c.keys, c.args)).await;
                let _ = c.reply.send(result);
                continue;
            }
            let (keys, args, senders) = batch::encode(calls);
            let replies = within(self.evalsha(client, batch::script(), keys, args))
                .await
                .and_then(|reply| batch::decode(reply, senders.len()));
            match replies {
                Ok(replies) => {
                    for (sender, result) in senders.into_iter().zip(replies) {
                        let _ = sender.send(result);
                    }
                }
                Err(e) => {
                    for sender in senders {
                        let _ = sender.send(Err(e.clone()));
                    }
                }
            }
        }
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

    async fn evalsha(
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

/// A batch slot held by a call that went out on its own (`Batcher::try_direct`). Given back
/// when the call ends or is dropped; calls that queued meanwhile get a flusher.
struct DirectSlot<'a> {
    conn: &'a Conn,
    batcher: &'a Batcher,
}

impl Drop for DirectSlot<'_> {
    fn drop(&mut self) {
        if self.batcher.end_direct() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(self.conn.clone().flush())),
                // Dropped outside a runtime (it is shutting down): nobody is left to wait.
                Err(_) => self.batcher.abandon(),
            }
        }
    }
}

/// fred's error for a command that found no connection to send on (never sent; the pool
/// sends each command at most once).
fn not_sent(e: &RedisError) -> bool {
    e.details().starts_with("Failed to route command")
}

/// Low-cardinality label for an error.
fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Timeout(_) => "timeout",
        Error::Unreachable(_) => "unreachable",
        Error::WrongType { .. } => "wrong_type",
        Error::CorruptData { .. } => "corrupt_data",
        Error::PermissionDenied(_) => "permission",
        Error::Tls(_) => "tls",
        Error::InvalidArgument(_) => "argument",
        Error::NotReplicated { .. } => "not_replicated",
        _ => "other",
    }
}

/// Redis's ACL errors name neither the key nor the channel nor the namespace: add `what` was
/// being done to a [`Error::PermissionDenied`]; other errors pass unchanged.
pub(crate) fn denied_during(e: Error, what: impl FnOnce() -> String) -> Error {
    match e {
        Error::PermissionDenied(m) => Error::PermissionDenied(format!("{m} ({})", what())),
        e => e,
    }
}

/// Map a Redis/fred error to ours. Script errors come as `LH<CODE> <details>`, with Redis's
/// " script: <sha>, on @user_script:<line>." appended.
pub(crate) fn classify(e: RedisError, timeout: Duration) -> Error {
    let details = e.details();
    let details = details
        .rfind(" script: ")
        .map_or(details, |at| &details[..at]);
    if let Some(rest) = details.strip_prefix("LHWRONGTYPE ") {
        let mut parts = rest.splitn(3, ' ');
        if let (Some(found), Some(expected), Some(key)) = (parts.next(), parts.next(), parts.next())
        {
            return Error::WrongType {
                key: key.to_owned(),
                found: found.to_owned(),
                expected: expected.to_owned(),
            };
        }
    }
    if let Some(rest) = details.strip_prefix("LHCORRUPT ") {
        let (detail, key) = rest.split_once(": ").unwrap_or((rest, ""));
        return Error::CorruptData {
            key: key.to_owned(),
            detail: detail.to_owned(),
        };
    }
    if let Some(rest) = details.strip_prefix("LHARG ") {
        return Error::InvalidArgument(rest.to_owned());
    }
    // A command refused by the ACL answers NOPERM; one refused inside a script answers
    // "ERR The user executing the script can't …" on Redis 7.0 (NOPERM on later versions).
    if details.starts_with("NOPERM") || details.contains("The user executing the script can't") {
        return Error::PermissionDenied(details.to_owned());
    }
    // A command whose connection closed while it was in flight (the pool sends each command
    // at most once): it may or may not have run.
    if details.starts_with("Too many failed write attempts") {
        return Error::Unreachable(format!(
            "the connection closed with the call in flight (it may have run): {details}"
        ));
    }
    if not_sent(&e) {
        return Error::Unreachable(format!("no connection to send the call on: {details}"));
    }
    if let Some(why) = crate::tls::handshake_failure(details) {
        return Error::Tls(why);
    }
    match e.kind() {
        #[cfg(feature = "tls")]
        ErrorKind::Tls => Error::Tls(details.to_owned()),
        ErrorKind::Timeout => Error::Timeout(timeout),
        ErrorKind::IO | ErrorKind::Canceled => Error::Unreachable(details.to_owned()),
        _ => Error::Redis(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script_error(msg: &str) -> RedisError {
        RedisError::new(ErrorKind::Unknown, msg.to_owned())
    }

    /// The texts Redis 7.0.15 answers, checked against a server (see tests/acl.rs).
    #[test]
    fn acl_denials_are_permission_denied() {
        let t = Duration::from_secs(1);
        for (reply, kept) in [
            (
                "NOPERM this user has no permissions to access one of the keys used as arguments",
                "one of the keys",
            ),
            (
                "NOPERM this user has no permissions to access one of the channels used as arguments",
                "one of the channels",
            ),
            ("NOPERM this user has no permissions to run the 'evalsha' command", "'evalsha'"),
            (
                "ERR The user executing the script can't access at least one of the keys \
                 mentioned in the command arguments script: 6e8f06, on @user_script:1.",
                "can't access at least one of the keys mentioned in the command arguments",
            ),
            (
                "ERR The user executing the script can't publish to the channel mentioned in \
                 the command script: 3f1665, on @user_script:1.",
                "can't publish to the channel mentioned in the command",
            ),
            (
                "ERR The user executing the script can't run this command or subcommand \
                 script: d7e1e1, on @user_script:1.",
                "can't run this command or subcommand",
            ),
        ] {
            match classify(script_error(reply), t) {
                Error::PermissionDenied(m) => {
                    assert!(m.contains(kept), "{m}");
                    assert!(!m.contains("@user_script"), "{m}");
                }
                other => panic!("{reply}: {other:?}"),
            }
        }
        let e = denied_during(classify(script_error("NOPERM no"), t), || "doing x".into());
        assert!(matches!(e, Error::PermissionDenied(ref m) if m == "NOPERM no (doing x)"));
        let e = denied_during(Error::Closed, || unreachable!());
        assert!(matches!(e, Error::Closed));
    }

    #[test]
    fn script_errors_are_typed() {
        let t = Duration::from_secs(1);
        let e = classify(
            script_error("LHWRONGTYPE string zset {ns}:mutex:a b script: 3f, on @user_script:40."),
            t,
        );
        match e {
            Error::WrongType {
                key,
                found,
                expected,
            } => {
                assert_eq!(key, "{ns}:mutex:a b");
                assert_eq!(found, "string");
                assert_eq!(expected, "zset");
            }
            other => panic!("{other:?}"),
        }
        let e = classify(
            script_error("LHCORRUPT revision counter is not a number: {ns}:rev"),
            t,
        );
        assert!(matches!(e, Error::CorruptData { ref key, .. } if key == "{ns}:rev"));
        assert!(matches!(
            classify(script_error("LHARG bad"), t),
            Error::InvalidArgument(_)
        ));
        assert!(matches!(
            classify(script_error("NOPERM no"), t),
            Error::PermissionDenied(_)
        ));
        assert!(matches!(
            classify(RedisError::new(ErrorKind::Timeout, "t"), t),
            Error::Timeout(_)
        ));
        // Truncated or odd messages never panic.
        for odd in [
            "LHWRONGTYPE",
            "LHWRONGTYPE a",
            "LHCORRUPT ",
            " script: ",
            "",
        ] {
            let _ = classify(script_error(odd), t);
        }
    }
}
