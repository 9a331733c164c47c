//! The servers the suite runs against, started by it and stopped when their handles drop: a
//! throwaway `redis-server` (through `leasehold_testing`) and a one-member etcd, both on free
//! loopback ports with their files in temporary directories. Plus `Admin`, the connection
//! that reads Redis's statistics.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Config};
use fred::types::{CustomCommand, InfoKind, Value};

use crate::Result;

/// A one-member etcd cluster on loopback, data in a temporary directory.
///
/// It runs with etcd's defaults, so every write is fsynced to that directory's disk; the Redis
/// server runs without persistence (`leasehold_testing`'s defaults). The tables say so.
pub struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    pub endpoint: String,
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

impl Etcd {
    /// Start `etcd` (from `$PATH`, or `$ETCD_BIN`) and wait until it answers.
    pub async fn start() -> Result<Etcd> {
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
        let dir = tempfile::Builder::new()
            .prefix("leasehold-bench-etcd-")
            .tempdir()?;
        let (client, peer) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let child = Command::new(&bin)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run `{bin}` ({e}): install etcd (Debian: \
                         `apt-get install --no-install-recommends etcd-server`) or set ETCD_BIN"
                    ),
                )
            })?;
        let etcd = Etcd {
            child,
            _dir: dir,
            endpoint: client_url,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = etcd_client::Client::connect([&etcd.endpoint], None).await {
                if c.status().await.is_ok() {
                    return Ok(etcd);
                }
            }
            if Instant::now() > deadline {
                return Err(
                    "etcd did not answer within 20 s (its log is etcd.log in its \
                            temporary directory)"
                        .into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn version(&self) -> Result<String> {
        let mut c = etcd_client::Client::connect([&self.endpoint], None).await?;
        Ok(c.status().await?.version().to_owned())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One counter line of `INFO commandstats`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CmdStat {
    pub calls: u64,
    pub usec: u64,
}

impl CmdStat {
    pub fn usec_per_call(&self) -> f64 {
        if self.calls == 0 {
            f64::NAN
        } else {
            self.usec as f64 / self.calls as f64
        }
    }
}

/// A plain fred connection for statistics and housekeeping commands.
pub struct Admin {
    client: fred::clients::Client,
}

impl Admin {
    pub async fn connect(url: &str) -> Result<Admin> {
        let client = fred::clients::Client::new(Config::from_url(url)?, None, None, None);
        client.init().await?;
        Ok(Admin { client })
    }

    async fn command(&self, name: &'static str, args: Vec<&str>) -> Result<Value> {
        let cmd = CustomCommand::new_static(name, fred::types::ClusterHash::FirstKey, false);
        Ok(self.client.custom(cmd, args).await?)
    }

    /// `INFO <section>` as a map of its `key:value` lines.
    pub async fn info(&self, section: InfoKind) -> Result<HashMap<String, String>> {
        let text: String = self.client.info(Some(section)).await?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect())
    }

    pub async fn version(&self) -> Result<String> {
        let server = self.info(InfoKind::Server).await?;
        Ok(server.get("redis_version").cloned().unwrap_or_default())
    }

    /// `CONFIG RESETSTAT`: zero the command statistics.
    pub async fn reset_stats(&self) -> Result<()> {
        self.command("CONFIG", vec!["RESETSTAT"]).await?;
        Ok(())
    }

    /// `INFO commandstats`, by lower-case command name (`evalsha`, `set`, …).
    pub async fn commandstats(&self) -> Result<HashMap<String, CmdStat>> {
        let info = self.info(InfoKind::CommandStats).await?;
        let mut out = HashMap::new();
        for (k, v) in info {
            let Some(cmd) = k.strip_prefix("cmdstat_") else {
                continue;
            };
            let mut stat = CmdStat::default();
            for field in v.split(',') {
                match field.split_once('=') {
                    Some(("calls", n)) => stat.calls = n.parse().unwrap_or(0),
                    Some(("usec", n)) => stat.usec = n.parse().unwrap_or(0),
                    _ => {}
                }
            }
            out.insert(cmd.to_owned(), stat);
        }
        Ok(out)
    }

    /// CPU seconds the server process has used (user + system, all threads), from `INFO cpu`.
    pub async fn cpu_seconds(&self) -> Result<f64> {
        let cpu = self.info(InfoKind::Cpu).await?;
        let get = |k: &str| {
            cpu.get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok(get("used_cpu_user") + get("used_cpu_sys"))
    }

    /// `used_memory` from `INFO memory`, in bytes.
    pub async fn used_memory(&self) -> Result<i64> {
        let mem = self.info(InfoKind::Memory).await?;
        Ok(mem
            .get("used_memory")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// `MEMORY USAGE key SAMPLES 0` (every element counted), in bytes.
    pub async fn memory_usage(&self, key: &str) -> Result<i64> {
        match self
            .command("MEMORY", vec!["USAGE", key, "SAMPLES", "0"])
            .await?
        {
            Value::Integer(n) => Ok(n),
            other => Err(format!("MEMORY USAGE {key}: unexpected reply {other:?}").into()),
        }
    }

    pub async fn dbsize(&self) -> Result<i64> {
        match self.command("DBSIZE", vec![]).await? {
            Value::Integer(n) => Ok(n),
            other => Err(format!("DBSIZE: unexpected reply {other:?}").into()),
        }
    }

    pub async fn flushall(&self) -> Result<()> {
        self.command("FLUSHALL", vec![]).await?;
        Ok(())
    }
}
