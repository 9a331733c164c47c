//! The Redis key layout: [`LAYOUT`] declares every key and channel of a namespace, and
//! [`Keys`] builds them. Every key of a namespace carries the hash tag `{<ns>}`, so all of a
//! namespace lives in one Cluster slot; a user-supplied name is always the last part of a key.
//! The reference table in `docs/architecture.md` is generated from [`LAYOUT`] (a unit test
//! fails when they differ).

use crate::base::lease_id::LeaseId;

/// Every key and pub/sub channel of a namespace `ns`: (pattern, Redis type, what it holds).
/// Read by the tests that hold [`Keys`] and `docs/architecture.md` to it.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const LAYOUT: &[(&str, &str, &str)] = &[
    (
        "{ns}:rev",
        "string",
        "revision counter: every fencing token, candidacy and key revision",
    ),
    (
        "{ns}:leases",
        "zset",
        "lease id -> server expiry (ms): the lease registry",
    ),
    (
        "{ns}:lease:<id>",
        "hash",
        "ttl, client, owner_rings, fenced_rings, host, pid, label, granted",
    ),
    (
        "{ns}:attached:<id>",
        "set",
        "what is attached to the lease (queue entries, keys)",
    ),
    (
        "{ns}:mutex:<name>",
        "zset",
        "contender -> revision: FIFO queue, head = owner",
    ),
    (
        "{ns}:rwlock:<name>",
        "zset",
        "contender (r/w) -> revision: readers share, writers exclude",
    ),
    (
        "{ns}:rwlock-holders:<name>",
        "zset",
        "the owners among the rwlock's entries (a prefix of its queue)",
    ),
    (
        "{ns}:semaphore:<name>",
        "zset",
        "contender (with its permit count) -> revision",
    ),
    (
        "{ns}:semaphore-size:<name>",
        "string",
        "the size set by the first user",
    ),
    (
        "{ns}:semaphore-holders:<name>",
        "zset",
        "the owners among the semaphore's entries (a prefix of its queue), and `#used` -> permits they hold",
    ),
    (
        "{ns}:election:<name>",
        "zset",
        "candidate -> revision: FIFO queue, head = leader",
    ),
    ("{ns}:election-values:<name>", "hash", "candidate -> value"),
    (
        "{ns}:election-log:<name>",
        "stream",
        "leader changes, entry id = revision (capped)",
    ),
    (
        "{ns}:election-changes:<name>",
        "channel",
        "the election log grew",
    ),
    (
        "{ns}:key:<key>",
        "hash",
        "v, lease, crev, mrev, ver: a key put with a lease",
    ),
    (
        "{ns}:keys",
        "zset",
        "every key name, score 0 (ordered prefix reads)",
    ),
    (
        "{ns}:kv-events",
        "stream",
        "puts and deletes of keys, entry id = revision-sequence (capped): what watches read",
    ),
    (
        "{ns}:kv-changes",
        "channel",
        "the key event log grew",
    ),
    (
        "{ns}:barrier:<name>",
        "hash",
        "the holder's lease while the barrier is held",
    ),
    (
        "{ns}:barrier-changes:<name>",
        "channel",
        "the barrier was released",
    ),
    ("{ns}:dbarrier:<name>", "zset", "participant -> revision"),
    (
        "{ns}:dbarrier-ready:<name>",
        "string",
        "set while a round is in progress",
    ),
    (
        "{ns}:dbarrier-changes:<name>",
        "channel",
        "participants entered or left",
    ),
    ("{ns}:queue:<name>", "zset", "items in FIFO order"),
    ("{ns}:queue-changes:<name>", "channel", "an item was added"),
    (
        "{ns}:pqueue:<name>",
        "zset",
        "items by priority, FIFO within a priority",
    ),
    ("{ns}:pqueue-changes:<name>", "channel", "an item was added"),
    (
        "{ns}:meta",
        "hash",
        "spread, hash: the sub-namespaces a spread namespace has, and the name hash (absent when unspread)",
    ),
    (
        "{ns}:revoked",
        "zset",
        "lease id -> expiry (ms): tombstones of a sub-namespace, leases revoked from outside",
    ),
    (
        "{ns}:wake:<client id>",
        "channel",
        "the doorbell of one client process",
    ),
];

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    namespace: String,
    prefix: String,
}

impl Keys {
    /// `namespace` must already be validated.
    pub(crate) fn new(namespace: &str) -> Keys {
        Keys {
            namespace: namespace.to_owned(),
            prefix: format!("{{{namespace}}}:"),
        }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(crate) fn rev(&self) -> String {
        format!("{}rev", self.prefix)
    }

    pub(crate) fn leases(&self) -> String {
        format!("{}leases", self.prefix)
    }

    pub(crate) fn lease(&self, id: LeaseId) -> String {
        format!("{}lease:{id}", self.prefix)
    }

    pub(crate) fn attached(&self, id: LeaseId) -> String {
        format!("{}attached:{id}", self.prefix)
    }

    pub(crate) fn mutex(&self, name: &str) -> String {
        format!("{}mutex:{name}", self.prefix)
    }

    pub(crate) fn rwlock(&self, name: &str) -> String {
        format!("{}rwlock:{name}", self.prefix)
    }

    pub(crate) fn semaphore(&self, name: &str) -> String {
        format!("{}semaphore:{name}", self.prefix)
    }

    pub(crate) fn semaphore_size(&self, name: &str) -> String {
        format!("{}semaphore-size:{name}", self.prefix)
    }

    /// The owners of a semaphore (`holders_key` in `lua/prelude/queues.lua` builds the same
    /// name from the queue's).
    pub(crate) fn semaphore_holders(&self, name: &str) -> String {
        format!("{}semaphore-holders:{name}", self.prefix)
    }

    /// The owners of a rwlock (as [`semaphore_holders`](Self::semaphore_holders)).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn rwlock_holders(&self, name: &str) -> String {
        format!("{}rwlock-holders:{name}", self.prefix)
    }

    pub(crate) fn barrier(&self, name: &str) -> String {
        format!("{}barrier:{name}", self.prefix)
    }

    pub(crate) fn barrier_changes(&self, name: &str) -> String {
        format!("{}barrier-changes:{name}", self.prefix)
    }

    pub(crate) fn dbarrier(&self, name: &str) -> String {
        format!("{}dbarrier:{name}", self.prefix)
    }

    pub(crate) fn dbarrier_ready(&self, name: &str) -> String {
        format!("{}dbarrier-ready:{name}", self.prefix)
    }

    pub(crate) fn dbarrier_changes(&self, name: &str) -> String {
        format!("{}dbarrier-changes:{name}", self.prefix)
    }

    pub(crate) fn queue(&self, name: &str) -> String {
        format!("{}queue:{name}", self.prefix)
    }

    pub(crate) fn queue_changes(&self, name: &str) -> String {
        format!("{}queue-changes:{name}", self.prefix)
    }

    pub(crate) fn pqueue(&self, name: &str) -> String {
        format!("{}pqueue:{name}", self.prefix)
    }

    pub(crate) fn pqueue_changes(&self, name: &str) -> String {
        format!("{}pqueue-changes:{name}", self.prefix)
    }

    pub(crate) fn election(&self, name: &str) -> String {
        format!("{}election:{name}", self.prefix)
    }

    pub(crate) fn election_values(&self, name: &str) -> String {
        format!("{}election-values:{name}", self.prefix)
    }

    pub(crate) fn election_log(&self, name: &str) -> String {
        format!("{}election-log:{name}", self.prefix)
    }

    pub(crate) fn election_changes(&self, name: &str) -> String {
        format!("{}election-changes:{name}", self.prefix)
    }

    pub(crate) fn kv(&self, name: &str) -> String {
        format!("{}key:{name}", self.prefix)
    }

    pub(crate) fn kv_index(&self) -> String {
        format!("{}keys", self.prefix)
    }

    pub(crate) fn kv_events(&self) -> String {
        format!("{}kv-events", self.prefix)
    }

    pub(crate) fn kv_changes(&self) -> String {
        format!("{}kv-changes", self.prefix)
    }

    pub(crate) fn meta(&self) -> String {
        format!("{}meta", self.prefix)
    }

    pub(crate) fn revoked(&self) -> String {
        format!("{}revoked", self.prefix)
    }

    pub(crate) fn wake(&self, client_id: &str) -> String {
        format!("{}wake:{client_id}", self.prefix)
    }

    /// The KEYS of the single-lease scripts: rev, leases, lease:<id>, attached:<id>.
    pub(crate) fn for_lease(&self, id: LeaseId) -> Vec<String> {
        vec![self.rev(), self.leases(), self.lease(id), self.attached(id)]
    }

    /// The first two KEYS of every script.
    pub(crate) fn base(&self) -> Vec<String> {
        vec![self.rev(), self.leases()]
    }
}

/// The key layout as a markdown table, for `docs/architecture.md`.
#[cfg(test)]
pub(crate) fn markdown_table() -> String {
    let mut out = String::from("| key | type | holds |\n|---|---|---|\n");
    for (pattern, kind, what) in LAYOUT {
        out.push_str(&format!("| `{pattern}` | {kind} | {what} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new("orders");
        let id: LeaseId = "0190a5b2-0000-7000-8000-000000000001".parse().unwrap();
        assert_eq!(k.rev(), "{orders}:rev");
        assert_eq!(k.leases(), "{orders}:leases");
        assert_eq!(
            k.lease(id),
            "{orders}:lease:0190a5b2-0000-7000-8000-000000000001"
        );
        assert_eq!(k.mutex("a:b"), "{orders}:mutex:a:b");
        assert_eq!(k.wake("c1"), "{orders}:wake:c1");
    }

    /// Every key `Keys` builds matches exactly one declared pattern, and every pattern is built.
    #[test]
    fn keys_builds_exactly_the_declared_layout() {
        let k = Keys::new("ns");
        let id = LeaseId::from_u128(1);
        let n = "N";
        let built = [
            k.rev(),
            k.leases(),
            k.lease(id),
            k.attached(id),
            k.mutex(n),
            k.rwlock(n),
            k.rwlock_holders(n),
            k.semaphore(n),
            k.semaphore_size(n),
            k.semaphore_holders(n),
            k.election(n),
            k.election_values(n),
            k.election_log(n),
            k.election_changes(n),
            k.kv(n),
            k.kv_index(),
            k.kv_events(),
            k.kv_changes(),
            k.barrier(n),
            k.barrier_changes(n),
            k.dbarrier(n),
            k.dbarrier_ready(n),
            k.dbarrier_changes(n),
            k.queue(n),
            k.queue_changes(n),
            k.pqueue(n),
            k.pqueue_changes(n),
            k.meta(),
            k.revoked(),
            k.wake(n),
        ];
        let instance = |pattern: &str| {
            let p = pattern.replace("<id>", &id.to_string());
            match p.find('<') {
                Some(at) => format!("{}{n}", &p[..at]),
                None => p,
            }
        };
        let declared: Vec<String> = LAYOUT.iter().map(|(p, _, _)| instance(p)).collect();
        assert_eq!(built.to_vec(), declared);
    }

    #[test]
    fn the_architecture_doc_shows_the_declared_layout() {
        let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/architecture.md"));
        let table = markdown_table();
        assert!(
            doc.contains(&table),
            "docs/architecture.md's key layout differs from keys::LAYOUT; it should read:\n{table}"
        );
    }
}
