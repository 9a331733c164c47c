//! Queues (etcd's `recipe.Queue` and `recipe.PriorityQueue`). Scripts:
//! `lua/recipes/queue_push.lua`, `lua/recipes/queue_pop.lua`.

use crate::base::error::Result;
use crate::base::limits::{check_name, check_value};
use crate::client::Client;
use crate::redis::{scripts, Keys, Reply};
use crate::wait::contend::RECHECK;

/// Re-check interval of a blocked dequeue, in case a message was lost.
/// The order items come out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// First in, first out (`{ns}:queue:<name>`).
    Fifo,
    /// Lowest priority number first, FIFO among equals (`{ns}:pqueue:<name>`).
    Priority,
}

impl Order {
    fn key(self, keys: &Keys, name: &str) -> String {
        match self {
            Order::Fifo => keys.queue(name),
            Order::Priority => keys.pqueue(name),
        }
    }

    fn changes(self, keys: &Keys, name: &str) -> String {
        match self {
            Order::Fifo => keys.queue_changes(name),
            Order::Priority => keys.pqueue_changes(name),
        }
    }
}

/// A FIFO queue named `name` (`{ns}:queue:<name>`), or with [`Client::priority_queue`] a
/// priority queue (`{ns}:pqueue:<name>`: lower numbers first, FIFO within a priority).
///
/// **Items are data, not attached to any lease** (as in etcd): they stay until dequeued, even
/// if the process that enqueued them dies.
///
/// ```no_run
/// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
/// let jobs = client.queue("jobs")?;
/// jobs.enqueue("resize 42.png").await?;
/// let job = jobs.dequeue().await?; // blocks while empty, without polling
///
/// let urgent = client.priority_queue("alerts")?;
/// urgent.enqueue_with_priority("disk full", 0).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Queue {
    client: Client,
    name: String,
    order: Order,
}

impl Client {
    /// The FIFO queue `name`.
    pub fn queue(&self, name: &str) -> Result<Queue> {
        Queue::new(self, name, Order::Fifo)
    }

    /// The priority queue `name`: lower priority numbers come out first.
    pub fn priority_queue(&self, name: &str) -> Result<Queue> {
        Queue::new(self, name, Order::Priority)
    }
}

impl Queue {
    fn new(client: &Client, name: &str, order: Order) -> Result<Queue> {
        check_name(client.namespace(), "queue", name)?;
        Ok(Queue {
            client: client.for_name(name).clone(),
            name: name.to_owned(),
            order,
        })
    }

    fn keys(&self) -> Vec<String> {
        let k = &self.client.shared().keys;
        vec![k.rev(), k.leases(), self.order.key(k, &self.name)]
    }

    /// Append an item (priority 0). Returns its revision.
    pub async fn enqueue(&self, value: &str) -> Result<u64> {
        self.enqueue_with_priority(value, 0).await
    }

    /// Append an item with a priority (lower first; FIFO within a priority). On a plain FIFO
    /// queue every item should use the same priority.
    pub async fn enqueue_with_priority(&self, value: &str, priority: u16) -> Result<u64> {
        check_value(self.client.namespace(), "queue", &self.name, value)?;
        let v = self
            .client
            .shared()
            .conn
            .eval(
                &scripts::QUEUE_PUSH,
                self.keys(),
                vec![priority.to_string(), value.to_owned()],
            )
            .await?;
        Reply::new("queue push").uint(&v)
    }

    /// Take the first item if there is one. Cancel safe: an item popped for a call that went
    /// away is put back exactly where it was.
    pub async fn try_dequeue(&self) -> Result<Option<String>> {
        // The pop runs in its own task, so it completes even if this future is dropped; the
        // guard hands an item nobody received back to the queue.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (client, keys) = (self.client.clone(), self.keys());
        tokio::spawn(async move {
            let result = client
                .shared()
                .conn
                .eval(&scripts::QUEUE_POP, keys.clone(), vec![String::new()])
                .await
                .and_then(parse_pop);
            if let Err(Ok(Some(item))) = tx.send(result) {
                restore(&client, keys, item).await;
            }
        });
        let mut guard = Unreceived {
            rx: Some(rx),
            client: self.client.clone(),
            keys: self.keys(),
        };
        let rx = guard.rx.as_mut().ok_or(crate::Error::Closed)?;
        let popped = rx.await.map_err(|_| crate::Error::Closed);
        guard.rx = None;
        Ok(popped??.map(|(_, member)| item_value(&member)))
    }

    /// Take the first item, waiting while the queue is empty (woken by the enqueue, no
    /// polling). Cancel safe: an item is never lost to a dropped call.
    pub async fn dequeue(&self) -> Result<String> {
        let inner = &self.client.shared();
        let mut ticket = inner
            .watch(self.order.changes(&inner.keys, &self.name))
            .await?;
        loop {
            if let Some(v) = self.try_dequeue().await? {
                return Ok(v);
            }
            ticket.changed_within(RECHECK).await;
        }
    }
}

/// Put a popped item back where it was.
async fn restore(client: &Client, keys: Vec<String>, (priority, member): (String, String)) {
    let _ = client
        .shared()
        .conn
        .eval(&scripts::QUEUE_POP, keys, vec![priority, member])
        .await;
}

type PopResult = Result<Option<(String, String)>>;

/// A pop whose result was not received yet: if dropped, an item that arrives is put back.
struct Unreceived {
    rx: Option<tokio::sync::oneshot::Receiver<PopResult>>,
    client: Client,
    keys: Vec<String>,
}

impl Drop for Unreceived {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            // After close(), either the pop task's send fails (it restores the item itself) or
            // the item is already here (we restore it).
            rx.close();
            if let Ok(Ok(Some(item))) = rx.try_recv() {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let (client, keys) = (self.client.clone(), std::mem::take(&mut self.keys));
                    rt.spawn(async move { restore(&client, keys, item).await });
                }
            }
        }
    }
}

/// `{priority, member}` or nil.
pub(crate) fn parse_pop(v: fred::types::Value) -> Result<Option<(String, String)>> {
    if v.is_null() {
        return Ok(None);
    }
    let r = Reply::new("queue pop");
    let items = r.array_min(v, 2)?;
    Ok(Some((r.string(&items[0])?, r.string(&items[1])?)))
}

/// A member is "<20-digit revision> <value>".
pub(crate) fn item_value(member: &str) -> String {
    member
        .split_once(' ')
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_carry_the_value_after_the_revision() {
        assert_eq!(
            item_value("00000000000000000042 hello world"),
            "hello world"
        );
        assert_eq!(item_value("00000000000000000042 "), "");
        assert_eq!(item_value("garbage"), "");
        assert!(parse_pop(fred::types::Value::Null).unwrap().is_none());
        assert!(parse_pop(fred::types::Value::Integer(1)).is_err());
    }
}
