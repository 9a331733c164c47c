//! Throwaway `redis-server` processes for tests and demos: a standalone server, a Cluster, a
//! Sentinel setup, and a TCP proxy that cuts or delays connections. Kept out of `leasehold`'s
//! API: it is test tooling (as `redis-test` is for `redis`).
//!
//! Each server listens on a free loopback port, keeps its files in a temporary directory, saves
//! nothing, and is killed when the handle drops. Set `LEASEHOLD_REDIS_SERVER` to use another
//! binary than the `redis-server` on `PATH`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = leasehold_testing::RedisServer::start()?;
//! println!("a throwaway Redis at {}", server.url());
//! # Ok(()) }
//! ```

mod cluster;
mod proxy;
mod sentinel;
mod server;

pub use cluster::{keyslot, RedisCluster};
pub use proxy::Proxy;
pub use sentinel::RedisSentinel;
pub use server::RedisServer;

use std::io;

/// `$REDIS_URL` when it is set; otherwise start a throwaway server and return it with its
/// URL (keep the server alive as long as you use the URL). What the examples use.
pub fn url_or_start() -> io::Result<(Option<RedisServer>, String)> {
    match std::env::var("REDIS_URL") {
        Ok(url) => Ok((None, url)),
        Err(_) => {
            let server = RedisServer::start()?;
            let url = server.url();
            Ok((Some(server), url))
        }
    }
}
