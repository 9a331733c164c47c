//! A loopback TCP proxy that injects network faults between a client and Redis.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward, after `latency` per chunk in each direction.
    Forward { latency: Duration },
    /// Accept connections but move no bytes in either direction (a partition: what was sent
    /// stays queued, as in TCP retransmission, and flows again after [`Proxy::heal`]).
    Blackhole,
}

/// A TCP proxy on a free loopback port in front of `upstream` (a Redis on loopback). Faults:
/// [`delay`](Self::delay), [`blackhole`](Self::blackhole), [`cut`](Self::cut); undo with
/// [`heal`](Self::heal). Dropping the proxy closes every connection and stops its tasks.
/// Must be started inside a Tokio runtime.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use leasehold_testing::{Proxy, RedisServer};
///
/// let server = RedisServer::start()?;
/// let proxy = Proxy::start(server.port()).await?;
/// let client = leasehold::Client::connect(&proxy.url()).await?;
/// proxy.blackhole(); // the client's renewals now go unanswered
/// proxy.heal();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    mode: watch::Sender<Mode>,
    /// Bumped by [`Proxy::cut`]: every connection older than the bump closes.
    generation: watch::Sender<u64>,
    tasks: Arc<std::sync::Mutex<JoinSet<()>>>,
}

impl Proxy {
    /// Listen on a free loopback port and forward to `127.0.0.1:<upstream>`.
    pub async fn start(upstream: u16) -> io::Result<Proxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let (mode, _) = watch::channel(Mode::Forward {
            latency: Duration::ZERO,
        });
        let (generation, _) = watch::channel(0u64);
        let tasks = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream));
        let accept = {
            let (mode, generation, tasks) = (mode.clone(), generation.clone(), tasks.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (mode, generation) = (mode.subscribe(), generation.subscribe());
                    if let Ok(mut set) = tasks.lock() {
                        while set.try_join_next().is_some() {} // reap closed connections
                        set.spawn(connection(client, upstream, mode, generation));
                    }
                }
            }
        };
        if let Ok(mut set) = tasks.lock() {
            set.spawn(accept);
        }
        Ok(Proxy {
            port,
            mode,
            generation,
            tasks,
        })
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Forward with `latency` added to every chunk, each way.
    pub fn delay(&self, latency: Duration) {
        self.mode.send_replace(Mode::Forward { latency });
    }

    /// Stop moving bytes (connections stay open; new ones are accepted and hang).
    pub fn blackhole(&self) {
        self.mode.send_replace(Mode::Blackhole);
    }

    /// Close every open connection (the client sees them reset); new ones are accepted.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Forward again without added latency; queued bytes flow.
    pub fn heal(&self) {
        self.mode.send_replace(Mode::Forward {
            latency: Duration::ZERO,
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(mut set) = self.tasks.lock() {
            set.abort_all();
        }
    }
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    mut generation: watch::Receiver<u64>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    generation.borrow_and_update();
    // Either direction ending (or a cut) closes both: dropping the halves closes the sockets.
    tokio::select! {
        _ = pump(cr, sw, mode.clone()) => {}
        _ = pump(sr, cw, mode) => {}
        _ = generation.changed() => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // While blackholed, do not even read: the sender's bytes wait in the socket buffers.
        if mode.wait_for(|m| *m != Mode::Blackhole).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // The latency in force when the chunk arrived (not when the read began, which may be
        // long before a `delay`).
        let latency = match *mode.borrow() {
            Mode::Forward { latency } => latency,
            Mode::Blackhole => Duration::ZERO,
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        // A partition that started while this chunk was read holds it until healed.
        if mode.wait_for(|m| *m != Mode::Blackhole).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
