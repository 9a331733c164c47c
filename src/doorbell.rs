//! The per-client doorbell: one pub/sub channel per client process (`{ns}:wake:<client id>`),
//! on which scripts publish `c <contender>` when a contender's turn has come. Waiters register
//! here before they ask the server, so a ring that arrives before they start waiting is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    waiters: StdMutex<HashMap<String, Arc<Notify>>>,
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
        self.bell.lock().remove(&self.member);
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
