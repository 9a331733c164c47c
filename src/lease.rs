//! Leases: server-side TTL records that locks, candidacies and keys attach to (etcd's lease
//! API). Scripts: `lua/lease_grant.lua`, `lua/lease_renew.lua`, `lua/lease_revoke.lua`,
//! `lua/lease_ttl.lua`, `lua/lease_list.lua`.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fred::interfaces::{KeysInterface, SortedSetsInterface};
use fred::types::Value;
use metrics::counter;
use uuid::Uuid;

use crate::client::{Client, Core};
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::names::{check_ttl, MAX_TTL};
use crate::reply::Reply;
use crate::script::script;

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

/// A granted lease: its id and TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl: Duration,
}

/// Something attached to a lease; it is deleted when the lease is revoked or expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    /// An entry `member` in the sorted set `key` (a mutex queue entry, a candidacy, a permit).
    Member { key: String, member: String },
    /// A key that lives as long as the lease.
    Key(String),
}

impl Attachment {
    pub(crate) fn parse(s: &str) -> Option<Attachment> {
        if let Some(rest) = s.strip_prefix("z ") {
            let (member, key) = rest.split_once(' ')?;
            Some(Attachment::Member {
                key: key.to_owned(),
                member: member.to_owned(),
            })
        } else {
            s.strip_prefix("k ").map(|k| Attachment::Key(k.to_owned()))
        }
    }

    /// The Redis key this attachment lives in.
    pub fn key(&self) -> &str {
        match self {
            Attachment::Member { key, .. } | Attachment::Key(key) => key,
        }
    }
}

/// What Redis knows about a live lease (etcd's `TimeToLive` plus the operator metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: LeaseId,
    /// TTL the lease was granted with (each renewal resets the remaining time to it).
    pub granted_ttl: Duration,
    /// Time left before the lease expires unless renewed, by the server's clock.
    pub remaining: Duration,
    /// Id of the client process that renews it (its doorbell).
    pub client_id: String,
    pub host: String,
    pub pid: Option<u32>,
    pub label: String,
    /// When the lease was granted, by the server's clock.
    pub granted_at: Option<SystemTime>,
    /// How many entries are attached.
    pub attached_count: usize,
    /// The attached entries; filled only by [`Client::time_to_live_with_keys`].
    pub attached: Vec<Attachment>,
}

/// Reply of one batched renewal (`lua/lease_renew.lua`).
#[derive(Debug)]
pub(crate) struct RenewReply {
    /// Server time when the script ran, µs since the epoch.
    pub(crate) server_us: u64,
    /// Expired leases this call swept.
    pub(crate) swept: u64,
    /// Per id, in call order: the TTL it was renewed for, or `None` when it is gone.
    pub(crate) ttls: Vec<Option<Duration>>,
    /// The answering server's replication id: it changes when a replica is promoted or a
    /// server restarts without its data, i.e. when leases may have been lost.
    pub(crate) replid: String,
}

impl Core {
    /// Renew `ids` in one script call, sweeping up to `sweep` expired leases on the way.
    pub(crate) async fn renew(
        &self,
        ids: &[LeaseId],
        sweep: usize,
        timeout: Duration,
    ) -> Result<RenewReply> {
        let mut keys = self.keys.base();
        let mut args = vec![sweep.to_string()];
        for &id in ids {
            keys.push(self.keys.lease(id));
            keys.push(self.keys.attached(id));
            args.push(id.to_string());
        }
        let v = self
            .conn
            .eval_within(script!("lease_renew"), keys, args, timeout)
            .await?;
        let reply = parse_renew(v, ids.len())?;
        if reply.swept > 0 {
            counter!(m::LEASES_EXPIRED).increment(reply.swept);
        }
        Ok(reply)
    }

    /// Grant a lease with this client's metadata. Returns it with the instant the call was sent.
    pub(crate) async fn grant(&self, ttl: Duration, label: &str) -> Result<(Lease, Instant)> {
        let ttl_ms = check_ttl(ttl)?;
        crate::names::check_label(label)?;
        let id = LeaseId::generate();
        let keys = self.keys.for_lease(id);
        let args = vec![
            id.to_string(),
            ttl_ms.to_string(),
            self.id.clone(),
            self.host.clone(),
            self.pid.to_string(),
            label.to_owned(),
        ];
        let sent = Instant::now();
        let v = match self.conn.eval(script!("lease_grant"), keys, args).await {
            Ok(v) => v,
            Err(e @ Error::NotReplicated { .. }) => {
                // The primary has the lease but a failover could lose it: nobody will use it,
                // so take it back rather than leave it to its TTL.
                let _ = self.revoke_unused(id).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let ttl = parse_grant(v)?;
        counter!(m::LEASES_GRANTED).increment(1);
        Ok((Lease { id, ttl }, sent))
    }

    /// Take over a live lease for a new session (see `lua/lease_adopt.lua`): renews it,
    /// routes its doorbell here and releases its stale lock entries. Returns its TTL, or
    /// `None` when it is gone.
    pub(crate) async fn adopt(&self, id: LeaseId) -> Result<Option<Duration>> {
        let keys = self.keys.for_lease(id);
        let v = self
            .conn
            .eval(
                script!("lease_adopt"),
                keys,
                vec![id.to_string(), self.id.clone()],
            )
            .await?;
        parse_adopt(v)
    }

    /// Revoke a lease. Returns whether it was alive.
    pub(crate) async fn revoke(&self, id: LeaseId) -> Result<bool> {
        self.revoke_with(id, None).await
    }

    /// Revoke a lease whose session has already ended in this client (closed, dropped, lost):
    /// nobody here needs to hear of it, so this client's doorbell is not rung (another client
    /// that adopted the lease still is). Saves a pub/sub message per dropped session.
    pub(crate) async fn revoke_unused(&self, id: LeaseId) -> Result<bool> {
        self.revoke_with(id, Some(&self.id)).await
    }

    async fn revoke_with(&self, id: LeaseId, caller: Option<&str>) -> Result<bool> {
        let keys = self.keys.for_lease(id);
        let mut args = vec![id.to_string()];
        args.extend(caller.map(str::to_owned));
        let v = self.conn.eval(script!("lease_revoke"), keys, args).await?;
        let alive = Reply::new("lease revoke").int(&v)? == 1;
        if alive {
            counter!(m::LEASES_REVOKED).increment(1);
        }
        Ok(alive)
    }

    fn not_found(&self, lease: LeaseId) -> Error {
        Error::LeaseNotFound {
            namespace: self.keys.namespace().to_owned(),
            lease,
        }
    }
}

/// A TTL a lease script granted, in ms: `None` for a negative figure (the lease is gone). The
/// keepalive computes instants from it, so one beyond [`MAX_TTL`] is refused, not trusted.
fn lease_ttl(r: &Reply, v: &Value) -> Result<Option<Duration>> {
    let Ok(ms) = u64::try_from(r.int(v)?) else {
        return Ok(None);
    };
    let ttl = Duration::from_millis(ms);
    if !(Duration::from_millis(1)..=MAX_TTL).contains(&ttl) {
        return Err(r.bad(format!("lease TTL of {ms} ms")));
    }
    Ok(Some(ttl))
}

/// The reply of `lua/lease_grant.lua`: the lease's TTL.
pub(crate) fn parse_grant(v: Value) -> Result<Duration> {
    let r = Reply::new("lease grant");
    lease_ttl(&r, &v)?.ok_or_else(|| r.bad("negative TTL"))
}

/// The reply of `lua/lease_adopt.lua`: the lease's TTL, or `None` when it is gone.
pub(crate) fn parse_adopt(v: Value) -> Result<Option<Duration>> {
    lease_ttl(&Reply::new("lease adopt"), &v)
}

/// The reply of `lua/lease_renew.lua` for `n` ids.
pub(crate) fn parse_renew(v: Value, n: usize) -> Result<RenewReply> {
    let r = Reply::new("lease renew");
    let items = r.array_min(v, n.saturating_add(4))?;
    let server_us = r
        .uint(&items[0])?
        .checked_mul(1_000_000)
        .and_then(|us| us.checked_add(r.uint(&items[1]).ok()?))
        .ok_or_else(|| r.bad("server time out of range"))?;
    let ttls = items[4..4 + n]
        .iter()
        .map(|v| lease_ttl(&r, v))
        .collect::<Result<_>>()?;
    Ok(RenewReply {
        server_us,
        swept: r.uint(&items[2])?,
        ttls,
        replid: r.string(&items[3])?,
    })
}

/// The reply of `lua/lease_ttl.lua`: nil, or the lease's fields then its attachments.
pub(crate) fn parse_ttl(id: LeaseId, v: Value) -> Result<Option<LeaseInfo>> {
    if v.is_null() {
        return Ok(None);
    }
    let r = Reply::new("lease time-to-live");
    let f = r.array_min(v, 8)?;
    let attached = f[8..]
        .iter()
        .map(|v| {
            let s = r.string(v)?;
            Attachment::parse(&s).ok_or_else(|| r.bad(format!("attachment {s:?}")))
        })
        .collect::<Result<_>>()?;
    Ok(Some(LeaseInfo {
        id,
        granted_ttl: millis(&r, &f[0])?,
        remaining: millis(&r, &f[1])?,
        client_id: r.string(&f[2])?,
        host: r.string(&f[3])?,
        pid: r.string(&f[4])?.parse().ok(),
        label: r.string(&f[5])?,
        granted_at: granted_at(&r, &f[6])?,
        attached_count: usize::try_from(r.uint(&f[7])?).unwrap_or(usize::MAX),
        attached,
    }))
}

/// One row of `lua/lease_list.lua`.
pub(crate) fn parse_list_row(row: Value) -> Result<LeaseInfo> {
    let r = Reply::new("lease list");
    let f = r.array_min(row, 9)?;
    Ok(LeaseInfo {
        id: r.string(&f[0])?.parse().map_err(|_| r.bad("lease id"))?,
        granted_ttl: millis(&r, &f[1])?,
        remaining: millis(&r, &f[2])?,
        client_id: r.string(&f[3])?,
        host: r.string(&f[4])?,
        pid: r.string(&f[5])?.parse().ok(),
        label: r.string(&f[6])?,
        granted_at: granted_at(&r, &f[7])?,
        attached_count: usize::try_from(r.uint(&f[8])?).unwrap_or(usize::MAX),
        attached: Vec::new(),
    })
}

fn millis(r: &Reply, v: &Value) -> Result<Duration> {
    Ok(Duration::from_millis(u64::try_from(r.int(v)?).unwrap_or(0)))
}

fn granted_at(r: &Reply, v: &Value) -> Result<Option<SystemTime>> {
    Ok(u64::try_from(r.int(v)?)
        .ok()
        .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms))))
}

/// Page size for [`Client::leases`].
const LIST_PAGE: usize = 256;

/// The lease API, as etcd's `Lease` interface. A [`Session`](crate::Session) does all of this
/// for you; use these to manage leases by hand or from operator tooling.
impl Client {
    /// Grant a lease with `ttl` (between [`MIN_TTL`](crate::MIN_TTL) and
    /// [`MAX_TTL`](crate::MAX_TTL), whole milliseconds). Nobody renews it: call
    /// [`keep_alive_once`](Self::keep_alive_once), or use a [`Session`](crate::Session).
    pub async fn grant(&self, ttl: Duration) -> Result<Lease> {
        Ok(self.inner.grant(ttl, "").await?.0)
    }

    /// Renew a lease once; returns the TTL it was renewed for, or
    /// [`Error::LeaseNotFound`] when it is gone (or its hash holds data leasehold cannot read:
    /// such a lease is never renewed).
    pub async fn keep_alive_once(&self, id: LeaseId) -> Result<Duration> {
        let inner = &self.inner;
        let reply = inner.renew(&[id], 0, inner.conn.timeout()).await?;
        reply
            .ttls
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| inner.not_found(id))
    }

    /// Revoke a lease: everything attached to it is deleted at once, whoever waited behind it
    /// is woken, and the owning client's doorbell rings so its session ends without waiting for
    /// a renewal. [`Error::LeaseNotFound`] when it was already gone.
    pub async fn revoke(&self, id: LeaseId) -> Result<()> {
        if self.inner.revoke(id).await? {
            Ok(())
        } else {
            Err(self.inner.not_found(id))
        }
    }

    /// Time to live and metadata of a lease; `None` when it is not alive.
    /// [`LeaseInfo::attached`] is left empty; see [`time_to_live_with_keys`](Self::time_to_live_with_keys).
    pub async fn time_to_live(&self, id: LeaseId) -> Result<Option<LeaseInfo>> {
        self.ttl_inner(id, false).await
    }

    /// As [`time_to_live`](Self::time_to_live), with the attached entries listed.
    pub async fn time_to_live_with_keys(&self, id: LeaseId) -> Result<Option<LeaseInfo>> {
        self.ttl_inner(id, true).await
    }

    async fn ttl_inner(&self, id: LeaseId, with_keys: bool) -> Result<Option<LeaseInfo>> {
        let keys = self.inner.keys.for_lease(id);
        let args = vec![id.to_string(), if with_keys { "1" } else { "0" }.to_owned()];
        let v = self
            .inner
            .conn
            .eval(script!("lease_ttl"), keys, args)
            .await?;
        parse_ttl(id, v)
    }

    /// Every live lease of the namespace with its metadata, oldest first (etcd's `Leases`,
    /// plus what an operator needs to find a leak: client, host, pid, label, attachments).
    pub async fn leases(&self) -> Result<Vec<LeaseInfo>> {
        let inner = &self.inner;
        let k = &inner.keys;
        let redis = inner.conn.pool().next_connected();
        let members: Vec<String> = match redis
            .zrange(k.leases(), 0, -1, None, false, None, false)
            .await
        {
            Ok(members) => members,
            // Not through a script, so Redis's own refusal: name the key as the scripts do.
            Err(e) if e.details().starts_with("WRONGTYPE") => {
                let found: String = redis
                    .r#type(k.leases())
                    .await
                    .unwrap_or_else(|_| "other type".into());
                return Err(Error::WrongType {
                    key: k.leases(),
                    found,
                    expected: "zset".into(),
                });
            }
            Err(e) => {
                let e = crate::conn::classify(e, inner.conn.timeout());
                return Err(crate::conn::denied_during(e, || {
                    format!("reading {}", k.leases())
                }));
            }
        };
        // Members that are not lease ids are foreign data: skipped, never touched.
        let mut ids: Vec<LeaseId> = members.iter().filter_map(|s| s.parse().ok()).collect();
        ids.sort();
        let r = Reply::new("lease list");
        let mut out = Vec::with_capacity(ids.len());
        for page in ids.chunks(LIST_PAGE) {
            let mut keys = k.base();
            let mut args = Vec::with_capacity(page.len());
            for &id in page {
                keys.push(k.lease(id));
                keys.push(k.attached(id));
                args.push(id.to_string());
            }
            let v = inner.conn.eval(script!("lease_list"), keys, args).await?;
            for row in r.array(v)? {
                out.push(parse_list_row(row)?);
            }
        }
        Ok(out)
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
    fn attachments_parse() {
        assert_eq!(
            Attachment::parse("z abc.1 {ns}:mutex:a b"),
            Some(Attachment::Member {
                key: "{ns}:mutex:a b".into(),
                member: "abc.1".into()
            })
        );
        assert_eq!(
            Attachment::parse("k {ns}:key:x"),
            Some(Attachment::Key("{ns}:key:x".into()))
        );
        assert_eq!(Attachment::parse("q"), None);
        assert_eq!(Attachment::parse("z nospace"), None);
    }
}
