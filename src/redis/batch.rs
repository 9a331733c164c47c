//! Batching of the lock hot path across tasks: when a client already has [`IN_FLIGHT`] lock
//! script calls waiting for Redis, further `mutex_acquire` / `mutex_release` calls queue here
//! and go together in one `lua/lock/mutex_batch.lua` call as soon as a slot frees.
//!
//! Why: at high concurrency the lock is bound by Redis CPU, and much of a script call's cost
//! is paid before its first command (reading the request, `EVALSHA`, the prelude, `TIME`, the
//! revision read; see BENCHMARKS.md). A batch pays that once. A lone call (nothing else in
//! flight) goes out at once as its own script, from the caller's task, so batching adds no
//! latency when there is no load; under load a call waits at most for one batch call of the
//! same client to return.
//!
//! What a caller can rely on is unchanged: each call runs as it would alone, with its own reply
//! or error (one call's typed error does not fail the others, and writes nothing). Calls in one
//! batch run in the order they were queued; batches in flight at the same time, like separate
//! calls on a pool's connections, reach Redis in any order. Batches are not used with
//! [`Durability`](crate::Durability), where every grant is followed by its own `WAIT`.
//!
//! [`Batcher`] is the queue, without I/O: it decides when a flusher runs and what it takes;
//! [`encode`] and [`decode`] are the wire format; the `impl Conn` block below sends.

use std::collections::VecDeque;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use fred::error::{Error as RedisError, ErrorKind};
use fred::types::Value;
use metrics::histogram;
use tokio::sync::oneshot;

use super::classify::classify;
use super::scripts::{self, LuaScript};
use super::Conn;
use crate::base::error::{Error, Result};
use crate::base::metrics as m;

/// Batch calls one client keeps in flight before further calls queue. More slots mean smaller
/// batches and less waiting; fewer mean larger batches and less Redis CPU per call.
pub(crate) const IN_FLIGHT: usize = 4;

/// Most calls in one batch: bounds how long one batch keeps Redis busy (about 40 µs per call
/// on a small machine, so about 1.3 ms).
pub(crate) const MAX_CALLS: usize = 32;

/// Where a call's reply goes.
pub(crate) type Reply = oneshot::Sender<Result<Value, RedisError>>;

/// A queued call and where its reply goes.
pub(crate) struct Call {
    pub(crate) script: &'static LuaScript,
    pub(crate) keys: Vec<String>,
    pub(crate) args: Vec<String>,
    pub(crate) reply: Reply,
}

/// The per-client queue of batchable calls.
#[derive(Default)]
pub(crate) struct Batcher {
    state: StdMutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Call>,
    /// Flushers running (each sends one batch at a time).
    flushers: usize,
}

impl State {
    /// Take one of the [`IN_FLIGHT`] slots if one is free.
    fn take_slot(&mut self) -> bool {
        let free = self.flushers < IN_FLIGHT;
        if free {
            self.flushers += 1;
        }
        free
    }
}

impl Batcher {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `call`. Returns true when the caller must start a flusher (a slot was free); the
    /// flusher then takes batches with [`Batcher::next`] until the queue is empty.
    pub(crate) fn push(&self, call: Call) -> bool {
        let mut s = self.state();
        s.queue.push_back(call);
        s.take_slot()
    }

    /// Take a slot for a call that goes out at once as its own script call, from the caller's
    /// own task: only when nothing is queued (so it overtakes nobody) and a slot is free. The
    /// caller must then call [`Batcher::end_direct`] once, however the call ends.
    pub(crate) fn try_direct(&self) -> bool {
        let mut s = self.state();
        s.queue.is_empty() && s.take_slot()
    }

    /// Give back a direct call's slot. True when calls queued meanwhile: the slot then passes
    /// to a flusher that the caller must start.
    pub(crate) fn end_direct(&self) -> bool {
        let mut s = self.state();
        if s.queue.is_empty() {
            s.flushers = s.flushers.saturating_sub(1);
            false
        } else {
            true
        }
    }

    /// Give back a slot that was to pass to a flusher that cannot be started (no runtime).
    pub(crate) fn abandon(&self) {
        let mut s = self.state();
        s.flushers = s.flushers.saturating_sub(1);
    }

    /// The next batch for a flusher (up to [`MAX_CALLS`], oldest first), or `None` when the
    /// queue is empty, in which case the flusher's slot is given back and it must stop.
    pub(crate) fn next(&self) -> Option<Vec<Call>> {
        let mut s = self.state();
        if s.queue.is_empty() {
            s.flushers = s.flushers.saturating_sub(1);
            return None;
        }
        let n = s.queue.len().min(MAX_CALLS);
        Some(s.queue.drain(..n).collect())
    }
}

/// KEYS and ARGV of one `mutex_batch` call for `calls`, whose first two keys (rev, leases) are
/// the same: every call of a client is in its namespace. A call that does not fit (fewer than
/// two keys, another namespace) is answered with an error here and left out. Returns the reply
/// senders of the calls sent, in order. Keys and arguments are moved, not copied.
pub(crate) fn encode(calls: Vec<Call>) -> (Vec<String>, Vec<String>, Vec<Reply>) {
    let mut keys: Vec<String> = Vec::new();
    let mut args = Vec::new();
    let mut sent = Vec::with_capacity(calls.len());
    for call in calls {
        let Call {
            script,
            keys: mut own_keys,
            args: own_args,
            reply,
        } = call;
        let fits = own_keys.len() >= 2 && (keys.is_empty() || own_keys[..2] == keys[..2]);
        if !fits {
            let _ = reply.send(Err(RedisError::new(
                ErrorKind::InvalidArgument,
                format!("LHARG {} keys outside the batch's namespace", script.name),
            )));
            continue;
        }
        let shared: Vec<String> = own_keys.drain(..2).collect();
        if keys.is_empty() {
            keys = shared;
        }
        args.push(script.name.to_owned());
        args.push(own_keys.len().to_string());
        args.push(own_args.len().to_string());
        keys.append(&mut own_keys);
        args.extend(own_args);
        sent.push(reply);
    }
    (keys, args, sent)
}

/// Split a `mutex_batch` reply into one result per call (`calls` of them): an error item
/// becomes that call's error, with the message the script raised.
pub(crate) fn decode(
    reply: Value,
    calls: usize,
) -> Result<Vec<Result<Value, RedisError>>, RedisError> {
    let bad = |why: &str| RedisError::new(ErrorKind::Parse, format!("mutex_batch reply: {why}"));
    let Value::Array(items) = reply else {
        return Err(bad("not an array"));
    };
    if items.len() != calls * 2 {
        return Err(bad(&format!("{} items for {calls} calls", items.len())));
    }
    let mut out = Vec::with_capacity(calls);
    let mut items = items.into_iter();
    while let (Some(status), Some(value)) = (items.next(), items.next()) {
        out.push(match status {
            Value::Integer(1) => Ok(value),
            Value::Integer(0) => {
                let msg = value.as_string().unwrap_or_default();
                Err(RedisError::new(ErrorKind::Unknown, msg))
            }
            _ => return Err(bad("status is neither 0 nor 1")),
        });
    }
    Ok(out)
}

impl Conn {
    /// Queue a batchable call and wait for its reply; the first calls start flushers.
    pub(super) async fn eval_batched(
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
            let (keys, args, senders) = encode(calls);
            let replies = within(self.evalsha(client, &scripts::MUTEX_BATCH, keys, args))
                .await
                .and_then(|reply| decode(reply, senders.len()));
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
}

/// A batch slot held by a call that went out on its own (`Batcher::try_direct`). Given back
/// when the call ends or is dropped; calls that queued meanwhile get a flusher.
pub(super) struct DirectSlot<'a> {
    pub(super) conn: &'a Conn,
    pub(super) batcher: &'a Batcher,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn call(
        script: &'static LuaScript,
        keys: &[&str],
        args: &[&str],
    ) -> (Call, oneshot::Receiver<Result<Value, RedisError>>) {
        let (tx, rx) = oneshot::channel();
        let call = Call {
            script,
            keys: keys.iter().map(|k| k.to_string()).collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
            reply: tx,
        };
        (call, rx)
    }

    fn acquire() -> &'static LuaScript {
        &scripts::MUTEX_ACQUIRE
    }

    #[test]
    fn calls_queue_behind_the_flushers_in_flight_and_go_oldest_first() {
        let b = Batcher::default();
        let mut receivers = Vec::new();
        // The first IN_FLIGHT calls each start a flusher; later ones only queue.
        for i in 0..IN_FLIGHT + MAX_CALLS + 3 {
            let (c, rx) = call(acquire(), &["r", "l", "q"], &[&i.to_string()]);
            receivers.push(rx);
            assert_eq!(b.push(c), i < IN_FLIGHT, "call {i}");
        }
        // Flushers take at most MAX_CALLS, in order.
        let first = b.next().unwrap();
        assert_eq!(first.len(), MAX_CALLS);
        assert_eq!(first[0].args, ["0"]);
        assert_eq!(first[MAX_CALLS - 1].args, [(MAX_CALLS - 1).to_string()]);
        let second = b.next().unwrap();
        assert_eq!(second.len(), IN_FLIGHT + 3);
        assert_eq!(second[0].args, [MAX_CALLS.to_string()]);
        // An empty queue stops a flusher and frees its slot: the next push starts one.
        for _ in 0..IN_FLIGHT {
            assert!(b.next().is_none());
        }
        assert_eq!(b.state().flushers, 0);
        let (c, _rx) = call(acquire(), &["r", "l", "q"], &[]);
        assert!(b.push(c));
        // Never below zero, however often an empty queue is asked.
        assert!(b.next().is_some());
        assert!(b.next().is_none());
        assert!(b.next().is_none());
        assert_eq!(b.state().flushers, 0);
    }

    #[test]
    fn a_call_goes_direct_only_with_a_free_slot_and_nothing_queued() {
        let b = Batcher::default();
        for _ in 0..IN_FLIGHT {
            assert!(b.try_direct());
        }
        assert!(!b.try_direct(), "every slot is taken");
        // Queued behind the direct calls: no flusher yet.
        let (c, _rx) = call(acquire(), &["r", "l", "q"], &[]);
        assert!(!b.push(c));
        // The first direct call to end hands its slot to a flusher for the queued call.
        assert!(b.end_direct());
        let batch = b.next().unwrap();
        assert_eq!(batch.len(), 1);
        // Nothing queued now: the other direct calls give their slots back...
        for _ in 1..IN_FLIGHT {
            assert!(!b.end_direct());
        }
        // ...and so does the flusher when it finds the queue empty.
        assert!(b.next().is_none());
        assert_eq!(b.state().flushers, 0);
        // A call queued while a slot is free starts a flusher; while it is queued, nobody
        // goes direct (that would overtake it).
        let (c, _rx) = call(acquire(), &["r", "l", "q"], &[]);
        assert!(b.push(c));
        assert!(!b.try_direct());
        b.abandon();
        assert_eq!(b.state().flushers, 0);
    }

    #[test]
    fn encode_lays_out_each_call_and_refuses_another_namespace() {
        let (a, _ra) = call(acquire(), &["r", "l", "q1", "a1"], &["x", "y"]);
        let (r, _rr) = call(&scripts::MUTEX_RELEASE, &["r", "l", "q2", "a2"], &["z"]);
        let (foreign, mut rf) = call(acquire(), &["r2", "l", "q3", "a3"], &[]);
        let (keys, args, sent) = encode(vec![a, foreign, r]);
        assert_eq!(keys, ["r", "l", "q1", "a1", "q2", "a2"]);
        assert_eq!(
            args,
            [
                "mutex_acquire",
                "2",
                "2",
                "x",
                "y",
                "mutex_release",
                "2",
                "1",
                "z"
            ]
        );
        assert_eq!(sent.len(), 2);
        let refused = rf.try_recv().unwrap().unwrap_err();
        assert!(
            refused.details().starts_with("LHARG mutex_acquire"),
            "{refused:?}"
        );
    }

    #[test]
    fn decode_gives_each_call_its_reply_or_error() {
        let s = |x: &str| Value::String(x.into());
        let reply = Value::Array(vec![
            Value::Integer(1),
            Value::Array(vec![s("held"), Value::Integer(7)]),
            Value::Integer(0),
            s("LHWRONGTYPE string zset {ns}:mutex:a"),
            Value::Integer(1),
            Value::Null,
        ]);
        let out = decode(reply, 3).unwrap();
        assert!(matches!(&out[0], Ok(Value::Array(v)) if v.len() == 2));
        assert_eq!(
            out[1].as_ref().unwrap_err().details(),
            "LHWRONGTYPE string zset {ns}:mutex:a"
        );
        assert!(matches!(out[2], Ok(Value::Null)));
        // Anything else is an error for the whole batch, never a panic.
        assert!(decode(Value::Null, 1).is_err());
        assert!(decode(Value::Array(vec![Value::Integer(1)]), 1).is_err());
        assert!(decode(Value::Array(vec![Value::Integer(2), Value::Null]), 1).is_err());
        assert!(decode(Value::Array(vec![]), 0).unwrap().is_empty());
    }
}
