//! `leasehold inspect NAME [--kind K]`: holders and waiters, in order.

use leasehold::QueueKind;
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
        if cli.json {
            for e in &entries {
                output::json(json!({
                    "kind": kind.to_string(), "name": args.name, "holder": e.holder,
                    "lease": e.lease.map(|l| l.to_string()), "contender": e.contender,
                    "fencing_token": e.fencing_token, "client": e.client_id, "host": e.host,
                    "pid": e.pid, "label": e.label,
                    "ttl_ms": e.remaining.map(|d| d.as_millis() as u64),
                }));
            }
            continue;
        }
        println!(
            "{kind} {:?}: {} holding, {} waiting",
            args.name,
            entries.iter().filter(|e| e.holder).count(),
            entries.iter().filter(|e| !e.holder).count()
        );
        let mut rows = vec![[
            "ROLE",
            "LEASE",
            "HOST",
            "PID",
            "LABEL",
            "FENCING TOKEN",
            "TTL LEFT",
        ]
        .map(String::from)
        .to_vec()];
        for e in &entries {
            let role = match (e.holder, e.remaining) {
                (_, None) => "dead",
                (true, _) => "holder",
                (false, _) => "waiting",
            };
            rows.push(vec![
                role.to_owned(),
                e.lease
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| e.contender.clone()),
                e.host.clone(),
                e.pid.map(|p| p.to_string()).unwrap_or_default(),
                e.label.clone(),
                e.fencing_token.to_string(),
                e.remaining.map(output::human).unwrap_or_else(|| "-".into()),
            ]);
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
