//! One throwaway `redis-server` process.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process on a free loopback port.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Extra `redis-server` arguments, kept for [`RedisServer::restart`].
    args: Vec<String>,
}

pub(crate) fn binary() -> String {
    std::env::var("LEASEHOLD_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

pub(crate) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

impl RedisServer {
    /// Start a server; fails with a message saying how to install `redis-server` when it is
    /// missing.
    pub fn start() -> io::Result<RedisServer> {
        RedisServer::start_with(&[])
    }

    /// Start a server with extra `redis-server` arguments (e.g. `["--replicaof", "127.0.0.1",
    /// "7000"]`, TLS or cluster settings), appended after the defaults so they win.
    pub fn start_with(args: &[&str]) -> io::Result<RedisServer> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let dir = tempfile::Builder::new()
            .prefix("leasehold-redis-")
            .tempdir()?;
        let mut last = None;
        // Another process may take the port between our probe and the server's bind: retry.
        for _ in 0..5 {
            let port = free_port()?;
            match spawn(dir.path(), port, &args) {
                Ok(child) => {
                    return Ok(RedisServer {
                        child: Some(child),
                        port,
                        dir,
                        args,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("could not start redis-server")))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The plain-text loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (its log is `redis-<port>.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id of the running server, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Freeze the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) -> io::Result<()> {
        self.signal("STOP")
    }

    /// Resume a paused server (SIGCONT).
    pub fn resume(&self) -> io::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, sig: &str) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other("redis-server is not running"))?;
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill -{sig} {pid} failed")))
        }
    }

    /// Kill the server (SIGKILL); its data is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self.signal_child(&mut child);
        }
    }

    fn signal_child(&self, child: &mut Child) -> io::Result<()> {
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Kill the server and start it again on the same port, with the same arguments: a fresh,
    /// empty one, unless they make it persist (e.g. `--appendonly yes --appendfsync always`,
    /// whose file in [`dir`](Self::dir) it then loads).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.start_again()
    }

    /// Whether the server process runs (it was not [`kill`](Self::kill)ed, or was started
    /// again since).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Start a [`kill`](Self::kill)ed server again on the same port, in the same directory,
    /// with the same arguments (what [`restart`](Self::restart) does after its kill; apart,
    /// for a server kept down a while). Nothing when it runs.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match spawn(self.dir.path(), self.port, &self.args) {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Add `redis-server` arguments for every later start ([`restart`](Self::restart),
    /// [`start_again`](Self::start_again)), e.g. a setting changed with `CONFIG SET` that the
    /// server must keep.
    pub fn add_args(&mut self, args: &[&str]) {
        self.args.extend(args.iter().map(|a| a.to_string()));
    }

    /// Send one command (space-separated words, no quoting) and return the raw RESP reply.
    pub fn command(&self, words: &[&str]) -> io::Result<String> {
        command_at(self.port, words)
    }
}

/// Send one command to `127.0.0.1:<port>` and return the raw RESP reply (one read).
pub(crate) fn command_at(port: u16, words: &[&str]) -> io::Result<String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(&resp_command(words))?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn resp_command(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
        out.extend_from_slice(w.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn spawn(dir: &Path, port: u16, args: &[String]) -> io::Result<Child> {
    let mut child = Command::new(binary())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join(format!("redis-{port}.log")))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(
                    e.kind(),
                    format!(
                        "`{}` not found: install Redis (e.g. `apt-get install redis-server`), \
                         or set LEASEHOLD_REDIS_SERVER to its path",
                        binary()
                    ),
                )
            } else {
                e
            }
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "redis-server exited with {status} (port {port} taken?)"
            )));
        }
        if ping(addr).is_ok() {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(
                "redis-server did not answer PING within 10 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn ping(addr: SocketAddr) -> io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf)?;
    if buf[..n].starts_with(b"+PONG") {
        Ok(())
    } else {
        Err(io::Error::other("not ready"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused server must be resumed before it can die cleanly.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
