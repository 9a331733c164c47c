//! `leasehold locks [--kind K]`: every lock and election of the namespace with its holder and
//! how long ago the holder queued: the first thing to look at when something is stuck.

use std::time::SystemTime;

use leasehold::QueueKind;
use serde_json::json;

use crate::{connect, exit, output, Cli, Outcome};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Only this kind (default: every kind).
    #[arg(long, value_parser = ["mutex", "rwlock", "semaphore", "election"])]
    pub(crate) kind: Option<String>,
}

pub(crate) async fn run(cli: &Cli, args: &Args) -> Outcome {
    let client = connect(cli).await?;
    let queues: Vec<(QueueKind, String)> = client
        .queues()
        .await?
        .into_iter()
        .filter(|(k, _)| {
            args.kind
                .as_deref()
                .is_none_or(|want| k.to_string() == want)
        })
        .collect();
    let now = SystemTime::now();
    let mut rows = vec![[
        "KIND",
        "NAME",
        "HOLDERS",
        "WAITING",
        "HELD FOR",
        "HOLDER HOST",
        "PID",
        "LABEL",
    ]
    .map(String::from)
    .to_vec()];
    for (kind, name) in &queues {
        let entries = client.inspect(*kind, name).await?;
        let holders: Vec<_> = entries.iter().filter(|e| e.holder).collect();
        let waiting = entries.len() - holders.len();
        // The holder that queued first has held longest (at most since it queued).
        let first = holders.iter().min_by_key(|e| e.fencing_token);
        let held_for = first
            .and_then(|e| e.queued_at)
            .and_then(|t| now.duration_since(t).ok());
        if cli.json {
            output::json(json!({
                "kind": kind.to_string(), "name": name, "holders": holders.len(),
                "waiting": waiting,
                "held_for_ms": held_for.map(|d| d.as_millis() as u64),
                "holder_lease": first.and_then(|e| e.lease).map(|l| l.to_string()),
                "holder_host": first.map(|e| e.host.clone()),
                "holder_pid": first.and_then(|e| e.pid),
                "holder_label": first.map(|e| e.label.clone()),
            }));
            continue;
        }
        rows.push(vec![
            kind.to_string(),
            name.clone(),
            holders.len().to_string(),
            waiting.to_string(),
            held_for.map(output::human).unwrap_or_else(|| "-".into()),
            first.map(|e| e.host.clone()).unwrap_or_default(),
            first
                .and_then(|e| e.pid)
                .map(|p| p.to_string())
                .unwrap_or_default(),
            first.map(|e| e.label.clone()).unwrap_or_default(),
        ]);
    }
    if !cli.json {
        output::table(&rows);
        println!(
            "\n{} locks and elections in namespace {:?}",
            queues.len(),
            cli.namespace
        );
    }
    Ok(exit::OK)
}
