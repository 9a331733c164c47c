//! The per-client doorbell: one pub/sub channel per client process (`{ns}:wake:<client id>`),
//! on which scripts publish `c <contender>` when a contender's turn has come. Waiters register
//! here before they ask the server, so a ring that arrives before they start waiting is kept.
//!
//! Observers of shared channels (an election's `{ns}:election-changes:<name>`) register here
//! too; each message bumps a counter they watch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::{mpsc, watch, Notify};

use crate::supervisor::Op;

#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    waiters: StdMutex<HashMap<String, Arc<Notify>>>,
    channels: StdMutex<HashMap<String, (usize, watch::Sender<u64>)>>,
}

impl Doorbell {
    /// Register a waiter for `member`; it stays registered while the ticket lives.
    pub(crate) fn register(self: &Arc<Self>, member: &str) -> Ticket {
        let notify = Arc::new(Notify::new());
        self.lock().insert(member.to_owned(), notify.clone());
        Ticket {
            bell: self.clone(),
            member: member.to_owned(),
            notify,
        }
    }

    /// Wake the waiter registered for `member`, if any (it re-checks with the server).
    pub(crate) fn ring(&self, member: &str) {
        if let Some(n) = self.lock().get(member) {
            n.notify_one();
        }
    }

    /// Wake every waiter: used when rings may have been missed (subscriber reconnected).
    pub(crate) fn ring_all(&self) {
        for n in self.lock().values() {
            n.notify_one();
        }
    }

    /// Watch a shared channel. The caller subscribes to it (SUBSCRIBE is idempotent); when the
    /// last ticket for a channel drops, `ops` is asked to unsubscribe.
    pub(crate) fn watch_channel(
        self: &Arc<Self>,
        channel: &str,
        ops: mpsc::UnboundedSender<Op>,
    ) -> ChannelTicket {
        let mut map = self.channels();
        let entry = map
            .entry(channel.to_owned())
            .or_insert_with(|| (0, watch::channel(0).0));
        entry.0 += 1;
        ChannelTicket {
            bell: self.clone(),
            channel: channel.to_owned(),
            rx: entry.1.subscribe(),
            ops,
        }
    }

    /// A message arrived on a shared channel: returns false when nobody watches it.
    pub(crate) fn channel_message(&self, channel: &str) -> bool {
        match self.channels().get(channel) {
            Some((_, tx)) => {
                tx.send_modify(|n| *n += 1);
                true
            }
            None => false,
        }
    }

    /// Wake every observer (messages may have been missed).
    pub(crate) fn bump_all_channels(&self) {
        for (_, tx) in self.channels().values() {
            tx.send_modify(|n| *n += 1);
        }
    }

    pub(crate) fn channel_watched(&self, channel: &str) -> bool {
        self.channels().contains_key(channel)
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, (usize, watch::Sender<u64>)>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A registered waiter; dropping it unregisters.
#[derive(Debug)]
pub(crate) struct Ticket {
    bell: Arc<Doorbell>,
    member: String,
    notify: Arc<Notify>,
}

impl Ticket {
    /// Resolves when the doorbell rang for this waiter (possibly before this call).
    pub(crate) async fn rung(&self) {
        self.notify.notified().await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut map = self.bell.lock();
        // Only our own registration: another waiter may have registered the same member since.
        if map
            .get(&self.member)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
        {
            map.remove(&self.member);
        }
    }
}

/// Watch `channel` and subscribe to it; once this returns, no message on it goes unnoticed.
pub(crate) async fn watch(
    client: &crate::client::ClientInner,
    channel: String,
) -> crate::Result<ChannelTicket> {
    let ticket = client.doorbell.watch_channel(&channel, client.ops());
    client.subscribe(channel).await?;
    Ok(ticket)
}

/// An observer of a shared channel; dropping it unregisters.
#[derive(Debug)]
pub(crate) struct ChannelTicket {
    bell: Arc<Doorbell>,
    channel: String,
    rx: watch::Receiver<u64>,
    ops: mpsc::UnboundedSender<Op>,
}

impl ChannelTicket {
    /// Resolves once a message arrived since the last call (or since registration).
    pub(crate) async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Wait for a message, at most `limit`.
    pub(crate) async fn changed_within(&mut self, limit: std::time::Duration) {
        let _ = tokio::time::timeout(limit, self.changed()).await;
    }
}

impl Drop for ChannelTicket {
    fn drop(&mut self) {
        let mut map = self.bell.channels();
        if let Some(entry) = map.get_mut(&self.channel) {
            entry.0 -= 1;
            if entry.0 == 0 {
                map.remove(&self.channel);
                let _ = self.ops.send(Op::Unsubscribe {
                    channel: self.channel.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn ring_before_wait_is_kept_and_drop_unregisters() {
        let bell = Arc::new(Doorbell::default());
        let t = bell.register("a.1");
        bell.ring("a.1");
        bell.ring("other");
        tokio::time::timeout(Duration::from_secs(1), t.rung())
            .await
            .expect("kept ring");
        assert_eq!(bell.waiting(), 1);
        drop(t);
        assert_eq!(bell.waiting(), 0);
        bell.ring("a.1"); // no waiter: nothing happens
    }
}
