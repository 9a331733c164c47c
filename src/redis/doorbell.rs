//! The per-client doorbell: one pub/sub channel per client process and namespace
//! (`{ns}:wake:<client id>`, on the namespace's shard), on which scripts publish `c <contender>` when a contender's turn may have come (it re-checks
//! with the server), or `o <contender>` when a mutex contender owns the lock now (it may take it
//! without asking again). Waiters register here before they ask the server, so a ring that
//! arrives before they start waiting is kept.
//!
//! Observers of shared channels (an election's `{ns}:election-changes:<name>`) register here
//! too; each message bumps a counter they watch.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::{mpsc, watch, Notify};

use crate::base::lease_id::LeaseId;

/// A message on a client's doorbell channel, as the scripts publish it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ring<'a> {
    /// `c <contender>`: the contender's turn may have come; it asks again.
    Turn(&'a str),
    /// `o <contender> <revision>`: a mutex contender owns now, at that revision (the releasing
    /// script saw it at the head with its lease alive). `o <contender>` without a revision (from
    /// an older client's script) counts as a [`Ring::Turn`].
    Owner(&'a str, u64),
    /// `r <lease>`: the lease was revoked.
    Revoked(LeaseId),
    /// `x <lease>`: the lease expired and was swept.
    Expired(LeaseId),
    /// `a <lease>`: another client took the lease over.
    Adopted(LeaseId),
}

impl<'a> Ring<'a> {
    /// `None` for anything else (a stray or forged message is ignored).
    pub(crate) fn parse(text: &'a str) -> Option<Ring<'a>> {
        let (kind, arg) = text.split_once(' ')?;
        match kind {
            "c" => Some(Ring::Turn(arg)),
            "o" => Some(match arg.split_once(' ') {
                Some((contender, revision)) => Ring::Owner(contender, revision.parse().ok()?),
                None => Ring::Turn(arg),
            }),
            "r" => arg.parse().ok().map(Ring::Revoked),
            "x" => arg.parse().ok().map(Ring::Expired),
            "a" => arg.parse().ok().map(Ring::Adopted),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Doorbell {
    waiters: StdMutex<HashMap<String, Arc<Bell>>>,
    channels: StdMutex<HashMap<String, (usize, watch::Sender<u64>)>>,
    /// This client's own doorbell channels, one per namespace it serves.
    wake: StdMutex<HashSet<String>>,
    /// Channels nobody watches any more; the supervisor unsubscribes them.
    unwatched: mpsc::UnboundedSender<String>,
}

impl Doorbell {
    /// A doorbell, and where the channels that nobody watches any more arrive.
    pub(crate) fn new() -> (Arc<Doorbell>, mpsc::UnboundedReceiver<String>) {
        let (unwatched, rx) = mpsc::unbounded_channel();
        let doorbell = Doorbell {
            waiters: StdMutex::default(),
            channels: StdMutex::default(),
            wake: StdMutex::default(),
            unwatched,
        };
        (Arc::new(doorbell), rx)
    }

    /// Register a waiter for `member`; it stays registered while the ticket lives.
    pub(crate) fn register(self: &Arc<Self>, member: &str) -> Ticket {
        let bell = Arc::new(Bell::default());
        self.lock().insert(member.to_owned(), bell.clone());
        Ticket {
            doorbell: self.clone(),
            member: member.to_owned(),
            bell,
        }
    }

    /// Wake the waiter registered for `member`, if any (it re-checks with the server).
    pub(crate) fn ring(&self, member: &str) {
        if let Some(b) = self.lock().get(member) {
            b.notify.notify_one();
        }
    }

    /// Wake the waiter registered for `member` and tell it that it owns its lock now, at
    /// `revision`.
    pub(crate) fn ring_owner(&self, member: &str, revision: u64) {
        if let Some(b) = self.lock().get(member) {
            b.owner.store(revision, Ordering::Release);
            b.notify.notify_one();
        }
    }

    /// Route the messages of `channel` as this client's doorbell (see [`Ring`]). Called before
    /// subscribing to it, so no message on it is taken for a shared channel's.
    pub(crate) fn add_wake_channel(&self, channel: &str) {
        let mut wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        wake.insert(channel.to_owned());
    }

    /// Whether `channel` is one of this client's doorbell channels.
    pub(crate) fn is_wake_channel(&self, channel: &str) -> bool {
        let wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        wake.contains(channel)
    }

    /// Wake every waiter: used when rings may have been missed (subscriber reconnected).
    pub(crate) fn ring_all(&self) {
        for b in self.lock().values() {
            b.notify.notify_one();
        }
    }

    /// Watch a shared channel. The caller subscribes to it (SUBSCRIBE is idempotent); when the
    /// last ticket for a channel drops, the channel is handed to the supervisor to unsubscribe.
    pub(crate) fn watch_channel(self: &Arc<Self>, channel: &str) -> ChannelTicket {
        let mut map = self.channels();
        let entry = map
            .entry(channel.to_owned())
            .or_insert_with(|| (0, watch::channel(0).0));
        entry.0 += 1;
        ChannelTicket {
            bell: self.clone(),
            channel: channel.to_owned(),
            rx: entry.1.subscribe(),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Bell>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One waiter's bell: rung, and the revision at which a ring said it owns (0: none).
#[derive(Debug, Default)]
pub(crate) struct Bell {
    notify: Notify,
    owner: AtomicU64,
}

/// A registered waiter; dropping it unregisters.
#[derive(Debug)]
pub(crate) struct Ticket {
    doorbell: Arc<Doorbell>,
    member: String,
    bell: Arc<Bell>,
}

impl Ticket {
    /// Resolves when the doorbell rang for this waiter (possibly before this call).
    pub(crate) async fn rung(&self) {
        self.bell.notify.notified().await
    }

    /// The revision at which an `o` ring said this waiter owns its lock (a script saw it at the
    /// head of the queue with its lease alive, after the waiter had queued). The waiter trusts
    /// it only when it is its own entry's revision.
    pub(crate) fn told_owner(&self) -> Option<u64> {
        Some(self.bell.owner.load(Ordering::Acquire)).filter(|&rev| rev != 0)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut map = self.doorbell.lock();
        // Only our own registration: another waiter may have registered the same member since.
        if map
            .get(&self.member)
            .is_some_and(|b| Arc::ptr_eq(b, &self.bell))
        {
            map.remove(&self.member);
        }
    }
}

/// An observer of a shared channel; dropping it unregisters.
#[derive(Debug)]
pub(crate) struct ChannelTicket {
    bell: Arc<Doorbell>,
    channel: String,
    rx: watch::Receiver<u64>,
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
                // Fails only once the supervisor is gone, and with it the subscription.
                let _ = self.bell.unwatched.send(self.channel.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rings_parse_and_anything_else_is_ignored() {
        let id = LeaseId::from_u128(7);
        assert_eq!(Ring::parse("c a.1"), Some(Ring::Turn("a.1")));
        assert_eq!(Ring::parse("o a.1 42"), Some(Ring::Owner("a.1", 42)));
        // An older script's form, without the revision: only a reason to ask again.
        assert_eq!(Ring::parse("o a.1"), Some(Ring::Turn("a.1")));
        assert_eq!(Ring::parse(&format!("r {id}")), Some(Ring::Revoked(id)));
        assert_eq!(Ring::parse(&format!("x {id}")), Some(Ring::Expired(id)));
        assert_eq!(Ring::parse(&format!("a {id}")), Some(Ring::Adopted(id)));
        for stray in [
            "",
            "c",
            "r not-a-lease",
            "x ",
            "q a.1",
            "hello world",
            "o a.1 x",
        ] {
            assert_eq!(Ring::parse(stray), None, "{stray:?}");
        }
    }

    #[tokio::test]
    async fn ring_before_wait_is_kept_and_drop_unregisters() {
        let (bell, _unwatched) = Doorbell::new();
        let t = bell.register("a.1");
        bell.ring("a.1");
        bell.ring("other");
        tokio::time::timeout(Duration::from_secs(1), t.rung())
            .await
            .expect("kept ring");
        assert_eq!(bell.waiting(), 1);
        assert_eq!(t.told_owner(), None, "a plain ring is not ownership");
        bell.ring_owner("a.1", 9);
        assert_eq!(t.told_owner(), Some(9));
        drop(t);
        assert_eq!(bell.waiting(), 0);
        bell.ring("a.1"); // no waiter: nothing happens
    }
}
