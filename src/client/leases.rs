//! The lease API of [`Client`], as etcd's `Lease` interface.

use std::time::Duration;

use fred::interfaces::{KeysInterface, SortedSetsInterface};

use super::Client;
use crate::base::error::{Error, Result};
use crate::base::lease_id::LeaseId;
use crate::base::limits::MAX_TTL;
use crate::lease::leases::{parse_list_row, parse_ttl, Lease, LeaseInfo, RenewAs};
use crate::redis::classify::{classify, denied_during};
use crate::redis::{scripts, Reply};

/// Page size for [`Client::leases`].
const LIST_PAGE: usize = 256;
/// Pause of [`Client::keep_alive`] after a renewal that failed but may succeed later.
const RETRY: Duration = Duration::from_secs(1);
/// Registry entries read per `ZRANGE` by [`Client::leases`].
const REGISTRY_PAGE: i64 = 1000;

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
        let reply = inner
            .renew(&[(id, RenewAs::Plain)], 0, false, inner.conn.timeout())
            .await?;
        reply
            .leases
            .first()
            .and_then(|renewal| renewal.ttl())
            .ok_or_else(|| inner.not_found(id))
    }

    /// Keep a lease alive until the stream is dropped (etcd's `KeepAlive`): it renews at once,
    /// then every TTL/3, and yields the TTL of each renewal. An error that may pass (Redis
    /// unreachable, a timeout) is yielded and the renewal retried a second later (or at TTL/3,
    /// if sooner); any other, [`Error::LeaseNotFound`] when the lease is gone, is yielded and
    /// ends the stream.
    ///
    /// For work attached to a lease, prefer a [`Session`](crate::Session): one supervisor
    /// renews all of a client's sessions in batched calls and tells each when it is lost.
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream stops the renewals; the lease then runs out after its TTL.
    ///
    /// ```no_run
    /// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
    /// use futures_util::StreamExt;
    ///
    /// let lease = client.grant(std::time::Duration::from_secs(10)).await?;
    /// let mut renewals = Box::pin(client.keep_alive(lease.id));
    /// while let Some(renewal) = renewals.next().await {
    ///     println!("renewed for {:?}", renewal?);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn keep_alive(
        &self,
        id: LeaseId,
    ) -> impl futures_util::Stream<Item = Result<Duration>> + Send + 'static {
        let client = self.clone();
        futures_util::stream::unfold(Some(Duration::ZERO), move |wait| {
            let client = client.clone();
            async move {
                tokio::time::sleep(wait?).await;
                let renewal = client.keep_alive_once(id).await;
                let next = match &renewal {
                    Ok(ttl) => Some(*ttl / 3),
                    Err(e) if e.is_transient() => Some(RETRY.min(client.inner.conn.timeout())),
                    Err(_) => None,
                };
                Some((renewal, next))
            }
        })
    }

    /// Revoke a lease: it ends at once (nothing can renew or use it after the first script
    /// call), everything attached to it is deleted, whoever waited behind it is woken, and the
    /// owning client's doorbell rings so its session ends without waiting for a renewal.
    /// [`Error::LeaseNotFound`] when it was already gone.
    ///
    /// A script call releases at most 64 attachments, so that Redis stays
    /// responsive to everyone else: a lease with more takes several calls, all made before
    /// this returns.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future after the first call leaves the lease ended with part of its
    /// attachments in place; any client's next sweep (part of every renewal) releases them.
    pub async fn revoke(&self, id: LeaseId) -> Result<()> {
        if let Some(spread) = &self.inner.spread {
            return self.revoke_spread(id, &spread.subs).await;
        }
        if self.inner.revoke(id).await? {
            Ok(())
        } else {
            Err(self.inner.not_found(id))
        }
    }

    /// [`revoke`](Self::revoke) on a spread namespace: the session's own lease, then its
    /// sub-lease in every sub-namespace, each leaving a tombstone that refuses the sub-lease's
    /// grant there until the session surely knows it is revoked (its TTL, twice), so that a
    /// lock call of the session already on its way cannot take anything after this returns.
    /// The first call rings the session's client, which ends the session at once.
    async fn revoke_spread(&self, id: LeaseId, subs: &[Client]) -> Result<()> {
        let ttl = match self.ttl_inner(id, false).await? {
            Some(info) => info.granted_ttl,
            None => MAX_TTL,
        };
        let alive = self.inner.revoke(id).await?;
        let tombstone = ttl.saturating_mul(2);
        let revokes = subs.iter().enumerate().map(|(k, sub)| {
            let sub_id = id.in_sub_namespace(k as u16);
            async move { sub.inner.revoke_tombstoned(sub_id, tombstone).await }
        });
        let subs_alive = futures_util::future::try_join_all(revokes).await?;
        if alive || subs_alive.contains(&true) {
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

    /// As [`time_to_live`](Self::time_to_live), with the attached entries listed: at most
    /// [`MAX_ATTACHMENTS_SHOWN`](crate::MAX_ATTACHMENTS_SHOWN) of them.
    pub async fn time_to_live_with_keys(&self, id: LeaseId) -> Result<Option<LeaseInfo>> {
        self.ttl_inner(id, true).await
    }

    async fn ttl_inner(&self, id: LeaseId, with_keys: bool) -> Result<Option<LeaseInfo>> {
        let keys = self.inner.keys.for_lease(id);
        let args = vec![id.to_string(), if with_keys { "1" } else { "0" }.to_owned()];
        let v = self
            .inner
            .conn
            .eval(&scripts::LEASE_TTL, keys, args)
            .await?;
        parse_ttl(id, v)
    }

    /// Every live lease of the namespace with its metadata, oldest first (etcd's `Leases`,
    /// plus what an operator needs to find a leak: client, host, pid, label, attachments).
    ///
    /// The registry is read in pages of 1000 (Redis serves others in between), so this is not
    /// a snapshot: with leases granted, renewed or ending while it reads, one may be missed or
    /// listed twice (duplicates are removed).
    pub async fn leases(&self) -> Result<Vec<LeaseInfo>> {
        let inner = &self.inner;
        let k = &inner.keys;
        let redis = inner.conn.pool().next_connected();
        // The registry is read a page at a time, so that a namespace with millions of leases
        // never makes one long command. Not a snapshot: see the method's doc.
        let mut members: Vec<String> = Vec::new();
        let mut start = 0i64;
        loop {
            let end = start + REGISTRY_PAGE - 1;
            let page: Vec<String> = match redis
                .zrange(k.leases(), start, end, None, false, None, false)
                .await
            {
                Ok(page) => page,
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
                    let e = classify(e, inner.conn.timeout());
                    return Err(denied_during(e, || format!("reading {}", k.leases())));
                }
            };
            let full = page.len() as i64 == REGISTRY_PAGE;
            members.extend(page);
            if !full {
                break;
            }
            start += REGISTRY_PAGE;
        }
        // Members that are not lease ids are foreign data: skipped, never touched.
        let mut ids: Vec<LeaseId> = members.iter().filter_map(|s| s.parse().ok()).collect();
        ids.sort();
        ids.dedup();
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
            let v = inner.conn.eval(&scripts::LEASE_LIST, keys, args).await?;
            for row in r.array(v)? {
                out.push(parse_list_row(row)?);
            }
        }
        Ok(out)
    }
}
