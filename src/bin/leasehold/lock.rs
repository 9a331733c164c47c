//! `leasehold lock NAME [--ttl 10] [-- CMD ARGS…]` (etcdctl lock).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use leasehold::SessionOptions;
use serde_json::json;

use crate::{
    connect_durable, exit, output, parse_ttl, Cli, Durable, Failure, Interrupts, Outcome,
    EXIT_ERROR,
};

/// How long a command gets between SIGTERM and SIGKILL once the lock is lost.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Without a command: prints the lock key and fencing token, holds the lock \
    until SIGINT/SIGTERM, then unlocks (exit 0). If the session is lost while holding: \
    `Error: session lost: …`, exit 1.\n\nWith a command: runs it while holding the lock, with \
    LEASEHOLD_LOCK_KEY, LEASEHOLD_FENCING_TOKEN and LEASEHOLD_LEASE in its environment, and \
    exits with its status. The command runs in a process group of its own, and every signal \
    goes to the whole group, so what it starts in the background stops with it: if the lock \
    is lost while it runs, the group gets SIGTERM, then SIGKILL 10 s later, and lock exits 1. \
    SIGINT or SIGTERM to lock stops the group the same way, then unlocks. When the command \
    exits, whatever it left running in its group is stopped the same way before the lock is \
    released. On Linux, if lock itself is killed (SIGKILL), the command gets SIGKILL too; \
    processes it started in the background survive that case, and its lease then frees the \
    lock after the TTL.\n\n\
    Interrupting a lock that is still waiting leaves no queue entry behind (exit 130); so \
    does giving up with --try (held by someone else) or --timeout (not acquired in time), \
    both exit 6."
)]
pub(crate) struct Args {
    /// Lock name.
    pub(crate) name: String,
    /// Session TTL in seconds (or with a unit: 1500ms, 2m).
    #[arg(long, default_value = "10", value_parser = parse_ttl)]
    pub(crate) ttl: Duration,
    /// Do not wait: if someone else holds the lock, exit 6 at once.
    #[arg(long = "try", conflicts_with = "timeout")]
    pub(crate) try_lock: bool,
    /// Wait at most this long (e.g. 500ms, 30s, 2m); then exit 6, leaving nothing queued.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Option<Duration>,
    #[command(flatten)]
    pub(crate) durable: Durable,
    /// Command to run while holding the lock (after `--`).
    #[arg(last = true)]
    pub(crate) command: Vec<String>,
}

pub(crate) async fn run(cli: &Cli, args: &Args, signals: &mut Interrupts) -> Outcome {
    let client = connect_durable(cli, &args.durable).await?;
    let session = client
        .session_with(SessionOptions::new().ttl(args.ttl).label("leasehold lock"))
        .await?;
    let mutex = session.mutex(&args.name)?;
    let acquire = async {
        if args.try_lock {
            return mutex.try_lock().await.map(Some);
        }
        match args.timeout {
            // Cancel safe: a wait given up leaves no entry behind.
            Some(t) => Ok(tokio::time::timeout(t, mutex.lock())
                .await
                .ok()
                .transpose()?),
            None => mutex.lock().await.map(Some),
        }
    };
    let acquired = tokio::select! {
        g = acquire => g,
        _ = signals.recv() => {
            // Revoking the lease removes the queue entry before we exit.
            let _ = session.close().await;
            return Ok(exit::INTERRUPTED);
        }
    };
    let guard = match acquired {
        Ok(Some(guard)) => guard,
        Ok(None) => {
            let _ = session.close().await;
            let waited = humantime::format_duration(args.timeout.unwrap_or_default());
            return Err(Failure::new(
                exit::NOT_ACQUIRED,
                format!("lock {:?} not acquired within {waited}", args.name),
            ));
        }
        Err(e) => {
            let _ = session.close().await;
            return Err(e.into());
        }
    };
    let (key, token) = (guard.key().to_owned(), guard.fencing_token());
    if cli.json {
        output::json(json!({
            "key": key, "fencing_token": token, "lease": session.lease().to_string(),
        }));
    } else {
        let shown = output::printable(&key);
        println!("{shown} fencing_token={token} lease={}", session.lease());
    }

    if args.command.is_empty() {
        tokio::select! {
            _ = signals.recv() => {
                guard.unlock().await?;
                session.close().await?;
                return Ok(exit::OK);
            }
            end = session.done() => {
                return Err(Failure::new(EXIT_ERROR, format!("session lost: {end}")));
            }
        }
    }

    let mut command = tokio::process::Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .env("LEASEHOLD_LOCK_KEY", &key)
        .env("LEASEHOLD_FENCING_TOKEN", token.to_string())
        .env("LEASEHOLD_LEASE", session.lease().to_string())
        .kill_on_drop(true)
        // Its own group, so that a signal reaches whatever it starts, too.
        .process_group(0);
    die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .map_err(|e| Failure::new(EXIT_ERROR, format!("cannot run {:?}: {e}", args.command[0])))?;
    // The group's id is the command's pid (known until it is reaped, below).
    let group = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| Failure::new(EXIT_ERROR, "the command has no pid".to_owned()))?;
    let status = tokio::select! {
        status = child.wait() => status,
        _ = signals.recv() => {
            signal_group(group, libc::SIGTERM);
            stop(&mut child, group).await
        }
        end = session.done() => {
            eprintln!("Error: lock {key} lost ({end}); stopping the command");
            signal_group(group, libc::SIGTERM);
            let _ = stop(&mut child, group).await;
            return Err(Failure::new(EXIT_ERROR, format!("session lost: {end}")));
        }
    };
    // What the command left running in its group must not outlive the lock.
    stop_rest_of_group(group).await;
    let status =
        status.map_err(|e| Failure::new(EXIT_ERROR, format!("waiting for the command: {e}")))?;
    // The lock may have been lost just as the command finished: report it, keep its status.
    if let Err(e) = guard.unlock().await {
        eprintln!("Error: {e}");
    }
    let _ = session.close().await;
    Ok(exit_code(status))
}

/// On Linux, the command gets SIGKILL when `lock` dies, so it cannot go on without the lock.
fn die_with_parent(command: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpid(2) here, and prctl(2), getppid(2) and raise(3) in the child between
        // fork and exec, are async-signal-safe and touch no memory of the parent.
        let parent = unsafe { libc::getpid() };
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // lock died before prctl took effect: nobody would send the signal.
                if libc::getppid() != parent {
                    libc::raise(libc::SIGKILL);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Send `sig` to every process of the command's group. False when the group is empty.
fn signal_group(group: i32, sig: i32) -> bool {
    // SAFETY: kill(2) on the process group our child leads (its pid is the group id).
    unsafe { libc::kill(-group, sig) == 0 }
}

/// Wait for a command whose group was sent SIGTERM; SIGKILL the group after the grace period.
async fn stop(child: &mut tokio::process::Child, group: i32) -> std::io::Result<ExitStatus> {
    match tokio::time::timeout(KILL_GRACE, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            signal_group(group, libc::SIGKILL);
            child.wait().await
        }
    }
}

/// Stop what is left in the command's group once the command itself has exited: SIGTERM, then
/// SIGKILL after the grace period.
async fn stop_rest_of_group(group: i32) {
    // Signal 0 checks whether any process of the group is left.
    if !signal_group(group, 0) {
        return;
    }
    signal_group(group, libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + KILL_GRACE;
    while signal_group(group, 0) {
        if tokio::time::Instant::now() >= deadline {
            signal_group(group, libc::SIGKILL);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The shell's convention: the exit code, or 128 + the signal that ended it.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.saturating_add(sig as u8),
        _ => EXIT_ERROR,
    }
}
