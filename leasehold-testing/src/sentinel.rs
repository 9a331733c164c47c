//! A throwaway Sentinel setup: one primary, replicas, and three sentinels on loopback.

use std::io::{self, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::server::{binary, free_port, ping};
use super::RedisServer;

/// The service name the sentinels monitor.
pub const SERVICE: &str = "mymaster";

/// One primary, `replicas` replicas and three sentinels (quorum 2, `down-after-milliseconds`
/// 1000, so a dead primary is replaced within a few seconds). Everything is killed on drop.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use leasehold_testing::RedisSentinel;
///
/// let mut setup = RedisSentinel::start(1)?;
/// let client = leasehold::Client::connect(&setup.url()).await?;
/// setup.kill_primary()?; // the sentinels promote the replica
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisSentinel {
    /// Data nodes; index 0 is the first primary.
    servers: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

#[derive(Debug)]
struct Sentinel {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisSentinel {
    /// Start the primary, its replicas (in sync before this returns) and three sentinels that
    /// know every replica and each other.
    pub fn start(replicas: usize) -> io::Result<RedisSentinel> {
        let primary = RedisServer::start()?;
        let pport = primary.port().to_string();
        let mut servers = vec![primary];
        for _ in 0..replicas {
            servers.push(RedisServer::start_with(&[
                "--replicaof",
                "127.0.0.1",
                &pport,
            ])?);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for r in &servers[1..] {
            wait_for(deadline, "replica in sync", || {
                r.command(&["INFO", "replication"])
                    .is_ok_and(|i| i.contains("master_link_status:up"))
            })?;
        }
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(start_sentinel(servers[0].port())?);
        }
        let setup = RedisSentinel { servers, sentinels };
        wait_for(
            deadline,
            "sentinels know the replicas and each other",
            || {
                setup.sentinels.iter().all(|s| {
                    let info = sentinel_command(s.port, &["INFO", "sentinel"]).unwrap_or_default();
                    info.contains(&format!("slaves={replicas},sentinels=3"))
                })
            },
        )?;
        Ok(setup)
    }

    /// `redis-sentinel://127.0.0.1:<s1>?sentinelServiceName=mymaster&node=…` (fred's URL).
    pub fn url(&self) -> String {
        let mut url = format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName={SERVICE}",
            self.sentinels[0].port
        );
        for s in &self.sentinels[1..] {
            url.push_str(&format!("&node=127.0.0.1:{}", s.port));
        }
        url
    }

    /// Every data node (primary and replicas), in start order.
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// Mutable access, e.g. to restart a killed node.
    pub fn servers_mut(&mut self) -> &mut [RedisServer] {
        &mut self.servers
    }

    /// Index in [`servers`](Self::servers) of the node the (first) sentinel names as primary.
    pub fn primary(&self) -> io::Result<usize> {
        self.primary_named_by(&self.sentinels[0])
    }

    fn primary_named_by(&self, sentinel: &Sentinel) -> io::Result<usize> {
        let reply = sentinel_command(
            sentinel.port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE],
        )?;
        let port: u16 = reply
            .split("\r\n")
            .filter(|l| !l.starts_with(['*', '$']) && !l.is_empty())
            .nth(1)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| io::Error::other(format!("odd reply {reply:?}")))?;
        self.servers
            .iter()
            .position(|s| s.port() == port)
            .ok_or_else(|| io::Error::other(format!("primary {port} is not one of ours")))
    }

    /// SIGKILL the current primary; returns its index. The sentinels notice after ~1 s and
    /// promote a replica.
    pub fn kill_primary(&mut self) -> io::Result<usize> {
        let i = self.primary()?;
        self.servers[i].kill();
        Ok(i)
    }

    /// Wait until every sentinel names the same primary, other than `old`, and it accepts
    /// writes. (Waiting for all of them matters: a sentinel that has not switched yet may still
    /// take a node restarted meanwhile for the primary.)
    pub fn wait_failover(&self, old: usize, limit: Duration) -> io::Result<usize> {
        let deadline = Instant::now() + limit;
        let mut new = old;
        wait_for(deadline, "failover", || {
            match self.primary() {
                Ok(i) if i != old => new = i,
                _ => return false,
            }
            self.sentinels[1..]
                .iter()
                .all(|s| self.primary_named_by(s).is_ok_and(|i| i == new))
                && self.servers[new]
                    .command(&["INFO", "replication"])
                    .is_ok_and(|i| i.contains("role:master"))
        })?;
        Ok(new)
    }

    /// Ask a sentinel for a failover now (`SENTINEL FAILOVER`; the old primary stays up and is
    /// demoted to a replica) and wait until a replica has taken over. Returns the indexes of
    /// the old and the new primary.
    pub fn force_failover(&self, limit: Duration) -> io::Result<(usize, usize)> {
        let old = self.primary()?;
        let reply = sentinel_command(self.sentinels[0].port, &["SENTINEL", "FAILOVER", SERVICE])?;
        if !reply.starts_with("+OK") {
            return Err(io::Error::other(reply));
        }
        Ok((old, self.wait_failover(old, limit)?))
    }

    /// The last `lines` lines of every sentinel's and every data node's log, labelled, for a
    /// test to print when the setup does not do what it expected (the temp dirs vanish on drop).
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let logs = self
            .sentinels
            .iter()
            .map(|s| {
                (
                    format!("sentinel {}", s.port),
                    s.dir.path().join("sentinel.log"),
                )
            })
            .chain(self.servers.iter().map(|r| {
                let name = format!("redis-{}.log", r.port());
                (format!("server {}", r.port()), r.dir().join(name))
            }));
        for (label, path) in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("({e})\n"));
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {label}\n"));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

fn wait_for(deadline: Instant, what: &str, mut cond: impl FnMut() -> bool) -> io::Result<()> {
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!("timed out waiting: {what}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_sentinel(primary_port: u16) -> io::Result<Sentinel> {
    let dir = tempfile::Builder::new()
        .prefix("leasehold-sentinel-")
        .tempdir()?;
    let mut last = None;
    for _ in 0..5 {
        let port = free_port()?;
        match spawn_sentinel(dir.path(), port, primary_port) {
            Ok(child) => return Ok(Sentinel { child, port, dir }),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("could not start a sentinel")))
}

fn spawn_sentinel(dir: &Path, port: u16, primary_port: u16) -> io::Result<Child> {
    // Sentinels rewrite their config file, so each gets its own in its own directory.
    let conf = dir.join("sentinel.conf");
    let mut f = std::fs::File::create(&conf)?;
    writeln!(f, "port {port}\nbind 127.0.0.1\nprotected-mode no")?;
    writeln!(f, "dir {}", dir.display())?;
    writeln!(f, "logfile {}", dir.join("sentinel.log").display())?;
    writeln!(f, "sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2")?;
    writeln!(f, "sentinel down-after-milliseconds {SERVICE} 1000")?;
    writeln!(f, "sentinel failover-timeout {SERVICE} 5000")?;
    writeln!(f, "sentinel parallel-syncs {SERVICE} 1")?;
    drop(f);
    let mut child = Command::new(binary())
        .arg(&conf)
        .arg("--sentinel")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!("sentinel exited with {status}")));
        }
        if ping(addr).is_ok() {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("sentinel did not answer PING"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sentinel_command(port: u16, words: &[&str]) -> io::Result<String> {
    super::server::command_at(port, words)
}
