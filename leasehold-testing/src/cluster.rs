//! A throwaway Redis Cluster: N primaries on free loopback ports, slots spread evenly.

use std::io;
use std::process::Command;
use std::time::{Duration, Instant};

use super::RedisServer;

/// A local Redis Cluster of primaries only (no replicas), built with `redis-cli --cluster
/// create`. Every node is killed when this drops.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use leasehold_testing::RedisCluster;
///
/// let cluster = RedisCluster::start(3)?;
/// // A namespace whose slot lives on the second node:
/// let ns = cluster.namespace_on(1, "orders")?;
/// let client = leasehold::Client::builder()
///     .url(cluster.url())
///     .namespace(ns)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// The port each node tells clients (its own, unless [`announce_ports`] changed it).
    ///
    /// [`announce_ports`]: RedisCluster::announce_ports
    announced: Vec<u16>,
}

/// One row of `CLUSTER NODES`: a primary and the slot ranges it serves.
#[derive(Debug, Clone)]
struct NodeSlots {
    id: String,
    port: u16,
    ranges: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Start `primaries` (at least 3, as `redis-cli --cluster create` requires) cluster-enabled
    /// servers and join them; returns once every node reports `cluster_state:ok`.
    pub fn start(primaries: usize) -> io::Result<RedisCluster> {
        RedisCluster::start_with(primaries, &[])
    }

    /// [`start`](Self::start), with extra `redis-server` arguments for every node (e.g.
    /// `["--appendonly", "yes", "--appendfsync", "always"]`, so that a node killed and started
    /// again keeps its data).
    pub fn start_with(primaries: usize, args: &[&str]) -> io::Result<RedisCluster> {
        let primaries = primaries.max(3);
        let mut nodes = Vec::with_capacity(primaries);
        for _ in 0..primaries {
            let mut all = vec![
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ];
            all.extend_from_slice(args);
            nodes.push(RedisServer::start_with(&all)?);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("redis-cli: {e}")))?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            )));
        }
        let announced = nodes.iter().map(RedisServer::port).collect();
        let cluster = RedisCluster { nodes, announced };
        cluster.wait_ok(Duration::from_secs(20))?;
        Ok(cluster)
    }

    /// Make node `i` tell clients to reach it at `127.0.0.1:<ports[i]>` (`cluster-announce-port`,
    /// also kept for restarts; the cluster bus keeps the node's own port): e.g. a
    /// [`Proxy`](crate::Proxy) in front of each node, so that a test can cut, stall or delay
    /// the traffic of every client with one node. Returns once every node's view of the
    /// cluster shows the new ports.
    pub fn announce_ports(&mut self, ports: &[u16]) -> io::Result<()> {
        if ports.len() != self.nodes.len() {
            return Err(io::Error::other("one port per node"));
        }
        for (n, &port) in self.nodes.iter_mut().zip(ports) {
            let (port, bus) = (port.to_string(), (n.port() + 10_000).to_string());
            expect_ok(n.command(&["CONFIG", "SET", "cluster-announce-port", &port])?)?;
            expect_ok(n.command(&["CONFIG", "SET", "cluster-announce-bus-port", &bus])?)?;
            n.add_args(&[
                "--cluster-announce-port",
                &port,
                "--cluster-announce-bus-port",
                &bus,
            ]);
        }
        self.announced = ports.to_vec();
        let mut want = self.announced.clone();
        want.sort_unstable();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut agreed = true;
            for n in &self.nodes {
                let mut seen: Vec<u16> = parse_nodes(&n.command(&["CLUSTER", "NODES"])?)
                    .iter()
                    .map(|s| s.port)
                    .collect();
                seen.sort_unstable();
                agreed &= seen == want;
            }
            if agreed {
                return self.wait_ok(Duration::from_secs(20));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(
                    "the nodes did not learn the announced ports",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until every node reports `cluster_state:ok` and agrees on who serves every slot.
    pub fn wait_ok(&self, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let mut ok = true;
            for n in &self.nodes {
                let info = n.command(&["CLUSTER", "INFO"]).unwrap_or_default();
                ok &= info.contains("cluster_state:ok");
            }
            if ok {
                let views: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        let mut v: Vec<String> = parse_nodes(&n.command(&["CLUSTER", "NODES"])?)
                            .into_iter()
                            .map(|s| format!("{}{:?}", s.id, s.ranges))
                            .collect();
                        v.sort();
                        Ok(v.join(","))
                    })
                    .collect::<io::Result<_>>()?;
                if views.windows(2).all(|w| w[0] == w[1]) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other("cluster did not become ok"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis-cluster://127.0.0.1:<p0>?node=127.0.0.1:<p1>&…` (fred's cluster URL), with the
    /// ports the nodes announce ([`announce_ports`](Self::announce_ports)).
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.announced[0]);
        for (i, port) in self.announced.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{port}"));
        }
        url
    }

    /// The nodes, in the order they were created.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Mutable access to the nodes, e.g. to [`kill`](RedisServer::kill) one and
    /// [`start_again`](RedisServer::start_again) it (it keeps its `nodes.conf`, so it rejoins
    /// with its slots; then [`wait_ok`](Self::wait_ok)).
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// Index of the node serving the namespace `ns` (the slot of its hash tag `{ns}`).
    pub fn node_of(&self, ns: &str) -> io::Result<usize> {
        let slot = keyslot(ns);
        let asked = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .ok_or_else(|| io::Error::other("no node runs"))?;
        let layout = parse_nodes(&asked.command(&["CLUSTER", "NODES"])?);
        let owner = layout
            .iter()
            .find(|n| n.ranges.iter().any(|&(a, b)| a <= slot && slot <= b))
            .ok_or_else(|| io::Error::other(format!("slot {slot} is not served")))?;
        self.nodes
            .iter()
            .zip(&self.announced)
            .position(|(n, &announced)| n.port() == owner.port || announced == owner.port)
            .ok_or_else(|| io::Error::other("owner is not one of our nodes"))
    }

    /// A namespace `<prefix>-<n>` whose slot is served by node `index`.
    pub fn namespace_on(&self, index: usize, prefix: &str) -> io::Result<String> {
        for n in 0..10_000 {
            let ns = format!("{prefix}-{n}");
            if self.node_of(&ns)? == index {
                return Ok(ns);
            }
        }
        Err(io::Error::other(format!("no namespace for node {index}")))
    }

    /// Move the slot of namespace `ns` (with its keys) to node `to`, the way
    /// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE, then SETSLOT NODE
    /// everywhere. Clients following the cluster see MOVED/ASK meanwhile.
    pub fn move_namespace(&self, ns: &str, to: usize) -> io::Result<()> {
        let from = self.node_of(ns)?;
        if from == to {
            return Ok(());
        }
        let slot = keyslot(ns).to_string();
        let (src, dst) = (&self.nodes[from], &self.nodes[to]);
        let id_of =
            |n: &RedisServer| -> io::Result<String> { Ok(bulk(&n.command(&["CLUSTER", "MYID"])?)) };
        let (src_id, dst_id) = (id_of(src)?, id_of(dst)?);
        expect_ok(dst.command(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id])?)?;
        expect_ok(src.command(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id])?)?;
        loop {
            let keys = bulk_array(&src.command(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"])?);
            if keys.is_empty() {
                break;
            }
            let port = dst.port().to_string();
            let mut words = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            words.extend(keys.iter().map(String::as_str));
            let reply = src.command(&words)?;
            if !reply.starts_with("+OK") && !reply.starts_with("+NOKEY") {
                return Err(io::Error::other(format!("MIGRATE: {reply}")));
            }
        }
        for n in &self.nodes {
            expect_ok(n.command(&["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id])?)?;
        }
        self.wait_ok(Duration::from_secs(20))
    }
}

fn expect_ok(reply: String) -> io::Result<()> {
    if reply.starts_with("+OK") {
        Ok(())
    } else {
        Err(io::Error::other(reply))
    }
}

/// The payload of a RESP bulk string reply (`$<len>\r\n<data>\r\n`).
fn bulk(reply: &str) -> String {
    reply
        .split_once("\r\n")
        .map_or("", |(_, rest)| rest)
        .trim_end_matches("\r\n")
        .to_owned()
}

/// The items of a flat RESP array of bulk strings.
fn bulk_array(reply: &str) -> Vec<String> {
    let lines: Vec<&str> = reply.split("\r\n").collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with('$'))
        .filter_map(|(i, _)| lines.get(i + 1).map(|s| s.to_string()))
        .collect()
}

/// Primaries and their slot ranges from a `CLUSTER NODES` reply.
fn parse_nodes(reply: &str) -> Vec<NodeSlots> {
    bulk(reply)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || !f[2].contains("master") {
                return None;
            }
            let port = f[1].split(['@', ':']).nth(1)?.parse().ok()?;
            let ranges = f[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| match r.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => r.parse().ok().map(|s| (s, s)),
                })
                .collect();
            Some(NodeSlots {
                id: f[0].to_owned(),
                port,
                ranges,
            })
        })
        .collect()
}

/// The cluster slot of every key of namespace `ns`: CRC16 (XMODEM) of `ns` mod 16384, as the
/// whole key's hash tag is `{ns}`.
pub fn keyslot(ns: &str) -> u16 {
    let mut crc: u16 = 0;
    for &b in ns.as_bytes() {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    #[test]
    fn keyslot_matches_redis() {
        // From the Redis Cluster specification / `CLUSTER KEYSLOT`.
        assert_eq!(super::keyslot("123456789"), 0x31C3);
        assert_eq!(super::keyslot("foo"), 12182);
    }
}
