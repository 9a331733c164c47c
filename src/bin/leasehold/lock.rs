//! `leasehold lock NAME [--ttl 10] [-- CMD ARGS…]` (etcdctl lock).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use leasehold::SessionOptions;
use serde_json::json;

use crate::{connect, output, parse_ttl, Cli, Failure, Interrupts, Outcome, EXIT_ERROR};

/// How long a command gets between SIGTERM and SIGKILL once the lock is lost.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Without a command: prints the lock key and fencing token, holds the lock \
    until SIGINT/SIGTERM, then unlocks (exit 0). If the session is lost while holding: \
    `Error: session lost: …`, exit 1.\n\nWith a command: runs it while holding the lock, with \
    LEASEHOLD_LOCK_KEY, LEASEHOLD_FENCING_TOKEN and LEASEHOLD_LEASE in its environment, and \
    exits with its status. If the lock is lost while it runs, the command gets SIGTERM, then \
    SIGKILL 10 s later, and lock exits 1. SIGINT or SIGTERM to lock stops the command with SIGTERM (SIGKILL 10 s later) and unlocks.\n\n\
    Interrupting a lock that is still waiting leaves no queue entry behind (exit 130)."
)]
pub struct Args {
    /// Lock name.
    pub name: String,
    /// Session TTL in seconds (or with a unit: 1500ms, 2m).
    #[arg(long, default_value = "10", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// Command to run while holding the lock (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub async fn run(cli: &Cli, args: &Args, signals: &mut Interrupts) -> Outcome {
    let client = connect(cli).await?;
    let session = client
        .session_with(SessionOptions::new().ttl(args.ttl).label("leasehold lock"))
        .await?;
    let mutex = session.mutex(&args.name)?;
    let guard = tokio::select! {
        g = mutex.lock() => g?,
        _ = signals.recv() => {
            // Revoking the lease removes the queue entry before we exit.
            let _ = session.close().await;
            return Ok(130);
        }
    };
    let (key, token) = (guard.key().to_owned(), guard.fencing_token());
    if cli.json {
        output::json(json!({
            "key": key, "fencing_token": token, "lease": session.lease().to_string(),
        }));
    } else {
        println!("{key} fencing_token={token} lease={}", session.lease());
    }

    if args.command.is_empty() {
        tokio::select! {
            _ = signals.recv() => {
                guard.unlock().await?;
                session.close().await?;
                return Ok(0);
            }
            end = session.done() => {
                return Err(Failure::new(EXIT_ERROR, format!("session lost: {end}")));
            }
        }
    }

    let mut child = tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("LEASEHOLD_LOCK_KEY", &key)
        .env("LEASEHOLD_FENCING_TOKEN", token.to_string())
        .env("LEASEHOLD_LEASE", session.lease().to_string())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::new(EXIT_ERROR, format!("cannot run {:?}: {e}", args.command[0])))?;
    let status = tokio::select! {
        status = child.wait() => status,
        _ = signals.recv() => {
            signal(&child, libc::SIGTERM);
            stop(&mut child).await
        }
        end = session.done() => {
            eprintln!("Error: lock {key} lost ({end}); stopping the command");
            signal(&child, libc::SIGTERM);
            let _ = stop(&mut child).await;
            return Err(Failure::new(EXIT_ERROR, format!("session lost: {end}")));
        }
    };
    let status =
        status.map_err(|e| Failure::new(EXIT_ERROR, format!("waiting for the command: {e}")))?;
    // The lock may have been lost just as the command finished: report it, keep its status.
    if let Err(e) = guard.unlock().await {
        eprintln!("Error: {e}");
    }
    let _ = session.close().await;
    Ok(exit_code(status))
}

fn signal(child: &tokio::process::Child, sig: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }
}

/// Wait for a child that was sent SIGTERM; SIGKILL it after the grace period.
async fn stop(child: &mut tokio::process::Child) -> std::io::Result<ExitStatus> {
    match tokio::time::timeout(KILL_GRACE, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            child.kill().await?;
            child.wait().await
        }
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
