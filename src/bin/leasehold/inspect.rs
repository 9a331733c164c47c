//! `leasehold inspect NAME [--kind K]`: holders and waiters, in order.

use std::time::{SystemTime, UNIX_EPOCH};

use leasehold::{QueueEntry, QueueKind, RwMode};
use serde_json::json;

use crate::{connect, exit, output, Cli, Outcome};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Name of the mutex, rwlock, semaphore or election.
    pub(crate) name: String,
    /// Only this kind (default: every kind that has an entry under this name).
    #[arg(long, value_parser = ["mutex", "rwlock", "semaphore", "election"])]
    pub(crate) kind: Option<String>,
}

pub(crate) async fn run(cli: &Cli, args: &Args) -> Outcome {
    let client = connect(cli).await?;
    let kinds: Vec<QueueKind> = QueueKind::ALL
        .into_iter()
        .filter(|k| {
            args.kind
                .as_deref()
                .is_none_or(|want| k.to_string() == want)
        })
        .collect();
    let mut found = false;
    for kind in kinds {
        let entries = client.inspect(kind, &args.name).await?;
        if entries.is_empty() {
            continue;
        }
        found = true;
        let now = SystemTime::now();
        let since = |e: &QueueEntry| e.queued_at.and_then(|t| now.duration_since(t).ok());
        if cli.json {
            for e in &entries {
                let queued_ms = e
                    .queued_at
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as u64);
                output::json(json!({
                    "kind": kind.to_string(), "name": args.name,
                    "sub_namespace": client.sub_namespace_of(&args.name), "holder": e.holder,
                    "lease": e.lease.map(|l| l.to_string()), "contender": e.contender,
                    "fencing_token": e.fencing_token, "client": e.client_id, "host": e.host,
                    "pid": e.pid, "label": e.label,
                    "ttl_ms": e.remaining.map(|d| d.as_millis() as u64),
                    "mode": e.mode.map(|m| match m { RwMode::Read => "read", RwMode::Write => "write" }),
                    "permits": e.permits, "value": e.value, "queued_at_ms": queued_ms,
                }));
            }
            continue;
        }
        let holders: Vec<&QueueEntry> = entries.iter().filter(|e| e.holder).collect();
        let waiting = entries.len() - holders.len();
        let summary = match kind {
            QueueKind::RwLock => match holders.first().and_then(|e| e.mode) {
                Some(RwMode::Write) => "held by a writer".to_owned(),
                Some(RwMode::Read) => format!("{} readers holding", holders.len()),
                None => "free".to_owned(),
            },
            QueueKind::Semaphore => format!(
                "{} holding {} permits",
                holders.len(),
                holders.iter().filter_map(|e| e.permits).sum::<u32>()
            ),
            QueueKind::Election => match holders.first() {
                Some(leader) => format!(
                    "leader {:?}",
                    output::printable(leader.value.as_deref().unwrap_or_default())
                ),
                None => "no leader".to_owned(),
            },
            _ => format!("{} holding", holders.len()),
        };
        println!("{kind} {:?}: {summary}, {waiting} waiting", args.name);
        if client.spread() > 1 {
            println!("in sub-namespace {}", client.sub_namespace_of(&args.name));
        }
        let detail = match kind {
            QueueKind::RwLock => Some("MODE"),
            QueueKind::Semaphore => Some("PERMITS"),
            QueueKind::Election => Some("VALUE"),
            _ => None,
        };
        let mut header = vec!["ROLE"];
        header.extend(detail);
        header.extend([
            "LEASE",
            "HOST",
            "PID",
            "LABEL",
            "FENCING TOKEN",
            "QUEUED",
            "TTL LEFT",
        ]);
        let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
        for e in &entries {
            let role = match (e.holder, e.remaining) {
                (_, None) => "dead",
                (true, _) => "holder",
                (false, _) => "waiting",
            };
            let mut row = vec![role.to_owned()];
            if detail.is_some() {
                row.push(match (e.mode, e.permits, &e.value) {
                    (Some(RwMode::Read), _, _) => "read".to_owned(),
                    (Some(RwMode::Write), _, _) => "write".to_owned(),
                    (_, Some(p), _) => p.to_string(),
                    (_, _, Some(v)) => shorten(v),
                    _ => String::new(),
                });
            }
            row.extend([
                e.lease
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| e.contender.clone()),
                e.host.clone(),
                e.pid.map(|p| p.to_string()).unwrap_or_default(),
                e.label.clone(),
                e.fencing_token.to_string(),
                since(e)
                    .map(|d| format!("{} ago", output::human(d)))
                    .unwrap_or_else(|| "-".into()),
                e.remaining.map(output::human).unwrap_or_else(|| "-".into()),
            ]);
            rows.push(row);
        }
        output::table(&rows);
    }
    if !found && !cli.json {
        println!(
            "nothing named {:?} in namespace {:?}",
            args.name, cli.namespace
        );
    }
    Ok(exit::OK)
}

/// A value as a table cell: its first 40 characters.
fn shorten(value: &str) -> String {
    match value.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_owned(),
    }
}
