//! A loopback TCP proxy that injects network faults between a client and Redis.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// A test of the bytes a client sends (see [`Proxy::cut_after`]).
type Matcher = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// What happens to a connection once a client sent bytes an armed [`Matcher`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Replies are swallowed, and the connection closes ([`Proxy::cut_after`]).
    Cut,
    /// Replies are held this long, then flow ([`Proxy::stall_after`]).
    Stall(Duration),
}

/// How long a connection [`Proxy::cut_after`] fired on stays open after the matching bytes
/// went upstream (swallowing every reply), so that Redis surely runs the command first.
const CUT_AFTER_LINGER: Duration = Duration::from_millis(50);

/// A TCP proxy on a free loopback port in front of `upstream` (a Redis on loopback). Faults:
/// [`delay`](Self::delay), [`blackhole`](Self::blackhole), [`cut`](Self::cut),
/// [`cut_after`](Self::cut_after) (a lost reply); undo with [`heal`](Self::heal). Dropping
/// the proxy closes every connection and stops its tasks. Must be started inside a Tokio
/// runtime.
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
pub struct Proxy {
    port: u16,
    mode: watch::Sender<Mode>,
    /// Bumped by [`Proxy::cut`]: every connection older than the bump closes.
    generation: watch::Sender<u64>,
    tasks: Arc<std::sync::Mutex<JoinSet<()>>>,
    /// Armed by [`Proxy::cut_after`] or [`Proxy::stall_after`]; taken by the connection it
    /// fires on.
    trigger: Arc<Mutex<Option<(Matcher, Then)>>>,
    /// How many times it fired.
    fired: Arc<AtomicU64>,
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
        let trigger: Arc<Mutex<Option<(Matcher, Then)>>> = Arc::default();
        let fired = Arc::new(AtomicU64::new(0));
        let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream));
        let accept = {
            let (mode, generation, tasks) = (mode.clone(), generation.clone(), tasks.clone());
            let cut = Trigger {
                trigger: trigger.clone(),
                fired: fired.clone(),
            };
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (mode, generation) = (mode.subscribe(), generation.subscribe());
                    if let Ok(mut set) = tasks.lock() {
                        while set.try_join_next().is_some() {} // reap closed connections
                        set.spawn(connection(client, upstream, mode, generation, cut.clone()));
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
            trigger,
            fired,
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
    /// Bytes a [`blackhole`](Self::blackhole) held on them are lost, even if `heal` follows at
    /// once.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Lose one reply: the next chunk a client sends that `matches` accepts (it sees the bytes
    /// of that chunk with the end of the one before, so a command split over two reads is
    /// seen whole) goes to Redis, which runs it, but neither its reply nor any later one on
    /// that connection reaches the client, and the connection is closed shortly after.
    /// Fires once; [`cuts_after`](Self::cuts_after) counts the times it did, and
    /// [`disarm`](Self::disarm) takes back one that has not yet.
    ///
    /// ```no_run
    /// # async fn demo(proxy: leasehold_testing::Proxy) {
    /// // The reply of the next script call naming `lease_renew` is lost.
    /// proxy.cut_after(|bytes| bytes.windows(11).any(|w| w == b"lease_renew"));
    /// # }
    /// ```
    pub fn cut_after(&self, matches: impl Fn(&[u8]) -> bool + Send + Sync + 'static) {
        self.arm(Arc::new(matches), Then::Cut);
    }

    /// Delay one reply: as [`cut_after`](Self::cut_after), but the replies on that connection
    /// are held for `stall` from the match on, then flow, in order, and the connection stays.
    /// Counted by [`cuts_after`](Self::cuts_after) too.
    pub fn stall_after(
        &self,
        matches: impl Fn(&[u8]) -> bool + Send + Sync + 'static,
        stall: Duration,
    ) {
        self.arm(Arc::new(matches), Then::Stall(stall));
    }

    fn arm(&self, matches: Matcher, then: Then) {
        if let Ok(mut t) = self.trigger.lock() {
            *t = Some((matches, then));
        }
    }

    /// Take back a [`cut_after`](Self::cut_after) or [`stall_after`](Self::stall_after) that
    /// has not fired.
    pub fn disarm(&self) {
        if let Ok(mut t) = self.trigger.lock() {
            *t = None;
        }
    }

    /// How many times [`cut_after`](Self::cut_after) or [`stall_after`](Self::stall_after)
    /// fired.
    pub fn cuts_after(&self) -> u64 {
        self.fired.load(Ordering::SeqCst)
    }

    /// Forward again without added latency; queued bytes flow.
    pub fn heal(&self) {
        self.mode.send_replace(Mode::Forward {
            latency: Duration::ZERO,
        });
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("port", &self.port)
            .field("mode", &*self.mode.borrow())
            .field("cuts_after", &self.cuts_after())
            .finish_non_exhaustive()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(mut set) = self.tasks.lock() {
            set.abort_all();
        }
    }
}

/// What a connection needs of [`Proxy::cut_after`] and [`Proxy::stall_after`].
#[derive(Clone)]
struct Trigger {
    trigger: Arc<Mutex<Option<(Matcher, Then)>>>,
    fired: Arc<AtomicU64>,
}

/// What the reply direction of one connection does after a trigger fired on it.
#[derive(Default)]
struct Replies {
    /// Drop every reply.
    swallow: AtomicBool,
    /// Hold replies until then.
    stall_until: Mutex<Option<tokio::time::Instant>>,
}

/// Which way a pump moves bytes, and what it does for [`Proxy::cut_after`] and
/// [`Proxy::stall_after`].
enum Way {
    /// Client to Redis: looks for the armed match; sets up `Replies` before it forwards the
    /// matching chunk (and for a cut, ends the connection after [`CUT_AFTER_LINGER`]).
    Up(Trigger, Arc<Replies>),
    /// Redis to client: does what `Replies` says.
    Down(Arc<Replies>),
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    mut generation: watch::Receiver<u64>,
    cut: Trigger,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    generation.borrow_and_update();
    let replies = Arc::new(Replies::default());
    // Either direction ending (or a cut) closes both: dropping the halves closes the sockets.
    // A cut is looked at first, so a `heal` right after it cannot let a held chunk through.
    tokio::select! {
        biased;
        _ = generation.changed() => {}
        _ = pump(cr, sw, mode.clone(), Way::Up(cut, replies.clone())) => {}
        _ = pump(sr, cw, mode, Way::Down(replies)) => {}
    }
}

/// The bytes a [`Proxy::cut_after`] matcher sees of the chunk before.
const MATCH_OVERLAP: usize = 256;

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    way: Way,
) {
    let mut buf = vec![0u8; 16 * 1024];
    // The end of the chunk before, then this one: what a cut_after matcher sees.
    let mut window: Vec<u8> = Vec::new();
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
        let mut cut_now = false;
        match &way {
            Way::Down(replies) if replies.swallow.load(Ordering::SeqCst) => continue,
            Way::Down(replies) => {
                let until = replies.stall_until.lock().ok().and_then(|u| *u);
                if let Some(until) = until {
                    tokio::time::sleep_until(until).await;
                }
            }
            Way::Up(cut, replies) => {
                window.drain(..window.len().saturating_sub(MATCH_OVERLAP));
                window.extend_from_slice(&buf[..n]);
                let mut fired = None;
                if let Ok(mut trigger) = cut.trigger.lock() {
                    if trigger
                        .as_ref()
                        .is_some_and(|(matches, _)| matches(&window))
                    {
                        fired = trigger.take().map(|(_, then)| then);
                    }
                }
                // Before the command goes up, so that its reply cannot go down first.
                match fired {
                    Some(Then::Cut) => {
                        replies.swallow.store(true, Ordering::SeqCst);
                        cut_now = true;
                    }
                    Some(Then::Stall(d)) => {
                        if let Ok(mut until) = replies.stall_until.lock() {
                            *until = Some(tokio::time::Instant::now() + d);
                        }
                    }
                    None => {}
                }
                if fired.is_some() {
                    cut.fired.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if cut_now {
            tokio::time::sleep(CUT_AFTER_LINGER).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedisServer;
    use std::time::Instant;

    fn resp(words: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", words.len()).into_bytes();
        for w in words {
            out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
        }
        out
    }

    /// Send one command through `proxy` and read what comes back within `wait` (empty: the
    /// connection closed without a reply, or nothing came).
    async fn ask(proxy: &Proxy, words: &[&str], wait: Duration) -> Vec<u8> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, proxy.port()))
            .await
            .unwrap();
        s.write_all(&resp(words)).await.unwrap();
        let mut buf = vec![0u8; 1024];
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(n)) => buf[..n].to_vec(),
            _ => Vec::new(),
        }
    }

    #[tokio::test]
    async fn cut_after_runs_the_command_and_loses_its_reply_once() {
        let server = RedisServer::start().unwrap();
        let proxy = Proxy::start(server.port()).await.unwrap();
        proxy.cut_after(|b| b.windows(6).any(|w| w == b"marked"));
        let wait = Duration::from_secs(2);
        assert_eq!(ask(&proxy, &["SET", "k", "plain"], wait).await, b"+OK\r\n");
        assert_eq!(proxy.cuts_after(), 0);
        assert!(ask(&proxy, &["SET", "k", "marked"], wait).await.is_empty());
        assert_eq!(proxy.cuts_after(), 1);
        assert!(server.command(&["GET", "k"]).unwrap().contains("marked"));
        // Once only.
        assert_eq!(ask(&proxy, &["SET", "k", "marked"], wait).await, b"+OK\r\n");
        proxy.cut_after(|_| true);
        proxy.disarm();
        assert_eq!(ask(&proxy, &["PING"], wait).await, b"+PONG\r\n");
    }

    #[tokio::test]
    async fn stall_after_holds_the_reply() {
        let server = RedisServer::start().unwrap();
        let proxy = Proxy::start(server.port()).await.unwrap();
        proxy.stall_after(
            |b| b.windows(4).any(|w| w == b"PING"),
            Duration::from_millis(300),
        );
        let started = Instant::now();
        assert_eq!(
            ask(&proxy, &["PING"], Duration::from_secs(2)).await,
            b"+PONG\r\n"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(proxy.cuts_after(), 1);
    }
}
