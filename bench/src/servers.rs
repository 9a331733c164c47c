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
    /// Calls that answered an error (`failed_calls` + `rejected_calls`, Redis 7).
    pub failed: u64,
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

    /// Reads from client connections since the last `CONFIG RESETSTAT` (`INFO stats`
    /// `total_reads_processed`): fewer reads per command when commands arrive together.
    pub async fn reads(&self) -> Result<u64> {
        let stats = self.info(InfoKind::Stats).await?;
        let reads = stats.get("total_reads_processed");
        Ok(reads.and_then(|r| r.parse().ok()).unwrap_or(0))
    }

    /// `CONFIG RESETSTAT`: zero the command statistics.
    pub async fn reset_stats(&self) -> Result<()> {
        self.command("CONFIG", vec!["RESETSTAT"]).await?;
        Ok(())
    }

    /// A Redis user allowed everything but `FCALL`, so that a leasehold client logged in as it
    /// calls its scripts with EVALSHA; returns `url` with its credentials.
    pub async fn user_without_functions(&self, url: &str) -> Result<String> {
        let (user, password) = ("bench-evalsha", "bench-evalsha-pw");
        let pass = format!(">{password}");
        self.command(
            "ACL",
            vec!["SETUSER", user, "on", &pass, "~*", "&*", "+@all", "-fcall"],
        )
        .await?;
        let rest = url.strip_prefix("redis://").ok_or("a redis:// URL")?;
        Ok(format!("redis://{user}:{password}@{rest}"))
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
                    Some(("failed_calls" | "rejected_calls", n)) => {
                        stat.failed += n.parse().unwrap_or(0)
                    }
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

    pub async fn config_set(&self, parameter: &str, value: &str) -> Result<()> {
        self.command("CONFIG", vec!["SET", parameter, value])
            .await?;
        Ok(())
    }

    /// Start watching script calls: command statistics zeroed (`CONFIG RESETSTAT`), and every
    /// command that runs `floor_us` or longer logged (`slowlog-log-slower-than`), up to
    /// `max_len` entries, from an empty slow log.
    pub async fn script_window_start(&self, floor_us: u64, max_len: u64) -> Result<()> {
        self.config_set("slowlog-max-len", &max_len.to_string())
            .await?;
        self.config_set("slowlog-log-slower-than", &floor_us.to_string())
            .await?;
        self.command("SLOWLOG", vec!["RESET"]).await?;
        self.reset_stats().await
    }

    /// Stop watching: logging off (`slowlog-log-slower-than -1`), then the script calls
    /// (`EVALSHA`, `EVAL`, `FCALL` and their `_RO` forms) since the start, counted by
    /// `INFO commandstats`, the slowest from `SLOWLOG GET -1` (Redis 7).
    /// `over_us`: count the logged script calls that took longer.
    pub async fn script_window_end(
        &self,
        floor_us: u64,
        max_len: u64,
        over_us: u64,
    ) -> Result<ScriptCalls> {
        self.config_set("slowlog-log-slower-than", "-1").await?;
        let stats = self.commandstats().await?;
        // (fred's InfoKind has no errorstats section)
        let errors = match self.command("INFO", vec!["errorstats"]).await? {
            Value::String(s) => s.to_string(),
            other => other.as_string().unwrap_or_default(),
        };
        let v = self.command("SLOWLOG", vec!["GET", "-1"]).await?;
        let mut calls = parse_slowlog(v, over_us)?;
        calls.noscript = errors
            .lines()
            .find_map(|l| l.trim().strip_prefix("errorstat_NOSCRIPT:count="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        for name in SCRIPT_COMMANDS {
            if let Some(c) = stats.get(&name.to_ascii_lowercase()) {
                calls.calls += c.calls;
                calls.failed += c.failed;
                calls.total_us += c.usec;
            }
        }
        calls.floor_us = floor_us;
        calls.full = calls.entries >= max_len;
        Ok(calls)
    }

    /// Stop logging (`slowlog-log-slower-than -1`); the log keeps what it has.
    pub async fn slowlog_stop(&self) -> Result<()> {
        self.config_set("slowlog-log-slower-than", "-1").await
    }

    /// Back to Redis's defaults (10 ms, 128 entries), with an empty log.
    pub async fn slowlog_defaults(&self) -> Result<()> {
        self.config_set("slowlog-log-slower-than", "10000").await?;
        self.config_set("slowlog-max-len", "128").await?;
        self.command("SLOWLOG", vec!["RESET"]).await?;
        Ok(())
    }
}

/// The commands that run a script.
pub const SCRIPT_COMMANDS: [&str; 6] = [
    "EVALSHA",
    "EVAL",
    "FCALL",
    "EVALSHA_RO",
    "EVAL_RO",
    "FCALL_RO",
];

/// Script calls seen in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScriptCalls {
    /// Script calls (`INFO commandstats`), and how many of them answered an error.
    pub calls: u64,
    pub failed: u64,
    /// All script calls' execution time inside Redis, µs (`INFO commandstats`).
    pub total_us: u64,
    /// Script calls in the slow log (those that ran `floor_us` or longer), and the slowest.
    pub logged: u64,
    pub max_us: u64,
    /// The median of the logged script calls, and how many took longer than `over_us`.
    pub median_us: u64,
    pub over: u64,
    pub floor_us: u64,
    /// `NOSCRIPT` replies (a script's first use on this server: the client loads it and
    /// calls again), from `INFO errorstats`.
    pub noscript: u64,
    /// Entries of any command in the slow log (commands run by scripts are logged too).
    pub entries: u64,
    /// The slow log was full: its oldest entries may have been dropped.
    pub full: bool,
}

impl ScriptCalls {
    /// The slowest script call's time inside Redis; `None` when none reached the floor.
    pub fn max(&self) -> Option<Duration> {
        (self.logged > 0).then(|| Duration::from_micros(self.max_us))
    }
}

/// Parse `SLOWLOG GET`'s reply (entries `[id, unix time, µs, [command, args…], addr, name]`):
/// the script calls in it, the slowest, the median, how many took longer than `over_us`, and
/// the number of entries.
pub fn parse_slowlog(v: Value, over_us: u64) -> Result<ScriptCalls> {
    let Value::Array(entries) = v else {
        return Err(format!("SLOWLOG GET: unexpected reply {v:?}").into());
    };
    let mut out = ScriptCalls {
        entries: entries.len() as u64,
        ..ScriptCalls::default()
    };
    let mut times = Vec::new();
    for e in entries {
        let Value::Array(f) = e else {
            return Err(format!("SLOWLOG GET: unexpected entry {e:?}").into());
        };
        let us = f.get(2).and_then(Value::as_u64);
        let command = match f.get(3) {
            Some(Value::Array(args)) => args.first().and_then(Value::as_string),
            _ => None,
        };
        let (Some(us), Some(command)) = (us, command) else {
            return Err(format!("SLOWLOG GET: unexpected entry {f:?}").into());
        };
        if SCRIPT_COMMANDS.contains(&command.to_ascii_uppercase().as_str()) {
            times.push(us);
        }
    }
    times.sort_unstable();
    out.logged = times.len() as u64;
    out.max_us = times.last().copied().unwrap_or(0);
    out.median_us = times.get(times.len() / 2).copied().unwrap_or(0);
    out.over = times.iter().filter(|&&t| t > over_us).count() as u64;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, us: i64, args: &[&str]) -> Value {
        Value::Array(vec![
            Value::Integer(id),
            Value::Integer(1_700_000_000),
            Value::Integer(us),
            Value::Array(args.iter().map(|a| Value::String((*a).into())).collect()),
            Value::String("127.0.0.1:5000".into()),
            Value::String("".into()),
        ])
    }

    #[test]
    fn slowlog_counts_only_script_calls() {
        let log = Value::Array(vec![
            entry(3, 900, &["evalsha", "abc", "2", "k1", "k2"]),
            entry(2, 7000, &["ZADD", "k", "0", "m"]),
            entry(1, 4200, &["EVAL", "return 1", "0"]),
            entry(0, 10, &["FCALL", "f", "0"]),
        ]);
        let c = parse_slowlog(log, 1000).unwrap();
        assert_eq!(
            (c.logged, c.max_us, c.median_us, c.entries, c.over),
            (3, 4200, 900, 4, 1)
        );
        assert_eq!(c.max(), Some(Duration::from_micros(4200)));
        let empty = parse_slowlog(Value::Array(vec![]), 1000).unwrap();
        assert_eq!((empty.logged, empty.max()), (0, None));
        assert!(parse_slowlog(Value::Integer(1), 1000).is_err());
    }
}
