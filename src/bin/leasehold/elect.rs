//! `leasehold elect NAME PROPOSAL` and `leasehold elect --listen NAME` (etcdctl elect).

use std::time::Duration;

use futures_util::StreamExt;
use leasehold::SessionOptions;
use serde_json::json;

use crate::{exit, output, parse_ttl, Cli, Failure, Interrupts, Outcome, EXIT_ERROR, EXIT_USAGE};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Campaign: prints the election key and the proposal once elected, holds \
    leadership until SIGINT/SIGTERM, then resigns (exit 0); if the session is lost: exit 1.\n\n\
    --listen: prints every leader change, one line each (the leader's value, or \
    `(no leader)`), until SIGINT/SIGTERM."
)]
pub(crate) struct Args {
    /// Election name.
    pub(crate) name: String,
    /// The value to campaign with (not with --listen).
    pub(crate) proposal: Option<String>,
    /// Observe the election instead of campaigning.
    #[arg(long, short = 'l')]
    pub(crate) listen: bool,
    /// Session TTL in seconds (or with a unit: 1500ms, 2m).
    #[arg(long, default_value = "10", value_parser = parse_ttl)]
    pub(crate) ttl: Duration,
    #[command(flatten)]
    pub(crate) durable: crate::Durable,
}

pub(crate) async fn run(cli: &Cli, args: &Args, signals: &mut Interrupts) -> Outcome {
    if args.listen == args.proposal.is_some() {
        return Err(Failure::new(
            EXIT_USAGE,
            "give either a PROPOSAL to campaign, or --listen (see `leasehold elect --help`)",
        ));
    }
    let client = crate::connect_durable(cli, &args.durable).await?;
    let session = client
        .session_with(SessionOptions::new().ttl(args.ttl).label("leasehold elect"))
        .await?;
    let election = session.election(&args.name)?;
    if args.listen {
        let mut changes = Box::pin(election.observe());
        loop {
            tokio::select! {
                _ = signals.recv() => {
                    let _ = session.close().await;
                    return Ok(exit::OK);
                }
                ev = changes.next() => match ev {
                    Some(Ok(ev)) => print_event(cli, &ev),
                    Some(Err(e)) => eprintln!("Error: {e}"),
                    None => return Ok(exit::OK),
                }
            }
        }
    }
    let proposal = args.proposal.as_deref().unwrap_or_default();
    let token = tokio::select! {
        t = election.campaign(proposal) => t?,
        _ = signals.recv() => {
            let _ = session.close().await;
            return Ok(exit::INTERRUPTED);
        }
    };
    if cli.json {
        output::json(json!({
            "key": election.key(), "value": proposal, "fencing_token": token,
            "lease": session.lease().to_string(),
        }));
    } else {
        println!("{}", election.key());
        println!("{proposal}");
    }
    tokio::select! {
        _ = signals.recv() => {
            election.resign().await?;
            session.close().await?;
            Ok(exit::OK)
        }
        end = session.done() => Err(Failure::new(EXIT_ERROR, format!("session lost: {end}"))),
    }
}

fn print_event(cli: &Cli, ev: &leasehold::LeaderEvent) {
    if cli.json {
        output::json(match &ev.leader {
            Some(l) => json!({
                "revision": ev.revision, "leader": true, "value": l.value,
                "lease": l.lease.to_string(), "fencing_token": l.fencing_token,
                "after_gap": ev.after_gap,
            }),
            None => json!({
                "revision": ev.revision, "leader": false, "value": null, "lease": null,
                "fencing_token": null, "after_gap": ev.after_gap,
            }),
        });
    } else {
        match &ev.leader {
            Some(l) => println!("{}", l.value),
            None => println!("(no leader)"),
        }
    }
}
