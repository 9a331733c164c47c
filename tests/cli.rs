//! The `leasehold` binary against a real redis-server.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_leasehold");

fn leasehold(server: &RedisServer, ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.env("REDIS_URL", server.url())
        .env_remove("LEASEHOLD_NAMESPACE")
        .args(["--namespace", ns])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

struct Running {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

fn spawn(server: &RedisServer, ns: &str, args: &[&str]) -> Running {
    let mut child = leasehold(server, ns, args).spawn().expect("run leasehold");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    Running { child, lines }
}

impl Running {
    async fn line(&mut self, within: Duration) -> String {
        tokio::time::timeout(within, self.lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("not end of output")
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.id().expect("running") as i32;
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    async fn exit(&mut self, within: Duration) -> i32 {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("exits in time")
            .unwrap()
            .code()
            .unwrap_or(-1)
    }
}

async fn output(server: &RedisServer, ns: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        leasehold(server, ns, args).output(),
    )
    .await
    .expect("finishes")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn token(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("fencing_token="))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no token in {line:?}"))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_blocks_sigint_leaves_no_entry_and_the_next_gets_a_greater_token() {
    let server = server();
    let raw = raw(&server).await;
    let mut a = spawn(&server, "c1", &["lock", "x"]);
    let first = a.line(secs(10)).await;
    assert!(first.starts_with("{c1}:mutex:x "), "{first}");
    let t1 = token(&first);

    let mut b = spawn(&server, "c1", &["lock", "x"]);
    assert!(eventually(secs(5), || async { zcard(&raw, "{c1}:mutex:x").await == 2 }).await);
    assert!(b.child.try_wait().unwrap().is_none(), "second lock blocks");
    b.signal(libc::SIGINT);
    assert_eq!(b.exit(secs(5)).await, 130);
    assert_eq!(
        zcard(&raw, "{c1}:mutex:x").await,
        1,
        "no entry left by the interrupted waiter"
    );

    let mut c = spawn(&server, "c1", &["lock", "x"]);
    assert!(eventually(secs(5), || async { zcard(&raw, "{c1}:mutex:x").await == 2 }).await);
    a.signal(libc::SIGINT);
    assert_eq!(a.exit(secs(5)).await, 0);
    let t3 = token(&c.line(secs(5)).await);
    assert!(t3 > t1);
    c.signal(libc::SIGTERM);
    assert_eq!(c.exit(secs(5)).await, 0);
    assert_eq!(zcard(&raw, "{c1}:mutex:x").await, 0);
}

#[tokio::test]
async fn lock_runs_a_command_with_the_env_and_exits_with_its_status() {
    let server = server();
    let (code, out, err) = output(
        &server,
        "c2",
        &[
            "lock",
            "x",
            "--",
            "sh",
            "-c",
            "test \"$LEASEHOLD_LOCK_KEY\" = '{c2}:mutex:x' && test -n \"$LEASEHOLD_FENCING_TOKEN\" && echo ran && exit 3",
        ],
    )
    .await;
    assert_eq!(code, 3, "{out} {err}");
    assert!(out.contains("ran"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_locked_commands_never_overlap() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let critical = format!(
        "if mkdir {d}/inside 2>/dev/null; then sleep 0.05; rmdir {d}/inside; \
         else echo overlap >> {d}/overlaps; exit 1; fi"
    );
    let mut runs = Vec::new();
    for _ in 0..8 {
        let server_url = server.url();
        let critical = critical.clone();
        runs.push(tokio::spawn(async move {
            for _ in 0..3 {
                let status = Command::new(BIN)
                    .env("REDIS_URL", &server_url)
                    .args([
                        "--namespace",
                        "c3",
                        "lock",
                        "x",
                        "--",
                        "sh",
                        "-c",
                        &critical,
                    ])
                    .stdout(Stdio::null())
                    .status()
                    .await
                    .unwrap();
                assert_eq!(status.code(), Some(0));
            }
        }));
    }
    for r in runs {
        tokio::time::timeout(secs(60), r)
            .await
            .expect("all finish")
            .unwrap();
    }
    assert!(
        !dir.path().join("overlaps").exists(),
        "a critical section overlapped"
    );
}

#[tokio::test]
async fn a_command_is_stopped_when_the_lock_is_lost() {
    let server = server();
    let mut l = spawn(&server, "c4", &["lock", "x", "--", "sleep", "30"]);
    let line = l.line(secs(10)).await;
    let lease = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("lease="))
        .unwrap()
        .to_owned();
    let t = Instant::now();
    let (code, out, _) = output(&server, "c4", &["lease", "revoke", &lease]).await;
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("lease {lease} revoked"));
    let exit = l.exit(secs(5)).await;
    assert_ne!(exit, 0);
    println!(
        "lock lost -> command stopped and lock exited ({exit}) after {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_and_listen_show_failover_on_kill_and_on_interrupt() {
    let server = server();
    let mut leader = spawn(&server, "c5", &["elect", "e", "one", "--ttl", "2"]);
    assert_eq!(leader.line(secs(10)).await, "{c5}:election:e");
    assert_eq!(leader.line(secs(5)).await, "one");
    let mut listen = spawn(&server, "c5", &["elect", "--listen", "e"]);
    assert_eq!(listen.line(secs(10)).await, "one");
    let mut second = spawn(&server, "c5", &["elect", "e", "two"]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // SIGKILL: no resign; the lease must expire (TTL 2 s).
    let t = Instant::now();
    leader.signal(libc::SIGKILL);
    assert_eq!(listen.line(secs(5)).await, "two");
    println!(
        "leader killed -> listener saw the new leader after {:?}",
        t.elapsed()
    );
    assert_eq!(second.line(secs(5)).await, "{c5}:election:e");
    assert_eq!(second.line(secs(5)).await, "two");

    // SIGINT: the leader resigns at once.
    let mut third = spawn(&server, "c5", &["elect", "e", "three"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    second.signal(libc::SIGINT);
    assert_eq!(second.exit(secs(5)).await, 0);
    assert_eq!(listen.line(secs(5)).await, "three");
    let took = t.elapsed();
    println!("leader interrupted -> listener saw the new leader after {took:?}");
    assert!(
        took < secs(2),
        "resigned at once, not by lease expiry: {took:?}"
    );
    third.signal(libc::SIGINT);
    assert_eq!(third.exit(secs(5)).await, 0);
    assert_eq!(listen.line(secs(5)).await, "(no leader)");
    listen.signal(libc::SIGINT);
    assert_eq!(listen.exit(secs(5)).await, 0);
}

#[tokio::test]
async fn lease_commands_round_trip() {
    let server = server();
    let (code, out, _) = output(&server, "c6", &["lease", "grant", "30"]).await;
    assert_eq!(code, 0);
    let id = out.split_whitespace().nth(1).unwrap().to_owned();
    assert_eq!(out.trim(), format!("lease {id} granted with TTL(30s)"));
    let (_, out, _) = output(&server, "c6", &["lease", "timetolive", &id, "--keys"]).await;
    assert!(
        out.starts_with(&format!("lease {id} granted with TTL(30s), remaining(")),
        "{out}"
    );
    assert!(out.trim().ends_with("attached keys([])"), "{out}");
    let (code, out, _) = output(&server, "c6", &["lease", "keep-alive", &id, "--once"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, format!("lease {id} keepalived with TTL(30)").as_str())
    );
    let (_, out, _) = output(&server, "c6", &["lease", "list"]).await;
    assert_eq!(out, format!("found 1 leases\n{id}\n"));
    let (_, out, _) = output(&server, "c6", &["--json", "lease", "list"]).await;
    assert!(out.contains(&format!("\"id\":\"{id}\"")), "{out}");
    output(&server, "c6", &["lease", "revoke", &id]).await;
    let (_, out, _) = output(&server, "c6", &["lease", "timetolive", &id]).await;
    assert_eq!(out.trim(), format!("lease {id} already expired"));
    let (code, _, err) = output(&server, "c6", &["lease", "keep-alive", &id, "--once"]).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("Error: "), "{err}");
}

#[tokio::test]
async fn sessions_groups_a_leak_by_process_and_inspect_shows_the_queue() {
    let server = server();
    let client = client(&server, "c7").await;
    let mut leaked = Vec::new();
    for _ in 0..5 {
        leaked.push(
            client
                .session_with(leasehold::SessionOptions::new().label("per-request"))
                .await
                .unwrap(),
        );
    }
    let _g = leaked[0].mutex("q").unwrap().lock().await.unwrap();
    let m = leaked[1].mutex("q").unwrap();
    let _w = spawn_lock(m);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, out, _) = output(&server, "c7", &["sessions", "--label", "per-request"]).await;
    assert_eq!(code, 0);
    let pid = std::process::id();
    assert!(
        out.contains(&format!("pid {pid}: 5 sessions, 2 attached entries")),
        "{out}"
    );
    assert!(out.contains("5 sessions in namespace \"c7\""), "{out}");
    let (_, out, _) = output(&server, "c7", &["sessions", "--older-than", "1h"]).await;
    assert!(out.contains("0 sessions"), "{out}");
    let (code, out, _) = output(&server, "c7", &["inspect", "q"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("mutex \"q\": 1 holding, 1 waiting"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[2].starts_with("holder") && lines[2].contains(&leaked[0].lease().to_string()),
        "{out}"
    );
    assert!(
        lines[3].starts_with("waiting") && lines[3].contains(&leaked[1].lease().to_string()),
        "{out}"
    );
    assert!(
        lines[2].contains("per-request") && lines[2].contains(&pid.to_string()),
        "{out}"
    );
}

#[tokio::test]
async fn bad_arguments_exit_128_and_an_unreachable_redis_exits_2_quickly() {
    let server = server();
    let (code, _, err) = output(&server, "c8", &["lock"]).await;
    assert_eq!(code, 128);
    assert!(err.contains("Usage"), "{err}");
    let (code, _, _) = output(&server, "c8", &["lease", "revoke", "not-a-lease"]).await;
    assert_eq!(code, 128);
    let (code, _, _) = output(&server, "bad ns", &["lease", "list"]).await;
    assert_eq!(code, 128);
    let (code, _, _) = output(&server, "c8", &["lease", "grant", "0"]).await;
    assert_eq!(code, 128);
    let mut dead = support::server();
    let url = dead.url();
    dead.kill();
    let t = Instant::now();
    let out = Command::new(BIN)
        .env("REDIS_URL", &url)
        .args(["lease", "list"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("Error: cannot reach Redis"));
    assert!(t.elapsed() < secs(5), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_refuses_a_lock_no_replica_acknowledged() {
    let server = server();
    // No replica: nothing can be acknowledged, so not even the session is granted.
    let (code, out, err) = output(
        &server,
        "cw",
        &[
            "lock",
            "--wait-replicas",
            "1",
            "--wait-timeout",
            "50ms",
            "x",
            "--",
            "true",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        err.contains("\"cw\"") && err.contains("0 of 1 replicas"),
        "message names the namespace and the shortfall: {err}"
    );
    // With a replica in sync the same command runs.
    let _replica = start_replica(&server);
    let (code, out, err) = output(
        &server,
        "cw",
        &["lock", "x", "--wait-replicas", "1", "--", "echo", "ran"],
    )
    .await;
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("ran"));
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped by someone else).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

async fn eventually_gone(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while !gone(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// `lock x -- sh -c SCRIPT`, once holding; `SCRIPT` prints the pid of a process to watch first.
async fn lock_sh(server: &RedisServer, ns: &str, script: &str) -> (Running, i32) {
    let mut l = spawn(server, ns, &["lock", "x", "--", "sh", "-c", script]);
    let _key = l.line(secs(10)).await;
    let pid: i32 = l.line(secs(5)).await.trim().parse().unwrap();
    (l, pid)
}

/// The command runs in its own process group: SIGTERM to `lock` stops what the command started
/// in the background too, and so does the command's own exit, before the lock is released.
#[tokio::test]
async fn lock_stops_the_commands_whole_process_group() {
    let server = server();
    // SIGTERM to lock while the command waits for its background job.
    let (mut l, background) = lock_sh(&server, "c9", "sleep 30 & echo $!; wait").await;
    assert!(!gone(background), "{background} runs");
    l.signal(libc::SIGTERM);
    l.exit(secs(5)).await;
    assert!(
        eventually_gone(background, secs(2)).await,
        "the command's background job outlived lock"
    );
    // The command exits and leaves a job behind: it is stopped before lock unlocks and exits
    // (maybe already by the time its pid is read).
    let (mut l, background) = lock_sh(&server, "c9", "sleep 30 & echo $!").await;
    assert_eq!(l.exit(secs(5)).await, 0);
    assert!(gone(background), "a job of the command outlived the lock");
}

/// On Linux, a `lock` that is killed outright (SIGKILL, no chance to clean up) takes its command
/// with it (parent-death signal), so the command does not run on without the lock.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_killed_lock_takes_its_command_with_it() {
    let server = server();
    let (mut l, command) = lock_sh(&server, "c10", "echo $$; exec sleep 30").await;
    assert!(!gone(command), "{command} runs");
    l.signal(libc::SIGKILL);
    l.exit(secs(5)).await;
    assert!(
        eventually_gone(command, secs(2)).await,
        "the command outlived a killed lock"
    );
}

/// Text from Redis (a session label with a newline and a terminal escape) is shown escaped:
/// it cannot forge a table row or reach the terminal.
#[tokio::test]
async fn labels_with_control_characters_are_shown_escaped() {
    let server = server();
    let client = client(&server, "c11").await;
    let _session = client
        .session_with(leasehold::SessionOptions::new().label("evil\nforged row\u{1b}[31m"))
        .await
        .unwrap();
    let (code, out, _) = output(&server, "c11", &["sessions"]).await;
    assert_eq!(code, 0);
    assert!(
        !out.contains('\u{1b}'),
        "an escape reached the terminal: {out:?}"
    );
    assert!(!out.lines().any(|l| l.starts_with("forged row")), "{out}");
    assert!(out.contains("evil\\nforged row\\u{1b}[31m"), "{out}");
}

/// A URL's password never reaches a message, and a reader that goes away (`| head -1`) ends
/// the CLI quietly, as it does any Unix tool.
#[tokio::test]
async fn passwords_stay_out_of_messages_and_a_closed_pipe_ends_quietly() {
    let out = Command::new(BIN)
        .env_remove("REDIS_URL")
        .args([
            "--url",
            "redis://someone:s3cret-pw@127.0.0.1:1",
            "lease",
            "list",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot reach Redis"), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");

    let server = server();
    let client = client(&server, "c12").await;
    let _sessions: Vec<_> = futures_util::future::join_all((0..50).map(|_| client.session()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut child = leasehold(&server, "c12", &["sessions"]).spawn().unwrap();
    drop(child.stdout.take());
    let status = tokio::time::timeout(secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        status.success() || std::os::unix::process::ExitStatusExt::signal(&status) == Some(13),
        "{status:?} {stderr}"
    );
}

/// Each way of not getting through has its own message and exit code, and no message carries
/// the password or repeats itself.
#[tokio::test]
async fn refusals_have_their_own_exit_codes_and_never_show_the_password() {
    let run = |url: String, args: &'static [&'static str]| async move {
        let out = Command::new(BIN)
            .env("REDIS_URL", url)
            .args(args)
            .output()
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Unreachable: 2, as a sentence.
    let mut dead = support::server();
    let port = dead.url().rsplit(':').next().unwrap().to_owned();
    dead.kill();
    let (code, err) = run(format!("redis://u:s3cret@127.0.0.1:{port}"), &["sessions"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("connection refused"), "{err}");
    assert_eq!(err.matches("cannot reach Redis").count(), 1, "{err}");
    assert!(!err.contains("Os {") && !err.contains("s3cret"), "{err}");
    // Credentials refused: 4.
    let server = server();
    let reply = server
        .command(&["CONFIG", "SET", "requirepass", "right"])
        .unwrap();
    assert_eq!(reply, "+OK\r\n");
    let port = server.url().rsplit(':').next().unwrap().to_owned();
    let (code, err) = run(format!("redis://:wr0ng@127.0.0.1:{port}"), &["sessions"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains("wr0ng"), "{err}");
    // Not a Redis URL: refused before any connection, as bad arguments.
    let (code, err) = run(format!("http://u:s3cret@127.0.0.1:{port}"), &["sessions"]).await;
    assert_eq!(code, 128, "{err}");
    assert!(
        err.contains("not a Redis URL") && !err.contains("s3cret"),
        "{err}"
    );
}

/// `lock --try` and `lock --timeout` give up with exit 6 and leave nothing queued.
#[tokio::test]
async fn lock_try_and_timeout_give_up_with_exit_6_and_leave_nothing_queued() {
    let server = server();
    let raw = raw(&server).await;
    let mut holder = spawn(&server, "c12", &["lock", "x"]);
    let _held = holder.line(secs(10)).await;
    let (code, _, err) = output(&server, "c12", &["lock", "x", "--try"]).await;
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("held by another contender"), "{err}");
    let t = Instant::now();
    let (code, _, err) = output(&server, "c12", &["lock", "x", "--timeout", "300ms"]).await;
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("not acquired within 300ms"), "{err}");
    assert!(t.elapsed() < secs(5));
    assert_eq!(
        zcard(&raw, "{c12}:mutex:x").await,
        1,
        "only the holder is queued"
    );
    // Free: --try and --timeout take it at once.
    holder.signal(libc::SIGTERM);
    assert_eq!(holder.exit(secs(5)).await, 0);
    let (code, out, err) = output(&server, "c12", &["lock", "x", "--try", "--", "true"]).await;
    assert_eq!(code, 0, "{out} {err}");
    let (code, _, err) = output(&server, "c12", &["lock", "x", "--try", "--timeout", "1s"]).await;
    assert_eq!(code, 128, "--try and --timeout exclude each other: {err}");
}

/// `inspect` shows what each kind needs: a rwlock's modes, a semaphore's permits, an election's
/// values and leader, and how long ago each entry queued.
#[tokio::test]
async fn inspect_shows_modes_permits_values_and_queue_age() {
    let server = server();
    let client = client(&server, "c13").await;
    let session = client.session().await.unwrap();
    let rw = session.rwlock("r").unwrap();
    let _r1 = rw.read().await.unwrap();
    let _r2 = rw.read().await.unwrap();
    let sem = session.semaphore("s", 5).unwrap();
    let _p = sem.acquire_many(3).await.unwrap();
    let election = session.election("e").unwrap();
    election.campaign("10.0.0.7:8080").await.unwrap();

    let (code, out, err) = output(&server, "c13", &["inspect", "r", "--kind", "rwlock"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rwlock \"r\": 2 readers holding, 0 waiting"),
        "{out}"
    );
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|h| h.contains("MODE") && h.contains("QUEUED")),
        "{out}"
    );
    assert!(
        out.lines()
            .nth(2)
            .is_some_and(|l| l.starts_with("holder") && l.contains("read") && l.contains(" ago")),
        "{out}"
    );

    let (_, out, _) = output(&server, "c13", &["inspect", "s"]).await;
    assert!(
        out.contains("semaphore \"s\": 1 holding 3 permits, 0 waiting"),
        "{out}"
    );
    assert!(
        out.lines().nth(2).is_some_and(|l| l.contains("holder  3 ")),
        "{out}"
    );

    let (_, out, _) = output(&server, "c13", &["inspect", "e"]).await;
    assert!(
        out.contains("election \"e\": leader \"10.0.0.7:8080\", 0 waiting"),
        "{out}"
    );

    let (_, out, _) = output(&server, "c13", &["--json", "inspect", "r"]).await;
    let row: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(row["mode"], "read");
    let queued = row["queued_at_ms"].as_u64().expect("a queue time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now.abs_diff(queued) < 60_000, "{queued} vs {now}");
}

/// `locks` lists every lock and election with its holder; empty queues are not listed.
#[tokio::test]
async fn locks_lists_every_lock_with_its_holder() {
    let server = server();
    let client = client(&server, "c14").await;
    let session = client
        .session_with(leasehold::SessionOptions::new().label("batch job"))
        .await
        .unwrap();
    let _m = session
        .mutex("reports/nightly")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let _w = session.rwlock("cfg").unwrap().write().await.unwrap();
    session
        .election("leader")
        .unwrap()
        .campaign("me")
        .await
        .unwrap();
    let done = session.mutex("released").unwrap().lock().await.unwrap();
    done.unlock().await.unwrap();
    // Another namespace's lock is not listed.
    let other = client_at(&server.url(), "c14x").await;
    let os = other.session().await.unwrap();
    let _o = os.mutex("elsewhere").unwrap().lock().await.unwrap();

    let (code, out, err) = output(&server, "c14", &["locks"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("3 locks and elections in namespace \"c14\""),
        "{out}"
    );
    let line = |name: &str| out.lines().find(|l| l.contains(name)).map(str::to_owned);
    let nightly = line("reports/nightly").expect("the mutex");
    assert!(
        nightly.starts_with("mutex") && nightly.contains("batch job"),
        "{nightly}"
    );
    assert!(
        line("cfg").is_some_and(|l| l.starts_with("rwlock")),
        "{out}"
    );
    assert!(
        line("leader").is_some_and(|l| l.starts_with("election")),
        "{out}"
    );
    assert!(
        line("released").is_none() && line("elsewhere").is_none(),
        "{out}"
    );
    let (_, out, _) = output(&server, "c14", &["--json", "locks", "--kind", "mutex"]).await;
    let row: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(row["name"], "reports/nightly");
    assert_eq!(row["holders"], 1);
    assert_eq!(row["holder_label"], "batch job");
}

/// `functions load` loads the library as the --url user; `functions status` says whether this
/// version's clients call it; a user refused FUNCTION LOAD gets the denial's exit code.
#[tokio::test]
async fn functions_load_and_status() {
    let server = server();
    let raw = support::raw(&server).await;
    let library = leasehold::function_library_name();
    if !support::has_functions(&raw).await {
        let (code, out, err) = output(&server, "c15", &["functions", "status"]).await;
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("not in use, scripts run with EVALSHA"),
            "{out}"
        );
        return;
    }
    let (code, out, err) = output(&server, "c15", &["functions", "load"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("function library {library} loaded"));
    let (code, out, err) = output(&server, "c15", &["--json", "functions", "status"]).await;
    assert_eq!(code, 0, "{err}");
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["library"], library);
    assert_eq!(row["in_use"], true);

    // A user who may call but not load.
    let _: String = support::cmd(
        &raw,
        "ACL",
        &[
            "SETUSER",
            "caller",
            "on",
            ">pw",
            "~*",
            "&*",
            "+@all",
            "-function|load",
        ],
    )
    .await
    .unwrap();
    let _: String = support::cmd(&raw, "FUNCTION", &["FLUSH"]).await.unwrap();
    let url = format!("redis://caller:pw@127.0.0.1:{}", server.port());
    let run = leasehold(&server, "c15", &["--url", &url, "functions", "load"]).output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("finishes")
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOPERM") && err.contains(library), "{err}");
}

/// `put`, `get`, `del` as etcdctl's, with a lease and with `--prefix`; text from Redis is
/// escaped.
#[tokio::test]
async fn put_get_del_as_etcdctl() {
    let server = server();
    let (code, out, err) = output(&server, "c16", &["put", "svc/a", "10.0.0.1"]).await;
    assert_eq!((code, out.trim()), (0, "OK"), "{err}");
    let (_, out, _) = output(&server, "c16", &["--json", "put", "svc/b", "line\nbreak"]).await;
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(row["revision"].as_u64().unwrap() > 0);
    let (code, out, _) = output(&server, "c16", &["get", "svc/", "--prefix"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "svc/a\n10.0.0.1\nsvc/b\nline\\nbreak\n");
    let (_, out, _) = output(&server, "c16", &["--json", "get", "svc/a"]).await;
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (row["value"].as_str(), row["version"].as_u64()),
        (Some("10.0.0.1"), Some(1))
    );

    // With a lease: gone with it.
    let (_, out, _) = output(&server, "c16", &["--json", "lease", "grant", "60"]).await;
    let lease: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let id = lease["id"].as_str().unwrap().to_owned();
    let (code, _, err) = output(&server, "c16", &["put", "svc/c", "x", "--lease", &id]).await;
    assert_eq!(code, 0, "{err}");
    output(&server, "c16", &["lease", "revoke", &id]).await;
    let (_, out, _) = output(&server, "c16", &["get", "svc/c"]).await;
    assert_eq!(out, "", "deleted with its lease");

    let (code, out, _) = output(&server, "c16", &["del", "svc/", "--prefix"]).await;
    assert_eq!((code, out.trim()), (0, "2"));
    let (_, out, _) = output(&server, "c16", &["--json", "del", "svc/a"]).await;
    assert_eq!(out.trim(), r#"{"deleted":0}"#);
}

/// `watch` prints every put and delete as etcdctl does, and stops on SIGINT with exit 0.
#[tokio::test]
async fn watch_prints_events_until_interrupted() {
    let server = server();
    let mut watch = spawn(&server, "c17", &["--json", "watch", "cfg/", "--prefix"]);
    let client = support::client(&server, "c17").await;
    // Printed once the watch is established: put until it is seen.
    let mut first = None;
    for _ in 0..50 {
        client.put("cfg/a", "1", None).await.unwrap();
        let next = tokio::time::timeout(Duration::from_millis(200), watch.lines.next_line());
        if let Ok(Ok(Some(line))) = next.await {
            first = Some(line);
            break;
        }
    }
    let row: serde_json::Value = serde_json::from_str(&first.expect("a put printed")).unwrap();
    assert_eq!(
        (row["type"].as_str(), row["key"].as_str()),
        (Some("put"), Some("cfg/a"))
    );
    client.delete("cfg/a").await.unwrap();
    loop {
        let row: serde_json::Value =
            serde_json::from_str(&watch.line(Duration::from_secs(5)).await).unwrap();
        if row["type"] == "delete" {
            assert_eq!(row["key"], "cfg/a");
            break;
        }
    }
    watch.signal(libc::SIGINT);
    assert_eq!(watch.exit(Duration::from_secs(5)).await, 0);
}

#[tokio::test]
async fn a_namespace_is_spread_from_the_cli_and_inspect_shows_the_sub_namespace() {
    let server = server();
    let (code, out, _) = output(&server, "c9", &["namespace"]).await;
    assert_eq!((code, out.trim()), (0, "namespace \"c9\": not spread"));
    let (code, out, _) = output(
        &server,
        "c9",
        &["--spread", "48", "namespace", "--name", "{u}:a"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("namespace \"c9\": spread over 48 sub-namespaces\n"),
        "{out}"
    );
    // As recorded, by default; another count is refused as a usage error.
    let (_, out, _) = output(&server, "c9", &["--json", "namespace", "--name", "{u}:b"]).await;
    assert!(out.contains("\"spread\":48"), "{out}");
    let (code, _, err) = output(&server, "c9", &["--spread", "16", "namespace"]).await;
    assert_eq!(code, 128);
    assert!(err.contains("layout mismatch"), "{err}");

    // A holder through the library (spread as recorded), seen by the CLI with its session's
    // own lease and where the name lives.
    let client = leasehold::Client::builder()
        .url(server.url())
        .namespace("c9")
        .spread(48)
        .build()
        .await
        .unwrap();
    let session = client.session().await.unwrap();
    let _g = session.mutex("job").unwrap().lock().await.unwrap();
    let (code, out, _) = output(&server, "c9", &["inspect", "job"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&session.lease().to_string()), "{out}");
    assert!(
        out.contains(&format!(
            "in sub-namespace {}",
            client.sub_namespace_of("job")
        )),
        "{out}"
    );
    let (_, out, _) = output(&server, "c9", &["locks"]).await;
    assert!(out.contains("mutex  job"), "{out}");
}
