//! The layout of a spread namespace: one namespace over `n` sub-namespaces, each with its own
//! hash tag, so that its locks spread over a Cluster's shards (`docs/architecture.md`,
//! "Spread namespaces").
//!
//! Two facts decide where a name lives, and every client of a namespace must agree on both,
//! or two clients would queue for one lock in two places and both hold it: `n`, and the
//! version of the name hash ([`HASH_VERSION`]). Both are recorded in the home namespace
//! (`{ns}:meta`, checked by `lua/lease/namespace_layout.lua` at build and by every lease
//! grant), so a client configured otherwise is refused.
//!
//! - **Sub-namespace `k`'s tag** is `<ns>/<k>/<j>` for the first `j` whose Cluster slot falls
//!   in the `k`-th of `n` equal parts of the slot space, so the sub-namespaces spread evenly
//!   over any shard count that divides `n`'s parts evenly, not where CRC16 happens to put
//!   them. `/` is not allowed in a namespace name, so no namespace is ever named like one.
//! - **A name's sub-namespace** (hash version 1) is its Cluster key slot mod `n`: the slot of
//!   the name as a Redis key, so a `{tag}` inside names co-locates them, as in a key.
//!
//! `n = 1` is the unspread layout: the namespace itself, nothing recorded.

/// The version of the name → sub-namespace mapping, recorded with `n`.
pub(crate) const HASH_VERSION: &str = "1";
/// The most sub-namespaces a namespace may be spread over (`MAX_SPREAD` in
/// `lua/prelude/queues.lua`).
pub const MAX_SPREAD: u16 = 1024;
/// Cluster slots.
const SLOTS: u32 = 16384;

/// The Cluster slot of a key (CRC16 of its hash tag, or of all of it).
pub(crate) fn key_slot(key: &str) -> u16 {
    fred::util::redis_keyslot(key.as_bytes())
}

/// How a namespace is laid out: its sub-namespaces' names, and which one a name belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The sub-namespaces' names (`<ns>/<k>/<j>`), by index `k`; empty when unspread.
    subs: Vec<String>,
}

impl Layout {
    /// The layout of `namespace` spread over `n` sub-namespaces (`n` in `1..=MAX_SPREAD`).
    pub(crate) fn new(namespace: &str, n: u16) -> Layout {
        if n <= 1 {
            return Layout { subs: Vec::new() };
        }
        let subs = (0..n)
            .map(|k| {
                let lo = u32::from(k) * SLOTS / u32::from(n);
                let hi = (u32::from(k) + 1) * SLOTS / u32::from(n);
                // Each of the n parts holds at least 16 slots; a tag lands in a given part
                // with probability 1/n, so this ends after about n tries.
                (0u32..)
                    .map(|j| format!("{namespace}/{k}/{j}"))
                    .find(|tag| (lo..hi).contains(&u32::from(key_slot(&format!("{{{tag}}}")))))
                    .unwrap_or_default()
            })
            .collect();
        Layout { subs }
    }

    /// How many sub-namespaces (1 when unspread).
    pub(crate) fn n(&self) -> u16 {
        self.subs.len().max(1) as u16
    }

    /// The sub-namespace index of object name `name` (0 when unspread).
    pub(crate) fn index_of(&self, name: &str) -> u16 {
        if self.subs.is_empty() {
            return 0;
        }
        key_slot(name) % self.n()
    }

    /// The name of sub-namespace `k`.
    pub(crate) fn sub(&self, k: u16) -> &str {
        self.subs.get(usize::from(k)).map_or("", String::as_str)
    }

    /// Every sub-namespace's name, by index.
    pub(crate) fn subs(&self) -> &[String] {
        &self.subs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspread_is_the_namespace_itself() {
        let l = Layout::new("orders", 1);
        assert!(l.subs().is_empty());
        assert_eq!(l.n(), 1);
        assert_eq!(l.index_of("anything"), 0);
    }

    #[test]
    fn sub_namespaces_fall_evenly_over_the_slot_space() {
        let l = Layout::new("orders", 48);
        assert_eq!(l.subs().len(), 48);
        for (k, tag) in l.subs().iter().enumerate() {
            let slot = u32::from(key_slot(&format!("{{{tag}}}")));
            assert_eq!((slot * 48 / SLOTS) as usize, k, "{tag} at slot {slot}");
            assert!(tag.starts_with("orders/"));
        }
        // Spread evenly over any shard count that divides 48, with the slot ranges
        // `redis-cli --cluster create` gives (contiguous, equal).
        for shards in [2u32, 3, 4, 6, 8, 12, 16, 24] {
            let mut per = vec![0; shards as usize];
            for tag in l.subs() {
                let slot = u32::from(key_slot(&format!("{{{tag}}}")));
                per[(slot * shards / SLOTS) as usize] += 1;
            }
            assert!(per.iter().all(|&c| c == 48 / shards), "{shards}: {per:?}");
        }
    }

    #[test]
    fn a_tag_inside_names_co_locates_them() {
        let l = Layout::new("orders", 48);
        assert_eq!(l.index_of("{user-7}:cart"), l.index_of("{user-7}:payment"));
        assert_eq!(l.index_of("{user-7}:cart"), l.index_of("user-7"));
        let spread: std::collections::HashSet<u16> =
            (0..1000).map(|i| l.index_of(&format!("job-{i}"))).collect();
        assert_eq!(spread.len(), 48);
    }

    #[test]
    fn the_name_hash_is_the_one_recorded_as_version_1() {
        // Version 1 is the Cluster key slot mod n: fixed values, so that a change of hash
        // shows here and gets a new version.
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(HASH_VERSION, "1");
        assert_eq!(Layout::new("ns", 48).index_of("foo"), 12182 % 48);
    }
}
