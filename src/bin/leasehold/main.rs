//! `leasehold`: etcdctl's `lock`, `elect` and `lease` for leasehold, plus inspection.
//! Build with `cargo install leasehold --features cli` (or `cargo run --features cli -- …`).
//!
//! Exit codes (`exit.rs`), after etcdctl's: 0 ok, 1 error, 2 cannot reach Redis, 3 permission
//! denied, 4 credentials refused, 5 TLS failed, 6 lock not acquired (`--try`, `--timeout`),
//! 128 bad arguments, 130 interrupted; `lock -- <cmd>` exits with the command's status.
//! Errors print `Error: …` on stderr.

mod elect;
mod exit;
mod functions;
mod inspect;
mod keys;
mod lease;
mod lock;
mod locks;
mod namespace;
mod output;
mod sessions;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use leasehold::{Client, Durability, Error};

pub(crate) use exit::{ERROR as EXIT_ERROR, USAGE as EXIT_USAGE};

#[derive(Parser, Debug)]
#[command(
    name = "leasehold",
    version,
    about = "Sessions, locks, elections and leases on Redis (etcdctl's lock / elect / lease)",
    after_help = "Exit codes: 0 ok, 1 error, 2 cannot reach Redis, 3 permission denied by the \
                  Redis ACL, 4 credentials refused, 5 TLS failed, 6 lock not acquired (--try, \
                  --timeout), 128 bad arguments, 130 interrupted; \
                  `lock NAME -- CMD` exits with CMD's status."
)]
pub(crate) struct Cli {
    /// Redis URL.
    #[arg(
        long,
        global = true,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub(crate) url: String,
    /// Namespace (all keys live under the hash tag {NAMESPACE}).
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "LEASEHOLD_NAMESPACE",
        default_value = "default"
    )]
    pub(crate) namespace: String,
    /// Sub-namespaces the namespace is spread over (a Redis Cluster's shards share its
    /// locks; see the README's "Scaling out"). The first client to spread a namespace records
    /// N (`leasehold --spread 48 namespace`); a different N is refused. Default: as recorded.
    #[arg(long, global = true, env = "LEASEHOLD_SPREAD", value_name = "N")]
    pub(crate) spread: Option<u16>,
    /// CA certificate (PEM file) to trust for a rediss:// URL instead of the system's roots.
    #[cfg(feature = "tls")]
    #[arg(long, global = true, env = "LEASEHOLD_CACERT", value_name = "FILE")]
    pub(crate) cacert: Option<std::path::PathBuf>,
    /// Work with a Redis whose maxmemory-policy can evict lock keys (refused otherwise: an
    /// evicted lock can have two holders).
    #[arg(long, global = true, env = "LEASEHOLD_ALLOW_EVICTION")]
    pub(crate) allow_eviction: bool,
    /// Machine-readable output: one JSON object per line (see the README for the fields).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Acquire a lock; hold it until interrupted, or run a command while holding it.
    Lock(lock::Args),
    /// Campaign in an election and hold leadership until interrupted, or --listen to it.
    Elect(elect::Args),
    /// Lease commands: grant, revoke, timetolive, list, keep-alive.
    #[command(subcommand)]
    Lease(lease::Command),
    /// Who holds and who waits for a mutex, rwlock, semaphore or election.
    Inspect(inspect::Args),
    /// Every lock and election of the namespace, with its holder and how long it has held.
    Locks(locks::Args),
    /// Every live session (lease) in the namespace, oldest first, with a summary per process.
    Sessions(sessions::Args),
    /// Put a key (etcdctl put): `OK`.
    Put(keys::PutArgs),
    /// Read a key, or every key with a prefix (etcdctl get): the key and the value on one line
    /// each.
    Get(keys::GetArgs),
    /// Delete a key, or every key with a prefix (etcdctl del): how many it deleted.
    Del(keys::DelArgs),
    /// Print every put and delete of a key or prefix until interrupted (etcdctl watch).
    Watch(keys::WatchArgs),
    /// leasehold's Redis function library: load it (as an operator), or see whether it is used.
    #[command(subcommand)]
    Functions(functions::Command),
    /// The namespace's layout: how many sub-namespaces it is spread over, and where a name
    /// lives. With --spread N, spreads a namespace that is not yet (records N).
    Namespace(namespace::Args),
}

/// The options of the commands that grant something (lock, elect, lease grant and
/// keep-alive): read-only commands do not take them.
#[derive(clap::Args, Debug, Default)]
pub struct Durable {
    /// Count a grant only once N replicas acknowledged it (WAIT after each lock, lease grant and
    /// renewal); fewer acknowledgements fail the acquire. See the README's "Deploying".
    #[arg(long, env = "LEASEHOLD_WAIT_REPLICAS", value_name = "N")]
    pub wait_replicas: Option<u32>,
    /// How long to wait for the replicas of --wait-replicas.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,
}

/// An error with its exit code.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::from(&e)
    }
}

impl From<&Error> for Failure {
    fn from(e: &Error) -> Failure {
        let code = match e {
            Error::Unreachable(_) | Error::Timeout(_) => exit::UNREACHABLE,
            Error::Tls(_) => exit::TLS,
            Error::AuthFailed(_) => exit::AUTH,
            Error::PermissionDenied(_) => exit::DENIED,
            Error::Locked { .. } => exit::NOT_ACQUIRED,
            Error::InvalidName { .. }
            | Error::InvalidNamespace { .. }
            | Error::InvalidTtl { .. }
            | Error::InvalidArgument(_)
            | Error::LayoutMismatch(_)
            | Error::ValueTooLarge { .. } => EXIT_USAGE,
            _ => EXIT_ERROR,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

pub(crate) type Outcome = Result<u8, Failure>;

/// Connect for a read-only command.
pub(crate) async fn connect(cli: &Cli) -> Result<Client, Failure> {
    connect_durable(cli, &Durable::default()).await
}

/// Connect for a command that grants, with its durability options.
pub(crate) async fn connect_durable(cli: &Cli, durable: &Durable) -> Result<Client, Failure> {
    let mut builder = Client::builder()
        .url(&cli.url)
        .namespace(&cli.namespace)
        .connect_timeout(Duration::from_secs(3))
        .command_timeout(Duration::from_secs(5))
        .allow_eviction(cli.allow_eviction);
    builder = match cli.spread {
        Some(n) => builder.spread(n),
        None => builder.spread_as_recorded(),
    };
    if let Some(n) = durable.wait_replicas {
        builder = builder.durability(Durability::replicas(n).timeout(durable.wait_timeout));
    }
    #[cfg(feature = "tls")]
    if let Some(path) = &cli.cacert {
        let pem = std::fs::read(path).map_err(|e| {
            Failure::new(
                EXIT_USAGE,
                format!("cannot read --cacert {}: {e}", path.display()),
            )
        })?;
        builder = builder.tls_root_ca_pem(pem);
    }
    let at = output::without_password(&cli.url);
    let client = builder.build().await.map_err(|e| {
        let code = Failure::from(&e).code;
        let message = match &e {
            Error::Unreachable(cause) => format!("cannot reach Redis at {at}: {cause}"),
            Error::Timeout(t) => format!("Redis at {at} did not answer within {t:?}"),
            Error::Tls(cause) => format!("TLS with Redis at {at} failed: {cause}"),
            Error::AuthFailed(cause) => format!("Redis at {at} refused the credentials: {cause}"),
            // Reached, but refused: say what was refused.
            e => e.to_string(),
        };
        Failure::new(code, message)
    })?;
    // Accepted with --allow-eviction: every command still says so (on stderr, so that
    // --json output stays parseable).
    if let Some(policy) = client.maxmemory_policy().filter(|p| p != "noeviction") {
        eprintln!(
            "warning: Redis maxmemory-policy is {}: it can evict lock keys, so a lock may have \
             more than one holder (accepted by --allow-eviction)",
            output::printable(&policy)
        );
    }
    Ok(client)
}

/// SIGINT and SIGTERM, listened for from the start of the program: a signal that arrives
/// while nobody is waiting for it is kept until someone is (a listener created per wait would
/// miss signals that arrive between two waits).
pub(crate) struct Interrupts {
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Interrupts {
    pub(crate) fn listen() -> Interrupts {
        use tokio::signal::unix::{signal, SignalKind};
        let streams = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => Some((int, term)),
            _ => None,
        };
        Interrupts { streams }
    }

    /// Resolves on the next SIGINT or SIGTERM (or one that came since the last call).
    pub(crate) async fn recv(&mut self) {
        match &mut self.streams {
            Some((int, term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// Parse a TTL in seconds (`10`) or with a unit (`1500ms`, `2m`).
pub(crate) fn parse_ttl(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration: {e}"))
}

fn main() -> ExitCode {
    // Like every Unix tool, end quietly when the reader of our output goes away
    // (`leasehold inspect x | head -1`) instead of failing on the write.
    // SAFETY: called before any thread starts; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => EXIT_USAGE,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(async {
        let mut signals = Interrupts::listen();
        match &cli.command {
            Command::Lock(args) => lock::run(&cli, args, &mut signals).await,
            Command::Elect(args) => elect::run(&cli, args, &mut signals).await,
            Command::Lease(cmd) => lease::run(&cli, cmd, &mut signals).await,
            Command::Inspect(args) => inspect::run(&cli, args).await,
            Command::Locks(args) => locks::run(&cli, args).await,
            Command::Sessions(args) => sessions::run(&cli, args).await,
            Command::Functions(cmd) => functions::run(&cli, cmd).await,
            Command::Namespace(args) => namespace::run(&cli, args).await,
            Command::Put(args) => keys::put(&cli, args).await,
            Command::Get(args) => keys::get(&cli, args).await,
            Command::Del(args) => keys::del(&cli, args).await,
            Command::Watch(args) => keys::watch(&cli, args, &mut signals).await,
        }
    });
    // Background work (a release, a revoke) finishes before the runtime goes.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("Error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `(command path, command)` for every command and subcommand.
    fn every_command() -> Vec<(String, clap::Command)> {
        fn walk(path: String, c: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
            out.push((path.clone(), c.clone()));
            for sub in c.get_subcommands() {
                walk(format!("{path} {}", sub.get_name()), sub, out);
            }
        }
        let mut out = Vec::new();
        walk("leasehold".into(), &Cli::command(), &mut out);
        out
    }

    #[test]
    fn every_argument_has_help_text() {
        for (path, c) in every_command() {
            for arg in c.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some() || arg.get_long_help().is_some(),
                    "`{path}`: argument {id} has no help text"
                );
            }
        }
    }

    #[test]
    fn only_commands_that_grant_take_the_durability_options() {
        let grants = [
            "leasehold lock",
            "leasehold elect",
            "leasehold lease grant",
            "leasehold lease keep-alive",
            "leasehold put",
        ];
        for (path, c) in every_command() {
            if c.has_subcommands() {
                continue;
            }
            let takes = c
                .get_arguments()
                .any(|a| a.get_id().as_str() == "wait_replicas");
            assert_eq!(takes, grants.contains(&path.as_str()), "{path}");
        }
    }
}
