//! Watches on keys (etcd's `Watch`): a stream of the puts and deletes of a key or a prefix, in
//! revision order, from a given revision or from now. Every put and delete of a key (including
//! a key deleted with its lease, when the lease is revoked or swept after expiring) appends an
//! entry to the namespace's key event log `{ns}:kv-events` in the same script call, and
//! publishes on `{ns}:kv-changes`; a watch reads the log after the last entry it delivered, so
//! it never skips an event, and waits on the channel (through the client's one subscriber
//! connection, shared by every watch) between reads.
//!
//! The log is bounded ([`KV_EVENT_LOG_ENTRIES`], [`KV_EVENT_LOG_BYTES`]) and has no TTL: a
//! watch that falls further behind gets [`WatchEvent::Compacted`] and goes on from the oldest
//! event kept; resync with [`Client::get_prefix`] then.

use std::collections::VecDeque;
use std::time::Duration;

use fred::types::Value;
use futures_util::Stream;

use crate::base::error::Result;
use crate::base::lease_id::LeaseId;
use crate::base::limits::check_name;
use crate::client::Client;
use crate::redis::doorbell::ChannelTicket;
use crate::redis::{scripts, Reply};

#[cfg(doc)]
use crate::base::limits::{KV_EVENT_LOG_BYTES, KV_EVENT_LOG_ENTRIES};

/// Entries of the log one read looks at, at most.
const LOOK: usize = 256;
/// A watch with nothing new reads the log again after this long even without a notification
/// (one lost while the subscriber reconnected, say).
const IDLE_READ: Duration = Duration::from_secs(5);

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// `key` was put.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: String,
        /// The lease it is attached to, if any.
        lease: Option<LeaseId>,
        /// The revision of the put (the key's mod revision).
        revision: u64,
    },
    /// `key` was deleted: by a delete, or with its lease (revoked, or swept after expiring).
    Delete {
        /// The key.
        key: String,
        /// The revision of the delete.
        revision: u64,
    },
    /// The watch fell behind what the log keeps: events after the last one delivered and
    /// before the next one were dropped from the log. Read the current state
    /// ([`Client::get_prefix`]) to resync; the stream goes on with the oldest event kept.
    Compacted {
        /// The namespace's revision when this was found.
        revision: u64,
    },
}

impl WatchEvent {
    /// The revision of the change (for `Compacted`, the namespace's revision then).
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Put { revision, .. }
            | WatchEvent::Delete { revision, .. }
            | WatchEvent::Compacted { revision } => *revision,
        }
    }
}

/// Where a watch starts, and what it covers.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct WatchOptions {
    prefix: bool,
    start_revision: Option<u64>,
}

impl WatchOptions {
    /// Watch one key (the default).
    pub fn new() -> WatchOptions {
        WatchOptions::default()
    }

    /// Watch every key that starts with the given key (etcd's `WithPrefix`); an empty prefix
    /// watches every key.
    pub fn prefix(mut self) -> WatchOptions {
        self.prefix = true;
        self
    }

    /// Start with the events at `revision` and after (etcd's `WithRev`), as far as the log
    /// still has them ([`WatchEvent::Compacted`] first when it does not). Default: from now.
    pub fn start_revision(mut self, revision: u64) -> WatchOptions {
        self.start_revision = Some(revision);
        self
    }
}

impl Client {
    /// Watch `key` (or, with [`WatchOptions::prefix`], every key under it): a stream of its
    /// puts and deletes in revision order, never skipping one without saying so
    /// ([`WatchEvent::Compacted`]). From the moment this returns (every change after it is
    /// in the stream), or from [`WatchOptions::start_revision`]. Fails with
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a bad key, or when Redis cannot
    /// be reached.
    ///
    /// Every watch of a client shares its one subscriber connection (one channel per
    /// namespace). Errors (Redis unreachable) are yielded and the stream goes on after a short
    /// pause; drop it to stop watching.
    ///
    /// ```no_run
    /// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
    /// use futures_util::StreamExt;
    /// use leasehold::{WatchEvent, WatchOptions};
    ///
    /// let mut members = Box::pin(client.watch("members/", WatchOptions::new().prefix()).await?);
    /// while let Some(event) = members.next().await {
    ///     match event? {
    ///         WatchEvent::Put { key, value, .. } => println!("joined: {key} = {value}"),
    ///         WatchEvent::Delete { key, .. } => println!("left: {key}"),
    ///         WatchEvent::Compacted { .. } => println!("fell behind: read the members again"),
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// The stream is cancel safe: dropping a `next()` future loses no event (the watch reads
    /// the log after the last event it delivered).
    pub async fn watch(
        &self,
        key: &str,
        options: WatchOptions,
    ) -> Result<impl Stream<Item = Result<WatchEvent>> + Send + 'static> {
        if !(options.prefix && key.is_empty()) {
            check_name(self.namespace(), "key", key)?;
        }
        let shared = self.shared();
        // Subscribed before the first read, so no change between the two goes unnoticed.
        let ticket = shared.watch(shared.keys.kv_changes()).await?;
        let mut watcher = Watcher {
            client: self.clone(),
            key: key.to_owned(),
            prefix: options.prefix,
            position: match options.start_revision {
                Some(rev) => format!("rev:{rev}"),
                None => "now".to_owned(),
            },
            ticket,
            pending: VecDeque::new(),
            idle: false,
        };
        if options.start_revision.is_none() {
            // "Now" is when watch was called: find where the log ends.
            watcher.step().await?;
        }
        Ok(futures_util::stream::unfold(watcher, |mut w| async move {
            let item = w.next().await;
            Some((item, w))
        }))
    }
}

/// The state of one watch stream.
struct Watcher {
    client: Client,
    key: String,
    prefix: bool,
    /// Where the next read starts (the script's `from`).
    position: String,
    ticket: ChannelTicket,
    pending: VecDeque<WatchEvent>,
    /// The last read found nothing new: wait for a notification first.
    idle: bool,
}

impl Watcher {
    async fn next(&mut self) -> Result<WatchEvent> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            if let Err(e) = self.step().await {
                // Do not spin on a persistent error; the stream goes on.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Err(e);
            }
        }
    }

    async fn step(&mut self) -> Result<()> {
        let shared = self.client.shared();
        if std::mem::take(&mut self.idle) {
            self.ticket.changed_within(IDLE_READ).await;
        }
        let keys = vec![
            shared.keys.rev(),
            shared.keys.leases(),
            shared.keys.kv_events(),
        ];
        let args = vec![
            self.position.clone(),
            self.key.clone(),
            if self.prefix { "0" } else { "1" }.to_owned(),
            LOOK.to_string(),
        ];
        let v = shared.conn.eval(&scripts::KV_WATCH, keys, args).await?;
        let page = parse_page(v)?;
        if let Some(position) = page.position {
            self.position = format!("after:{position}");
        }
        if page.gap {
            self.pending.push_back(WatchEvent::Compacted {
                revision: page.revision,
            });
        }
        self.idle = page.events.is_empty() && !page.gap && !page.looked;
        self.pending.extend(page.events);
        Ok(())
    }
}

struct Page {
    gap: bool,
    /// The id to read after next time, when the read looked at any entry.
    position: Option<String>,
    /// Whether it looked at any entry (matching or not): then read on at once.
    looked: bool,
    revision: u64,
    events: Vec<WatchEvent>,
}

fn parse_page(v: Value) -> Result<Page> {
    let r = Reply::new("key watch");
    let items = r.array_min(v, 3)?;
    let rows = &items[3..];
    if rows.len() % 5 != 0 {
        return Err(r.bad(format!(
            "{} fields is not a whole number of events",
            rows.len()
        )));
    }
    let position = r.string(&items[1])?;
    let mut events = Vec::with_capacity(rows.len() / 5);
    for row in rows.chunks(5) {
        let id = r.string(&row[0])?;
        let revision = id
            .split_once('-')
            .and_then(|(rev, _)| rev.parse().ok())
            .ok_or_else(|| r.bad(format!("event id {id:?}")))?;
        let key = r.string(&row[2])?;
        events.push(match r.string(&row[1])?.as_str() {
            "p" => {
                let lease = r.string(&row[4])?;
                WatchEvent::Put {
                    key,
                    value: r.string(&row[3])?,
                    lease: match lease.as_str() {
                        "" => None,
                        l => Some(l.parse().map_err(|_| r.bad(format!("lease {l:?}")))?),
                    },
                    revision,
                }
            }
            "d" => WatchEvent::Delete { key, revision },
            t => return Err(r.bad(format!("event type {t:?}"))),
        });
    }
    Ok(Page {
        gap: r.int(&items[0])? == 1,
        looked: !position.is_empty(),
        position: (!position.is_empty()).then_some(position),
        revision: r.uint(&items[2])?,
        events,
    })
}
