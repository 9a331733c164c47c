//! Keys put with a lease (etcd's `Put(key, value, WithLease(id))`): values that live exactly as
//! long as a lease, enough for service registration and membership. Scripts: `lua/kv/kv_put.lua`,
//! `lua/kv/kv_get.lua`, `lua/kv/kv_delete.lua`, `lua/kv/kv_range.lua`; transactions in
//! [`txn`], software transactional memory on them in [`stm`], watches in [`watch`].

use fred::types::Value;

use crate::base::error::{Error, Result};
use crate::base::lease_id::LeaseId;
use crate::base::limits::{check_name, check_value};
use crate::base::session_state::SessionEnd;
use crate::client::Client;
use crate::redis::{scripts, Reply};
use crate::session::Session;

pub(crate) mod stm;
pub(crate) mod txn;
pub(crate) mod watch;

/// One key as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyValue {
    /// The key as given to [`Client::put`] (without the namespace).
    pub key: String,
    /// Its value.
    pub value: String,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
    /// Revision at which the key was created (kept across puts, as etcd's).
    pub create_revision: u64,
    /// Revision of the last put.
    pub mod_revision: u64,
    /// Number of puts since creation.
    pub version: u64,
}

/// Most keys [`Client::get_prefix`] returns in one call.
pub const MAX_RANGE: usize = 10_000;

/// Most bytes of keys and values one [`Client::get_prefix`] page holds (plus one key and
/// value): a page stops there with [`KeyRange::more`] set.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// A page of [`Client::get_prefix`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyRange {
    /// Keys in byte order.
    pub kvs: Vec<KeyValue>,
    /// More keys with the prefix follow the last one (read them with `start_after`).
    pub more: bool,
}

impl Client {
    /// Put `key` = `value`. With a lease, the key is deleted when the lease is revoked or
    /// expires (and reads as absent from the moment it expires), and is listed among the
    /// lease's attachments. Without one it lives until deleted. Returns the revision of the put.
    ///
    /// [`Error::LeaseNotFound`] when the lease is not alive. Keys are non-empty UTF-8 up to
    /// [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes; values up to
    /// [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN).
    ///
    /// ```no_run
    /// # async fn demo(client: leasehold::Client, session: leasehold::Session) -> leasehold::Result<()> {
    /// // Service registration: gone when this process's session is.
    /// session.put("services/billing/10.0.0.7", "{\"port\":8080}").await?;
    /// let members = client.get_prefix("services/billing/", 100, None).await?;
    /// for kv in members.kvs {
    ///     println!("{} -> {}", kv.key, kv.value);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn put(&self, key: &str, value: &str, lease: Option<LeaseId>) -> Result<u64> {
        match (self.put_inner(key, value, lease).await?, lease) {
            (Some(rev), _) => Ok(rev),
            (None, Some(lease)) => Err(Error::LeaseNotFound {
                namespace: self.namespace().to_owned(),
                lease,
            }),
            (None, None) => Err(Error::Protocol {
                operation: "key put",
                detail: "lease reported lost for a put without a lease".into(),
            }),
        }
    }

    /// `Ok(None)`: the lease is not alive.
    async fn put_inner(
        &self,
        key: &str,
        value: &str,
        lease: Option<LeaseId>,
    ) -> Result<Option<u64>> {
        let k = &self.shared().keys;
        check_name(k.namespace(), "key", key)?;
        check_value(k.namespace(), "key", key, value)?;
        let mut keys = vec![k.rev(), k.leases(), k.kv(key), k.kv_index()];
        if let Some(id) = lease {
            keys.push(k.attached(id));
        }
        let args = vec![
            key.to_owned(),
            value.to_owned(),
            lease.map(|l| l.to_string()).unwrap_or_default(),
        ];
        let v = self
            .shared()
            .conn
            .eval(&scripts::KV_PUT, keys, args)
            .await?;
        parse_put(v)
    }

    /// Read one key; `None` when absent or when its lease is no longer alive.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let k = &self.shared().keys;
        check_name(k.namespace(), "key", key)?;
        let keys = vec![k.rev(), k.leases(), k.kv(key)];
        let v = self
            .shared()
            .conn
            .eval(&scripts::KV_GET, keys, vec![])
            .await?;
        parse_get(key, v)
    }

    /// Delete a key. Returns whether a live key was there.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let k = &self.shared().keys;
        check_name(k.namespace(), "key", key)?;
        let keys = vec![k.rev(), k.leases(), k.kv(key), k.kv_index()];
        let v = self
            .shared()
            .conn
            .eval(&scripts::KV_DELETE, keys, vec![key.to_owned()])
            .await?;
        Ok(Reply::new("key delete").int(&v)? == 1)
    }

    /// Live keys starting with `prefix` (empty: all keys), in byte order, at most `limit`
    /// (1..=[`MAX_RANGE`]) and about [`MAX_PAGE_BYTES`]. Pass the last key of a page as
    /// `start_after` to read the next one.
    ///
    /// The page is read in several script calls when the index is large or holds many dead
    /// entries: each call looks at a bounded number of index entries, so none stalls Redis.
    /// Keys put or deleted between those calls may or may not be seen, as between pages.
    pub async fn get_prefix(
        &self,
        prefix: &str,
        limit: usize,
        start_after: Option<&str>,
    ) -> Result<KeyRange> {
        let k = &self.shared().keys;
        if !(1..=MAX_RANGE).contains(&limit) {
            return Err(Error::InvalidArgument(format!(
                "get_prefix limit {limit} must be between 1 and {MAX_RANGE}"
            )));
        }
        if prefix.len() > crate::MAX_NAME_LEN {
            return Err(Error::InvalidArgument(format!(
                "prefix is {} bytes, at most {} allowed",
                prefix.len(),
                crate::MAX_NAME_LEN
            )));
        }
        let mut page = KeyRange {
            kvs: Vec::new(),
            more: false,
        };
        let mut after = start_after.unwrap_or_default().to_owned();
        let mut bytes = 0;
        loop {
            let keys = vec![k.rev(), k.leases(), k.kv_index()];
            let args = vec![
                prefix.to_owned(),
                (limit - page.kvs.len()).to_string(),
                after,
                (MAX_PAGE_BYTES - bytes).to_string(),
            ];
            let v = self
                .shared()
                .conn
                .eval(&scripts::KV_RANGE, keys, args)
                .await?;
            let (chunk, resume) = parse_range(v)?;
            bytes += chunk
                .kvs
                .iter()
                .map(|kv| kv.key.len() + kv.value.len())
                .sum::<usize>();
            page.kvs.extend(chunk.kvs);
            page.more = chunk.more;
            after = resume;
            if !page.more || page.kvs.len() >= limit || bytes >= MAX_PAGE_BYTES {
                return Ok(page);
            }
        }
    }
}

/// `{'ok', revision}`, or `{'lost'}` (`None`: the lease is not alive).
pub(crate) fn parse_put(v: Value) -> Result<Option<u64>> {
    let r = Reply::new("key put");
    let items = r.array_min(v, 1)?;
    match r.string(&items[0])?.as_str() {
        "ok" if items.len() >= 2 => Ok(Some(r.uint(&items[1])?)),
        "lost" => Ok(None),
        other => Err(r.bad(format!("unknown status {other:?}"))),
    }
}

/// nil, or `{value, lease, crev, mrev, ver}`.
pub(crate) fn parse_get(key: &str, v: Value) -> Result<Option<KeyValue>> {
    if v.is_null() {
        return Ok(None);
    }
    let r = Reply::new("key get");
    let f = r.array_min(v, 5)?;
    Ok(Some(key_value(&r, key.to_owned(), &f)?))
}

/// `{more, resume after, name, value, lease, crev, mrev, ver, name, ...}`: the page and the
/// name to resume after.
pub(crate) fn parse_range(v: Value) -> Result<(KeyRange, String)> {
    let r = Reply::new("key range");
    let items = r.array_min(v, 2)?;
    let more = r.int(&items[0])? == 1;
    let resume = r.string(&items[1])?;
    let rows = &items[2..];
    if rows.len() % 6 != 0 {
        return Err(r.bad(format!(
            "{} fields is not a whole number of rows",
            rows.len()
        )));
    }
    let kvs = rows
        .chunks(6)
        .map(|row| key_value(&r, r.string(&row[0])?, &row[1..]))
        .collect::<Result<_>>()?;
    Ok((KeyRange { kvs, more }, resume))
}

/// `f` = value, lease, crev, mrev, ver.
fn key_value(r: &Reply, key: String, f: &[Value]) -> Result<KeyValue> {
    let lease = r.string(&f[1])?;
    Ok(KeyValue {
        key,
        value: r.string(&f[0])?,
        lease: if lease.is_empty() {
            None
        } else {
            Some(
                lease
                    .parse()
                    .map_err(|_| r.bad(format!("lease {lease:?}")))?,
            )
        },
        create_revision: r.uint(&f[2])?,
        mod_revision: r.uint(&f[3])?,
        version: r.uint(&f[4])?,
    })
}

impl Session {
    /// Put `key` = `value` attached to this session's lease (see [`Client::put`]): the key goes
    /// when the session does. [`Error::SessionLost`] when the session has ended.
    pub async fn put(&self, key: &str, value: &str) -> Result<u64> {
        self.check()?;
        match self
            .client()
            .put_inner(key, value, Some(self.lease()))
            .await?
        {
            Some(rev) => Ok(rev),
            None => {
                self.mark_lost(SessionEnd::LeaseNotFound);
                Err(self.lost(SessionEnd::LeaseNotFound))
            }
        }
    }
}
