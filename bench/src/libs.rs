//! The four locks compared, behind one small interface: take the lock (waiting as the library
//! waits), release it, and clean up.
//!
//! Each is used the way its documentation suggests:
//! - **raw**: `SET key token NX PX ttl`, released by a compare-and-delete script (`EVALSHA`),
//!   through a fred pool of 8 connections. No waiting: it is the uncontended floor only.
//! - **rslock**: its `LockManager` (one multiplexed connection per server) with its default
//!   retry settings; `acquire_no_guard` loops on `lock`, which retries after a random delay.
//! - **leasehold**: one session per task, `session.mutex(name)?.lock()` then `guard.unlock()`.
//! - **etcd**: etcd's lock service (`Lock` with the task's lease, then `Unlock`), the server-side
//!   version of `clientv3/concurrency`'s mutex.

use std::future::Future;
use std::time::Duration;

use fred::prelude::{KeysInterface, LuaInterface};
use fred::types::scripts::Script;
use fred::types::{Expiration, SetOptions};

use crate::Result;

/// The lock libraries compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lib {
    Raw,
    Rslock,
    Leasehold,
    /// leasehold with `batch_lock_calls(false)`: every call its own script call.
    LeaseholdUnbatched,
    /// leasehold with every task's mutex on one shared session (etcd's usual pattern: one
    /// session per process), batching on.
    LeaseholdOneSession,
    /// leasehold calling scripts with EVALSHA, as on Redis 6.2 or for a Redis user without
    /// `FCALL` (its user here is refused `FCALL`), batching on.
    LeaseholdEvalsha,
    Etcd,
}

impl Lib {
    pub fn name(self) -> &'static str {
        match self {
            Lib::Raw => "raw SET NX PX + CAD",
            Lib::Rslock => "rslock 0.10",
            Lib::Leasehold => "leasehold",
            Lib::LeaseholdUnbatched => "leasehold, batching off",
            Lib::LeaseholdOneSession => "leasehold, one session for all tasks",
            Lib::LeaseholdEvalsha => "leasehold, EVALSHA (no functions)",
            Lib::Etcd => "etcd-client 0.21 → etcd",
        }
    }
}

/// TTL of the Redis-key locks (raw, rslock) and of the leases (leasehold, etcd). Long enough
/// that no lease needs renewing during a measurement.
pub const TTL: Duration = Duration::from_secs(60);

/// One contender for one named lock.
pub trait Locker: Send + 'static {
    /// Take the lock, waiting if it is held.
    fn lock(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// Release the lock taken by `lock`.
    fn unlock(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// Give back what the contender holds (session, lease).
    fn close(self) -> impl Future<Output = Result<()>> + Send;
}

// ---- raw ---------------------------------------------------------------------------------

const CAD: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                   return redis.call('DEL', KEYS[1]) end return 0";

/// What raw contenders share: the pool and the loaded compare-and-delete script.
#[derive(Clone)]
pub struct RawShared {
    pool: fred::clients::Pool,
    sha: String,
}

impl RawShared {
    pub async fn connect(url: &str) -> Result<RawShared> {
        let config = fred::prelude::Config::from_url(url)?;
        let pool = fred::types::Builder::from_config(config).build_pool(8)?;
        fred::prelude::ClientLike::init(&pool).await?;
        let script = Script::from_lua(CAD);
        script.load(pool.next()).await?;
        Ok(RawShared {
            pool,
            sha: script.sha1().to_string(),
        })
    }

    pub fn pool(&self) -> &fred::clients::Pool {
        &self.pool
    }

    pub fn cad_sha(&self) -> &str {
        &self.sha
    }

    pub fn locker(&self, key: String, token: String) -> RawLock {
        RawLock {
            shared: self.clone(),
            key,
            token,
        }
    }
}

pub struct RawLock {
    shared: RawShared,
    key: String,
    token: String,
}

impl Locker for RawLock {
    async fn lock(&mut self) -> Result<()> {
        let ttl = Expiration::PX(TTL.as_millis() as i64);
        let ok: Option<String> = self
            .shared
            .pool
            .set(
                &self.key,
                &self.token,
                Some(ttl),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        // The raw lock is only measured uncontended: taken means a bug in the bench.
        ok.map(drop)
            .ok_or_else(|| format!("raw lock {} unexpectedly taken", self.key).into())
    }

    async fn unlock(&mut self) -> Result<()> {
        let deleted: i64 = self
            .shared
            .pool
            .evalsha(
                &self.shared.sha,
                vec![self.key.clone()],
                vec![self.token.clone()],
            )
            .await?;
        if deleted == 1 {
            Ok(())
        } else {
            Err(format!("raw lock {} was not held at unlock", self.key).into())
        }
    }

    async fn close(self) -> Result<()> {
        Ok(())
    }
}

// ---- rslock ------------------------------------------------------------------------------

pub struct Rslock {
    manager: rslock::LockManager,
    name: String,
    held: Option<rslock::Lock>,
}

impl Rslock {
    /// A contender using `manager` (share one to share its connection).
    pub fn new(manager: rslock::LockManager, name: String) -> Rslock {
        Rslock {
            manager,
            name,
            held: None,
        }
    }

    pub fn manager(url: &str) -> rslock::LockManager {
        rslock::LockManager::new(vec![url.to_owned()])
    }
}

impl Locker for Rslock {
    async fn lock(&mut self) -> Result<()> {
        let lock = self
            .manager
            .acquire_no_guard(self.name.as_bytes(), TTL)
            .await?;
        self.held = Some(lock);
        Ok(())
    }

    async fn unlock(&mut self) -> Result<()> {
        let lock = self.held.take().ok_or("rslock: unlock without lock")?;
        // Best effort by design: rslock does not say whether the key was still ours.
        self.manager.unlock(&lock).await;
        Ok(())
    }

    async fn close(self) -> Result<()> {
        Ok(())
    }
}

// ---- leasehold ---------------------------------------------------------------------------

pub struct Leasehold {
    /// The contender's own session, closed with it; `None` when it shares one.
    session: Option<leasehold::Session>,
    mutex: leasehold::Mutex,
    held: Option<leasehold::MutexGuard>,
}

impl Leasehold {
    /// A contender with its own session on `client`.
    pub async fn new(client: &leasehold::Client, name: &str) -> Result<Leasehold> {
        let session = client
            .session_with(leasehold::SessionOptions::new().ttl(TTL))
            .await?;
        let mutex = session.mutex(name)?;
        Ok(Leasehold {
            session: Some(session),
            mutex,
            held: None,
        })
    }

    /// The Redis key of its mutex.
    pub fn key(&self) -> &str {
        self.mutex.key()
    }

    /// A contender on a session shared with others (its owner closes it).
    pub fn sharing(session: &leasehold::Session, name: &str) -> Result<Leasehold> {
        Ok(Leasehold {
            session: None,
            mutex: session.mutex(name)?,
            held: None,
        })
    }
}

impl Locker for Leasehold {
    async fn lock(&mut self) -> Result<()> {
        self.held = Some(self.mutex.lock().await?);
        Ok(())
    }

    async fn unlock(&mut self) -> Result<()> {
        let guard = self.held.take().ok_or("leasehold: unlock without lock")?;
        guard.unlock().await?;
        Ok(())
    }

    async fn close(self) -> Result<()> {
        drop(self.held);
        drop(self.mutex);
        if let Some(session) = self.session {
            session.close().await?;
        }
        Ok(())
    }
}

// ---- etcd --------------------------------------------------------------------------------

pub struct Etcd {
    client: etcd_client::Client,
    lease: i64,
    name: String,
    held: Option<Vec<u8>>,
}

impl Etcd {
    /// A contender with its own lease on `client` (clones share one gRPC channel).
    pub async fn new(client: &etcd_client::Client, name: String) -> Result<Etcd> {
        let mut client = client.clone();
        let lease = client.lease_grant(TTL.as_secs() as i64, None).await?.id();
        Ok(Etcd {
            client,
            lease,
            name,
            held: None,
        })
    }
}

impl Locker for Etcd {
    async fn lock(&mut self) -> Result<()> {
        let opts = etcd_client::LockOptions::new().with_lease(self.lease);
        let resp = self.client.lock(self.name.as_str(), Some(opts)).await?;
        self.held = Some(resp.key().to_vec());
        Ok(())
    }

    async fn unlock(&mut self) -> Result<()> {
        let key = self.held.take().ok_or("etcd: unlock without lock")?;
        self.client.unlock(key).await?;
        Ok(())
    }

    async fn close(mut self) -> Result<()> {
        self.client.lease_revoke(self.lease).await?;
        Ok(())
    }
}
