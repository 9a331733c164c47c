//! `leasehold put|get|del|watch` (etcdctl's): keys with a lease. Text output as etcdctl's:
//! `put` prints `OK`, `get` the key and the value on one line each, `del` how many keys it
//! deleted, `watch` each event as `PUT`, key, value or `DELETE`, key.

use leasehold::{Client, KeyValue, LeaseId, MAX_RANGE};
use serde_json::json;

use crate::{connect, connect_durable, output, Cli, Interrupts, Outcome};

#[derive(clap::Args, Debug)]
pub(crate) struct PutArgs {
    /// The key.
    pub(crate) key: String,
    /// The value.
    pub(crate) value: String,
    /// Attach the key to this lease (it is deleted with it), as `lease grant` prints it.
    #[arg(long, value_name = "ID")]
    pub(crate) lease: Option<LeaseId>,
    #[command(flatten)]
    pub(crate) durable: crate::Durable,
}

#[derive(clap::Args, Debug)]
pub(crate) struct GetArgs {
    /// The key, or with --prefix the prefix (empty: every key).
    pub(crate) key: String,
    /// Every key starting with KEY, in byte order.
    #[arg(long)]
    pub(crate) prefix: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct DelArgs {
    /// The key, or with --prefix the prefix.
    pub(crate) key: String,
    /// Every key starting with KEY (one call per key: not atomic).
    #[arg(long)]
    pub(crate) prefix: bool,
}

pub(crate) async fn put(cli: &Cli, args: &PutArgs) -> Outcome {
    let client = connect_durable(cli, &args.durable).await?;
    let revision = client.put(&args.key, &args.value, args.lease).await?;
    if cli.json {
        output::json(json!({ "key": args.key, "revision": revision }));
    } else {
        println!("OK");
    }
    Ok(0)
}

pub(crate) async fn get(cli: &Cli, args: &GetArgs) -> Outcome {
    let client = connect(cli).await?;
    let kvs = if args.prefix {
        with_prefix(&client, &args.key).await?
    } else {
        client.get(&args.key).await?.into_iter().collect()
    };
    for kv in kvs {
        if cli.json {
            output::json(json!({
                "key": kv.key, "value": kv.value,
                "lease": kv.lease.map(|l| l.to_string()),
                "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
                "version": kv.version,
            }));
        } else {
            println!("{}", output::printable(&kv.key));
            println!("{}", output::printable(&kv.value));
        }
    }
    Ok(0)
}

pub(crate) async fn del(cli: &Cli, args: &DelArgs) -> Outcome {
    let client = connect(cli).await?;
    let keys: Vec<String> = if args.prefix {
        let kvs = with_prefix(&client, &args.key).await?;
        kvs.into_iter().map(|kv| kv.key).collect()
    } else {
        vec![args.key.clone()]
    };
    let mut deleted = 0u64;
    for key in &keys {
        if client.delete(key).await? {
            deleted += 1;
        }
    }
    if cli.json {
        output::json(json!({ "deleted": deleted }));
    } else {
        println!("{deleted}");
    }
    Ok(0)
}

/// Every live key starting with `prefix`, page by page.
async fn with_prefix(client: &Client, prefix: &str) -> leasehold::Result<Vec<KeyValue>> {
    let mut all: Vec<KeyValue> = Vec::new();
    loop {
        let after = all.last().map(|kv| kv.key.clone());
        let page = client
            .get_prefix(prefix, MAX_RANGE, after.as_deref())
            .await?;
        all.extend(page.kvs);
        if !page.more {
            return Ok(all);
        }
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct WatchArgs {
    /// The key, or with --prefix the prefix (empty: every key).
    pub(crate) key: String,
    /// Every key starting with KEY.
    #[arg(long)]
    pub(crate) prefix: bool,
    /// Start with the events at this revision and after (default: from now).
    #[arg(long, value_name = "N")]
    pub(crate) rev: Option<u64>,
}

/// Print every event until interrupted (etcdctl's format: `PUT`, the key and the value, or
/// `DELETE` and the key; `COMPACTED <revision>` when it fell behind the log).
pub(crate) async fn watch(cli: &Cli, args: &WatchArgs, signals: &mut Interrupts) -> Outcome {
    use futures_util::StreamExt;
    use leasehold::{WatchEvent, WatchOptions};

    let client = connect(cli).await?;
    let mut options = WatchOptions::new();
    if args.prefix {
        options = options.prefix();
    }
    if let Some(rev) = args.rev {
        options = options.start_revision(rev);
    }
    let mut events = Box::pin(client.watch(&args.key, options).await?);
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = signals.recv() => return Ok(0),
        };
        let Some(event) = event else { return Ok(0) };
        match (event?, cli.json) {
            (
                WatchEvent::Put {
                    key,
                    value,
                    lease,
                    revision,
                },
                true,
            ) => output::json(json!({
                "type": "put", "key": key, "value": value,
                "lease": lease.map(|l| l.to_string()), "revision": revision,
            })),
            (WatchEvent::Delete { key, revision }, true) => {
                output::json(json!({ "type": "delete", "key": key, "revision": revision }))
            }
            (WatchEvent::Compacted { revision }, true) => {
                output::json(json!({ "type": "compacted", "revision": revision }))
            }
            (WatchEvent::Put { key, value, .. }, false) => {
                println!(
                    "PUT\n{}\n{}",
                    output::printable(&key),
                    output::printable(&value)
                )
            }
            (WatchEvent::Delete { key, .. }, false) => {
                println!("DELETE\n{}", output::printable(&key))
            }
            (WatchEvent::Compacted { revision }, false) => println!("COMPACTED {revision}"),
            (_, _) => {}
        }
    }
}
