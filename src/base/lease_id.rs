//! Lease ids.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::error::{Error, Result};

/// A lease id: a UUID v7, so ids never repeat (even after Redis lost its data) and sort by age.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(Uuid);

impl LeaseId {
    pub(crate) const MAX: LeaseId = LeaseId(Uuid::max());

    pub(crate) fn generate() -> LeaseId {
        LeaseId(Uuid::now_v7())
    }

    #[cfg(test)]
    pub(crate) fn from_u128(n: u128) -> LeaseId {
        LeaseId(Uuid::from_u128(n))
    }

    /// The id of this session lease's sub-lease in sub-namespace `k` of a spread namespace
    /// (`docs/architecture.md`, "Spread namespaces"): the low 16 bits XOR `k + 1`. Anyone can
    /// derive it (an operator's revoke reaches every sub-namespace), it never equals the
    /// session's own id, and applying it again gives the session's id back.
    pub(crate) fn in_sub_namespace(self, k: u16) -> LeaseId {
        LeaseId(Uuid::from_u128(self.0.as_u128() ^ (u128::from(k) + 1)))
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for LeaseId {
    fn from(u: Uuid) -> LeaseId {
        LeaseId(u)
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({})", self.0.hyphenated())
    }
}

impl FromStr for LeaseId {
    type Err = Error;

    /// Parses the hyphenated UUID form that [`Display`](fmt::Display) writes.
    fn from_str(s: &str) -> Result<LeaseId> {
        Uuid::try_parse(s)
            .map(LeaseId)
            .map_err(|_| Error::InvalidArgument(format!("{s:?} is not a lease id (a UUID)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_id_round_trip() {
        let id = LeaseId::generate();
        assert_eq!(id.to_string().parse::<LeaseId>().unwrap(), id);
        assert!(matches!(
            "nope".parse::<LeaseId>(),
            Err(Error::InvalidArgument(_))
        ));
        // v7: later ids sort later.
        let later = LeaseId::generate();
        assert!(later > id);
    }

    #[test]
    fn a_sub_lease_id_is_distinct_per_sub_namespace_and_leads_back() {
        let id = LeaseId::generate();
        let subs: std::collections::HashSet<LeaseId> =
            (0..1024).map(|k| id.in_sub_namespace(k)).collect();
        assert_eq!(subs.len(), 1024);
        assert!(!subs.contains(&id));
        for k in [0, 1, 47, 1023] {
            let sub = id.in_sub_namespace(k);
            assert_eq!(sub.in_sub_namespace(k), id);
            // Still a UUID of the same version: the Lua side's pattern accepts it.
            assert_eq!(
                sub.as_uuid().get_version_num(),
                id.as_uuid().get_version_num()
            );
        }
    }
}
