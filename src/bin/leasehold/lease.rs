//! `leasehold lease grant|revoke|timetolive|list|keep-alive` (etcdctl lease). Output lines are
//! modelled on etcdctl's, e.g. `lease <id> granted with TTL(10s)`.

use std::time::Duration;

use futures_util::StreamExt;
use leasehold::{Attachment, LeaseId};
use serde_json::json;

use crate::{output, parse_ttl, Cli, Failure, Interrupts, Outcome, EXIT_ERROR};

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// Grant a lease: `lease <id> granted with TTL(<n>s)`.
    Grant {
        /// TTL in seconds (or with a unit: 1500ms, 2m).
        #[arg(value_parser = parse_ttl)]
        ttl: Duration,
        #[command(flatten)]
        durable: crate::Durable,
    },
    /// Revoke a lease and everything attached to it: `lease <id> revoked`.
    Revoke {
        /// The lease id (as `lease grant`, `lease list` or `sessions` print it).
        id: LeaseId,
    },
    /// Remaining time of a lease:
    /// `lease <id> granted with TTL(<n>s), remaining(<m>s)[, attached keys([...])]`.
    Timetolive {
        /// The lease id (as `lease grant`, `lease list` or `sessions` print it).
        id: LeaseId,
        /// Also list what is attached (at most 1000 entries).
        #[arg(long)]
        keys: bool,
    },
    /// List live leases: `found <n> leases` then one id per line.
    List,
    /// Renew a lease every TTL/3 until interrupted (or once):
    /// `lease <id> keepalived with TTL(<n>)`.
    KeepAlive {
        /// The lease id (as `lease grant`, `lease list` or `sessions` print it).
        id: LeaseId,
        /// Renew once and exit instead of every TTL/3.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        durable: crate::Durable,
    },
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s:.3}")
    }
}

fn attachment(a: &Attachment) -> String {
    match a {
        Attachment::Member { key, member, .. } => format!("{key} {member}"),
        other => other.key().to_owned(),
    }
}

pub(crate) async fn run(cli: &Cli, cmd: &Command, signals: &mut Interrupts) -> Outcome {
    let durable = match cmd {
        Command::Grant { durable, .. } | Command::KeepAlive { durable, .. } => durable,
        _ => &crate::Durable::default(),
    };
    let client = crate::connect_durable(cli, durable).await?;
    match cmd {
        Command::Grant { ttl, .. } => {
            let lease = client.grant(*ttl).await?;
            if cli.json {
                output::json(
                    json!({"id": lease.id.to_string(), "ttl_ms": lease.ttl.as_millis() as u64}),
                );
            } else {
                println!("lease {} granted with TTL({}s)", lease.id, secs(lease.ttl));
            }
        }
        Command::Revoke { id } => {
            client.revoke(*id).await?;
            if cli.json {
                output::json(json!({"id": id.to_string(), "revoked": true}));
            } else {
                println!("lease {id} revoked");
            }
        }
        Command::Timetolive { id, keys } => {
            let info = if *keys {
                client.time_to_live_with_keys(*id).await?
            } else {
                client.time_to_live(*id).await?
            };
            match info {
                None if cli.json => output::json(json!({"id": id.to_string(), "ttl_ms": -1})),
                None => println!("lease {id} already expired"),
                Some(info) if cli.json => output::json(json!({
                    "id": id.to_string(),
                    "granted_ttl_ms": info.granted_ttl.as_millis() as u64,
                    "ttl_ms": info.remaining.as_millis() as u64,
                    "attached_count": info.attached_count,
                    "attached": info.attached.iter().map(attachment).collect::<Vec<_>>(),
                })),
                Some(info) => {
                    let mut line = format!(
                        "lease {id} granted with TTL({}s), remaining({}s)",
                        secs(info.granted_ttl),
                        info.remaining.as_secs()
                    );
                    if *keys {
                        let list: Vec<String> = info.attached.iter().map(attachment).collect();
                        line.push_str(&format!(", attached keys([{}])", list.join(" ")));
                    }
                    println!("{}", output::printable(&line));
                }
            }
        }
        Command::List => {
            let leases = client.leases().await?;
            if cli.json {
                for l in &leases {
                    output::json(
                        json!({"id": l.id.to_string(), "ttl_ms": l.remaining.as_millis() as u64}),
                    );
                }
            } else {
                println!("found {} leases", leases.len());
                for l in &leases {
                    println!("{}", l.id);
                }
            }
        }
        Command::KeepAlive { id, once, .. } => {
            let mut renewals = Box::pin(client.keep_alive(*id));
            loop {
                let renewal = tokio::select! {
                    r = renewals.next() => r,
                    _ = signals.recv() => break,
                };
                let ttl = match renewal {
                    Some(Ok(ttl)) => ttl,
                    Some(Err(leasehold::Error::LeaseNotFound { .. })) | None => {
                        return Err(Failure::new(
                            EXIT_ERROR,
                            format!("lease {id} expired or revoked"),
                        ))
                    }
                    Some(Err(e)) => return Err(e.into()),
                };
                if cli.json {
                    output::json(json!({"id": id.to_string(), "ttl_ms": ttl.as_millis() as u64}));
                } else {
                    println!("lease {id} keepalived with TTL({})", secs(ttl));
                }
                if *once {
                    break;
                }
            }
        }
    }
    Ok(0)
}
