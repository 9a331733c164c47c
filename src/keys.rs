//! The Redis key layout. Every key of a namespace carries the hash tag `{<ns>}`, so all of a
//! namespace lives in one Cluster slot; a user-supplied name is always the last part of a key.
//!
//! ```text
//! {ns}:rev                 revision counter (fencing tokens)
//! {ns}:leases              zset  lease id -> server expiry (ms)
//! {ns}:lease:<id>          hash  ttl, client, owner_rings, host, pid, label, granted
//! {ns}:attached:<id>       set   what is attached to the lease
//! {ns}:mutex:<name>        zset  contender -> revision (FIFO queue, head = owner)
//! {ns}:election:<name>     zset  candidate -> revision (FIFO queue, head = leader)
//! {ns}:election-values:<name>   hash    candidate -> value
//! {ns}:election-log:<name>      stream  leader changes, entry id = revision (capped)
//! {ns}:election-changes:<name>  pub/sub channel: the log grew
//! {ns}:key:<key>           hash  v, lease, crev, mrev, ver (a key put with a lease)
//! {ns}:keys                zset  every key name, score 0 (ordered prefix reads)
//! {ns}:wake:<client id>    pub/sub channel: the doorbell of one client process
//! ```

use crate::lease::LeaseId;

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

    /// `kind` is `queue` or `pqueue`.
    pub(crate) fn queue(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    pub(crate) fn queue_changes(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}-changes:{name}", self.prefix)
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
}
