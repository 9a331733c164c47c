//! What the machine and this process are doing: kernel, cores, load, RSS, CPU time. Linux only
//! (reads `/proc`), like the servers the suite starts.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn kernel() -> String {
    read("/proc/sys/kernel/osrelease").trim().to_owned()
}

/// The 1, 5 and 15 minute load averages, as `uptime` prints them.
pub fn loadavg() -> String {
    let s = read("/proc/loadavg");
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Resident set size of this process (`VmRSS`), in bytes.
pub fn rss_bytes() -> u64 {
    read("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// User + system CPU time of this process (all threads) so far.
pub fn cpu_time_self() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `2026-11-26 14:03 UTC`, from the system clock (no time-zone database needed).
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02} UTC")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// CPU ticks (`/proc/stat` units) busy on the whole machine, and used by one process.
fn machine_busy_ticks() -> u64 {
    let stat = read("/proc/stat");
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    get(0) + get(1) + get(2) + get(5) + get(6) + get(7)
}

fn process_ticks(pid: &str) -> u64 {
    let stat = read(&format!("/proc/{pid}/stat"));
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// CPU seconds (user + system) a process has used so far, from `/proc` (10 ms resolution).
pub fn process_cpu_seconds(pid: u32) -> f64 {
    process_ticks(&pid.to_string()) as f64 / ticks_per_second()
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Where the machine's CPU went during a stretch of the run: this process, the servers it
/// started (Redis, etcd), and everything else. "Everything else" is the load other work put on
/// the shared machine, which the tables must be read against.
pub struct LoadMeter {
    servers: Vec<u32>,
    start: Instant,
    machine: u64,
    ours: u64,
    server_ticks: u64,
}

/// CPU used during a stretch, in cores (1.0 = one core busy the whole time).
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub bench: f64,
    pub servers: f64,
    pub others: f64,
}

impl LoadMeter {
    pub fn start(servers: &[u32]) -> LoadMeter {
        let mut m = LoadMeter {
            servers: servers.to_vec(),
            start: Instant::now(),
            machine: 0,
            ours: 0,
            server_ticks: 0,
        };
        (m.machine, m.ours, m.server_ticks) = m.sample();
        m
    }

    fn sample(&self) -> (u64, u64, u64) {
        let servers = self
            .servers
            .iter()
            .map(|p| process_ticks(&p.to_string()))
            .sum();
        (machine_busy_ticks(), process_ticks("self"), servers)
    }

    pub fn finish(&self) -> Load {
        let (machine, ours, servers) = self.sample();
        let wall = self.start.elapsed().as_secs_f64().max(1e-9) * ticks_per_second();
        let d_machine = machine.saturating_sub(self.machine) as f64;
        let d_ours = ours.saturating_sub(self.ours) as f64;
        let d_servers = servers.saturating_sub(self.server_ticks) as f64;
        Load {
            bench: d_ours / wall,
            servers: d_servers / wall,
            others: (d_machine - d_ours - d_servers).max(0.0) / wall,
        }
    }
}

impl Load {
    /// The load line, naming the servers measured.
    pub fn describe(&self, servers: &str) -> String {
        format!(
            "CPU in cores: bench {:.2}, {servers} {:.2}, other processes {:.2}",
            self.bench, self.servers, self.others
        )
    }
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe("redis+etcd"))
    }
}
