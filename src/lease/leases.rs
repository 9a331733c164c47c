//! Leases: server-side TTL records that locks, candidacies and keys attach to (etcd's lease
//! API). Scripts: `lua/lease/lease_grant.lua`, `lua/lease/lease_renew.lua`, `lua/lease/lease_revoke.lua`,
//! `lua/lease/lease_ttl.lua`, `lua/lease/lease_list.lua`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fred::types::Value;
use metrics::counter;

use crate::base::error::{Error, Result};
use crate::base::lease_id::LeaseId;
use crate::base::limits::{check_label, check_ttl, MAX_TTL};
use crate::base::metrics as m;
use crate::redis::spread::HASH_VERSION;
use crate::redis::{scripts, Core, Reply};

/// A granted lease: its id and TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The lease's id.
    pub id: LeaseId,
    /// The TTL it was granted with; each renewal resets the time left to it.
    pub ttl: Duration,
}

/// Something attached to a lease; it is deleted when the lease is revoked or expires.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attachment {
    /// An entry `member` in the sorted set `key` (a mutex queue entry, a candidacy, a permit).
    #[non_exhaustive]
    Member {
        /// The full Redis key of the sorted set, e.g. `{ns}:mutex:<name>`.
        key: String,
        /// The member: the contender or candidate id (`<lease id>.<suffix>`).
        member: String,
    },
    /// A key that lives as long as the lease (a key put with it, a held barrier): its full
    /// Redis key, e.g. `{ns}:key:<key>`.
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
#[non_exhaustive]
pub struct LeaseInfo {
    /// The lease's id.
    pub id: LeaseId,
    /// TTL the lease was granted with (each renewal resets the remaining time to it).
    pub granted_ttl: Duration,
    /// Time left before the lease expires unless renewed, by the server's clock.
    pub remaining: Duration,
    /// Id of the client process that renews it (its doorbell): the one that granted it, or
    /// the last to take it over ([`Client::id`](crate::Client::id)).
    pub client_id: String,
    /// Host name of the process that granted the lease (empty when unknown).
    pub host: String,
    /// Process id of the process that granted the lease; `None` when unknown.
    pub pid: Option<u32>,
    /// The session's [label](crate::SessionOptions::label); empty when none was given (and for
    /// leases from [`Client::grant`](crate::Client::grant)).
    pub label: String,
    /// When the lease was granted, by the server's clock; `None` when unknown.
    pub granted_at: Option<SystemTime>,
    /// How many entries are attached (a count Redis keeps: it also counts the rare
    /// tombstones of waits withdrawn before they were queued).
    pub attached_count: usize,
    /// The attached entries; filled only by
    /// [`Client::time_to_live_with_keys`](crate::Client::time_to_live_with_keys), and then at
    /// most [`MAX_ATTACHMENTS_SHOWN`](crate::MAX_ATTACHMENTS_SHOWN) of them (any of them, when
    /// the lease has more: see `attached_count`); empty otherwise.
    pub attached: Vec<Attachment>,
}

/// Reply of one batched renewal (`lua/lease/lease_renew.lua`).
#[derive(Debug)]
pub(crate) struct RenewReply {
    /// Server time when the script ran, µs since the epoch.
    pub(crate) server_us: u64,
    /// Expired leases this call swept.
    pub(crate) swept: u64,
    /// Expired leases (or attachments of one) are left: the sweep stopped on its budget.
    pub(crate) sweep_more: bool,
    /// Per id, in call order: what became of it.
    pub(crate) leases: Vec<Renewal>,
    /// Per id, in call order: how many entries are attached to it, when asked.
    pub(crate) attached: Vec<Option<u64>>,
    /// The server's `maxmemory-policy` (empty when it could not be read).
    pub(crate) maxmemory_policy: String,
    /// The answering server's replication id: it changes when a replica is promoted or a
    /// server restarts without its data, i.e. when leases may have been lost.
    pub(crate) replid: String,
}

impl RenewReply {
    /// A drop the call did not ask for ([`RenewAs::DropIfIdle`]) is not one: a server not
    /// running leasehold's script said so, and the lease reads as gone, so that its session is
    /// lost rather than quietly forgotten. `leases` is what the call asked, in call order.
    fn keep_asked_drops(&mut self, leases: &[(LeaseId, RenewAs)]) {
        for (renewal, (_, how)) in self.leases.iter_mut().zip(leases) {
            if *renewal == Renewal::Dropped && !matches!(how, RenewAs::DropIfIdle(_)) {
                *renewal = Renewal::Gone;
            }
        }
    }
}

/// What a renewal call does with one lease besides renewing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RenewAs {
    /// Renew only.
    Plain,
    /// Renew, and count its attachments (its session compares them with what it holds).
    Counted,
    /// A sub-lease its session no longer uses (`src/session/spread.rs`): drop it if nothing
    /// is attached and it is still the grant with this epoch, else renew it.
    DropIfIdle(u64),
}

/// Attachments of a counted lease that `lua/lease/lease_renew.lua` checks against what they
/// point at (its `ENTRY_CHECKS`).
pub(crate) const ENTRY_CHECKS: usize = 4;

impl RenewAs {
    /// What renewing one lease this way costs Redis, in units of 2 to 2.5 µs of a small
    /// machine's time inside `lua/lease/lease_renew.lua` (BENCHMARKS.md section 4b measures
    /// each kind): 5 to renew (`HMGET`, `PEXPIRE`, its share of the registry's `ZMSCORE` and
    /// `ZADD`, and the Lua around them); counting adds 1 for the sample, 2 per attachment it
    /// checks (at most `ENTRY_CHECKS` of the `held` ones), and 2 more when it holds more than
    /// that (`SCARD`, and drawing the sample from a larger set). A drop, which section 4b does
    /// not measure, is priced as a renewal that reads two more keys and writes four.
    pub(crate) fn cost(self, held: usize) -> u32 {
        let checks = held.min(ENTRY_CHECKS) as u32;
        let more = if held > ENTRY_CHECKS { 2 } else { 0 };
        match self {
            RenewAs::Plain => 5,
            RenewAs::Counted => 6 + 2 * checks + more,
            RenewAs::DropIfIdle(_) => 11,
        }
    }
}

/// What one renewal did to one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// Renewed for this TTL.
    Renewed(Duration),
    /// The lease is gone.
    Gone,
    /// Another client took the lease over (only when the renewal named its client).
    Adopted,
    /// Dropped as asked ([`RenewAs::DropIfIdle`]), by this call or an earlier one.
    Dropped,
}

impl Renewal {
    /// The TTL it was renewed for, if it was.
    pub(crate) fn ttl(self) -> Option<Duration> {
        match self {
            Renewal::Renewed(ttl) => Some(ttl),
            Renewal::Gone | Renewal::Adopted | Renewal::Dropped => None,
        }
    }
}

/// What a sub-lease grant ([`Core::touch`]) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Touch {
    /// Granted or renewed for this TTL.
    Granted(Duration),
    /// The lease was revoked from outside: a tombstone refuses it here.
    Revoked,
    /// A live lease of that id belongs to another client.
    Taken,
}

impl Core {
    /// Renew `leases` (each with what else to do, see [`RenewAs`]) in one script call,
    /// sweeping up to `sweep` expired leases on the way. With
    /// `as_owner`, a lease that another client took over is not renewed but reported
    /// [`Renewal::Adopted`] (the supervisor's renewals); without, any live lease is renewed
    /// ([`Client::keep_alive_once`](crate::Client::keep_alive_once)).
    pub(crate) async fn renew(
        &self,
        leases: &[(LeaseId, RenewAs)],
        sweep: usize,
        as_owner: bool,
        timeout: Duration,
    ) -> Result<RenewReply> {
        let mut keys = self.keys.base();
        let owner = if as_owner {
            self.id.clone()
        } else {
            String::new()
        };
        let mut args = vec![sweep.to_string(), owner];
        for &(id, how) in leases {
            keys.push(self.keys.lease(id));
            keys.push(self.keys.attached(id));
            args.push(id.to_string());
            args.push(match how {
                RenewAs::Plain => "0".to_owned(),
                RenewAs::Counted => "1".to_owned(),
                RenewAs::DropIfIdle(epoch) => format!("d{epoch:016x}"),
            });
        }
        let v = self
            .conn
            .eval_within(&scripts::LEASE_RENEW, keys, args, timeout)
            .await?;
        let mut reply = parse_renew(v, leases.len())?;
        reply.keep_asked_drops(leases);
        if reply.swept > 0 {
            counter!(m::LEASES_EXPIRED).increment(reply.swept);
        }
        Ok(reply)
    }

    /// Grant a lease with this client's metadata. Returns it with the instant the call was sent.
    pub(crate) async fn grant(&self, ttl: Duration, label: &str) -> Result<(Lease, Instant)> {
        let ttl_ms = check_ttl(ttl)?;
        check_label(label)?;
        let id = LeaseId::generate();
        let mut keys = self.keys.for_lease(id);
        keys.push(self.keys.meta());
        let args = vec![
            id.to_string(),
            ttl_ms.to_string(),
            self.id.clone(),
            self.host.clone(),
            self.pid.to_string(),
            label.to_owned(),
            self.spread.to_string(),
            HASH_VERSION.to_owned(),
        ];
        let sent = Instant::now();
        let v = match self.conn.eval(&scripts::LEASE_GRANT, keys, args).await {
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

    /// Take over a live lease for a new session (see `lua/lease/lease_adopt.lua`): renews it,
    /// routes its doorbell here and releases its stale lock entries, a bounded number per call
    /// (the first call does the takeover; later ones go on releasing). Returns its TTL, or
    /// `None` when it is gone (or another client took it over before the release ended).
    pub(crate) async fn adopt(&self, id: LeaseId) -> Result<Option<Duration>> {
        let mut args = vec![id.to_string(), self.id.clone()];
        let mut ttl = None;
        loop {
            let v = self
                .conn
                .eval(&scripts::LEASE_ADOPT, self.keys.for_lease(id), args.clone())
                .await?;
            let Some(step) = parse_adopt(v)? else {
                return Ok(None);
            };
            let ttl = *ttl.get_or_insert(step.ttl);
            if step.cursor == "0" {
                return Ok(Some(ttl));
            }
            args.truncate(2);
            args.push(step.revision.to_string());
            args.push(step.cursor);
        }
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

    /// The first call ends the lease; a lease with more attachments than one call releases
    /// (`lua/lease/lease_revoke.lua`) takes more calls, each short, so Redis serves others in
    /// between. Should this stop half-way (an error, a cancelled future), the lease is dead
    /// already and any client's sweep releases the rest.
    async fn revoke_with(&self, id: LeaseId, caller: Option<&str>) -> Result<bool> {
        let (alive, mut done) = self.revoke_step(id, caller).await?;
        if alive {
            counter!(m::LEASES_REVOKED).increment(1);
        }
        while !done {
            done = self.revoke_step(id, caller).await?.1;
        }
        Ok(alive)
    }

    /// One call of `lua/lease/lease_revoke.lua`: whether the lease was alive, and whether all
    /// its attachments are released.
    async fn revoke_step(&self, id: LeaseId, caller: Option<&str>) -> Result<(bool, bool)> {
        let mut args = vec![id.to_string()];
        args.extend(caller.map(str::to_owned));
        let v = self
            .conn
            .eval(&scripts::LEASE_REVOKE, self.keys.for_lease(id), args)
            .await?;
        let r = Reply::new("lease revoke");
        let f = r.array_min(v, 2)?;
        Ok((r.uint(&f[0])? == 1, r.uint(&f[1])? == 1))
    }

    /// Check the namespace's layout against this client's (`lua/lease/namespace_layout.lua`):
    /// records it when this is the first client to spread the namespace.
    pub(crate) async fn check_layout(&self) -> Result<()> {
        let keys = vec![self.keys.rev(), self.keys.leases(), self.keys.meta()];
        let args = vec![self.spread.to_string(), HASH_VERSION.to_owned()];
        self.conn
            .eval(&scripts::NAMESPACE_LAYOUT, keys, args)
            .await
            .map(drop)
    }

    /// Grant or renew sub-lease `id` in this sub-namespace for `ttl`, as grant `epoch`
    /// (`lua/lease/lease_touch.lua`). Returns what it found, with the instant the call was sent.
    pub(crate) async fn touch(
        &self,
        id: LeaseId,
        ttl: Duration,
        epoch: u64,
        label: &str,
    ) -> Result<(Touch, Instant)> {
        let ttl_ms = check_ttl(ttl)?;
        let mut keys = self.keys.for_lease(id);
        keys.push(self.keys.revoked());
        let args = vec![
            id.to_string(),
            ttl_ms.to_string(),
            self.id.clone(),
            format!("{epoch:016x}"),
            self.host.clone(),
            self.pid.to_string(),
            label.to_owned(),
        ];
        let r = Reply::new("lease touch");
        // An earlier grant of the id with more attachments than a call releases takes a few
        // calls (each short); any sweep would finish it too.
        for _ in 0..64 {
            let sent = Instant::now();
            let v = self
                .conn
                .eval(&scripts::LEASE_TOUCH, keys.clone(), args.clone())
                .await?;
            match r.int(&v)? {
                -1 => return Ok((Touch::Revoked, sent)),
                -2 => return Ok((Touch::Taken, sent)),
                -3 => continue,
                _ => {
                    let ttl = lease_ttl(&r, &v)?.ok_or_else(|| r.bad("negative TTL"))?;
                    return Ok((Touch::Granted(ttl), sent));
                }
            }
        }
        Err(r.bad("an earlier grant of the sub-lease kept attachments after 64 releases"))
    }

    /// Revoke sub-lease `id` here from outside its client, and leave a tombstone that refuses
    /// its grant here for `tombstone` (`lua/lease/lease_revoke.lua`). Returns whether it was
    /// alive.
    pub(crate) async fn revoke_tombstoned(&self, id: LeaseId, tombstone: Duration) -> Result<bool> {
        let mut keys = self.keys.for_lease(id);
        keys.push(self.keys.revoked());
        let ms = tombstone.as_millis().max(1).to_string();
        let args = vec![id.to_string(), String::new(), ms];
        let r = Reply::new("lease revoke");
        let f = r.array_min(
            self.conn
                .eval(&scripts::LEASE_REVOKE, keys.clone(), args.clone())
                .await?,
            2,
        )?;
        let alive = r.uint(&f[0])? == 1;
        let mut done = r.uint(&f[1])? == 1;
        // The rest of a lease with many attachments: plain revoke steps.
        while !done {
            done = self.revoke_step(id, None).await?.1;
        }
        Ok(alive)
    }

    pub(crate) fn not_found(&self, lease: LeaseId) -> Error {
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

/// The reply of `lua/lease/lease_grant.lua`: the lease's TTL.
pub(crate) fn parse_grant(v: Value) -> Result<Duration> {
    let r = Reply::new("lease grant");
    lease_ttl(&r, &v)?.ok_or_else(|| r.bad("negative TTL"))
}

/// The reply of `lua/lease/lease_adopt.lua`: the lease's TTL, or `None` when it is gone.
pub(crate) fn parse_adopt(v: Value) -> Result<Option<AdoptStep>> {
    let r = Reply::new("lease adopt");
    let f = r.array_min(v, 1)?;
    let Some(ttl) = lease_ttl(&r, &f[0])? else {
        return Ok(None);
    };
    if f.len() < 3 {
        return Err(r.bad("a takeover without its revision and cursor"));
    }
    let cursor = r.string(&f[2])?;
    if cursor.is_empty() || !cursor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(r.bad(format!("scan cursor {cursor:?}")));
    }
    Ok(Some(AdoptStep {
        ttl,
        revision: r.uint(&f[1])?,
        cursor,
    }))
}

/// One call of `lua/lease/lease_adopt.lua` that found the lease alive.
#[derive(Debug)]
pub(crate) struct AdoptStep {
    ttl: Duration,
    /// Entries up to this revision are the old owner's and are released.
    revision: u64,
    /// Where the release goes on; "0" when it is done.
    cursor: String,
}

/// `lua/lease/lease_renew.lua`'s answer for a lease another client took over.
const ADOPTED: i64 = -2;
/// `lua/lease/lease_renew.lua`'s answer for a sub-lease dropped as asked.
const DROPPED: i64 = -3;

/// The reply of `lua/lease/lease_renew.lua` for `n` ids.
pub(crate) fn parse_renew(v: Value, n: usize) -> Result<RenewReply> {
    let r = Reply::new("lease renew");
    let items = r.array_min(v, n.saturating_add(4))?;
    let server_us = r
        .uint(&items[0])?
        .checked_mul(1_000_000)
        .and_then(|us| us.checked_add(r.uint(&items[1]).ok()?))
        .ok_or_else(|| r.bad("server time out of range"))?;
    let leases = items[4..4 + n]
        .iter()
        .map(|v| match r.int(v)? {
            ADOPTED => Ok(Renewal::Adopted),
            DROPPED => Ok(Renewal::Dropped),
            _ => Ok(lease_ttl(&r, v)?.map_or(Renewal::Gone, Renewal::Renewed)),
        })
        .collect::<Result<_>>()?;
    Ok(RenewReply {
        server_us,
        swept: r.uint(&items[2])?,
        attached: (0..n)
            .map(|i| items.get(4 + n + i).map(|v| r.int(v)))
            .map(|v| Ok(v.transpose()?.and_then(|c| u64::try_from(c).ok())))
            .collect::<Result<_>>()?,
        maxmemory_policy: items
            .get(4 + 2 * n)
            .map(|v| r.string(v))
            .transpose()?
            .unwrap_or_default(),
        sweep_more: items
            .get(5 + 2 * n)
            .map(|v| r.uint(v))
            .transpose()?
            .is_some_and(|more| more == 1),
        leases,
        replid: r.string(&items[3])?,
    })
}

/// The reply of `lua/lease/lease_ttl.lua`: nil, or the lease's fields then its attachments.
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

/// One row of `lua/lease/lease_list.lua`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_nobody_asked_for_reads_as_gone() {
        let ids: Vec<LeaseId> = (1..4).map(LeaseId::from_u128).collect();
        let asked = [RenewAs::DropIfIdle(7), RenewAs::Counted, RenewAs::Plain];
        let leases: Vec<(LeaseId, RenewAs)> = ids.into_iter().zip(asked).collect();
        let mut reply = RenewReply {
            server_us: 0,
            swept: 0,
            leases: vec![Renewal::Dropped; 3],
            attached: vec![None; 3],
            maxmemory_policy: String::new(),
            replid: String::new(),
            sweep_more: false,
        };
        reply.keep_asked_drops(&leases);
        assert_eq!(
            reply.leases,
            [Renewal::Dropped, Renewal::Gone, Renewal::Gone]
        );
    }

    #[test]
    fn entry_checks_is_the_scripts() {
        let script = include_str!("../../lua/lease/lease_renew.lua");
        assert!(script.contains(&format!("local ENTRY_CHECKS = {ENTRY_CHECKS}\n")));
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
