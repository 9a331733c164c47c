//! `leasehold sessions [--older-than D] [--label L]`: every live lease, oldest first, and a
//! summary line per host and process so a session leak jumps out.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::{connect, exit, output, Cli, Outcome};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Only sessions at least this old (e.g. 30s, 5m, 2h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) older_than: Option<Duration>,
    /// Only sessions with this label.
    #[arg(long)]
    pub(crate) label: Option<String>,
}

pub(crate) async fn run(cli: &Cli, args: &Args) -> Outcome {
    let client = connect(cli).await?;
    let now = SystemTime::now();
    let age = |l: &leasehold::LeaseInfo| {
        l.granted_at
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default()
    };
    let mut leases: Vec<_> = client
        .leases()
        .await?
        .into_iter()
        .filter(|l| args.older_than.is_none_or(|min| age(l) >= min))
        .filter(|l| args.label.as_deref().is_none_or(|want| l.label == want))
        .collect();
    leases.sort_by_key(|l| std::cmp::Reverse(age(l)));
    if cli.json {
        for l in &leases {
            output::json(json!({
                "lease": l.id.to_string(), "client": l.client_id, "host": l.host, "pid": l.pid,
                "label": l.label, "age_ms": age(l).as_millis() as u64,
                "ttl_ms": l.remaining.as_millis() as u64,
                "granted_ttl_ms": l.granted_ttl.as_millis() as u64,
                "attached": l.attached_count,
            }));
        }
        return Ok(exit::OK);
    }
    let mut rows = vec![[
        "LEASE", "HOST", "PID", "CLIENT", "LABEL", "AGE", "TTL LEFT", "ATTACHED",
    ]
    .map(String::from)
    .to_vec()];
    // (host, pid) -> (sessions, attached entries)
    let mut per_process: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for l in &leases {
        let pid = l.pid.map(|p| p.to_string()).unwrap_or_default();
        rows.push(vec![
            l.id.to_string(),
            l.host.clone(),
            pid.clone(),
            l.client_id.clone(),
            l.label.clone(),
            output::human(age(l)),
            output::human(l.remaining),
            l.attached_count.to_string(),
        ]);
        let e = per_process.entry((l.host.clone(), pid)).or_default();
        e.0 += 1;
        e.1 += l.attached_count;
    }
    output::table(&rows);
    println!();
    println!("{} sessions in namespace {:?}", leases.len(), cli.namespace);
    let mut summary: Vec<_> = per_process.into_iter().collect();
    summary.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
    for ((host, pid), (n, attached)) in summary {
        let host = output::printable(&host);
        println!("  host {host} pid {pid}: {n} sessions, {attached} attached entries");
    }
    Ok(exit::OK)
}
