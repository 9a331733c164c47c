//! `leasehold namespace [--name NAME]`: the namespace's layout (spread or not), and where
//! names live. With the global `--spread N` on a namespace not yet spread, connecting records
//! N, so this is also how an operator spreads a namespace before deploying its clients.

use serde_json::json;

use crate::{connect, output, Cli, Outcome};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Also show the sub-namespace of these lock, election or recipe names.
    #[arg(long = "name", value_name = "NAME")]
    pub(crate) names: Vec<String>,
}

pub(crate) async fn run(cli: &Cli, args: &Args) -> Outcome {
    let client = connect(cli).await?;
    let n = client.spread();
    if cli.json {
        let names: serde_json::Map<String, serde_json::Value> = (args.names.iter())
            .map(|name| (name.clone(), json!(client.sub_namespace_of(name))))
            .collect();
        output::json(json!({
            "namespace": client.namespace(), "spread": n, "sub_namespaces": names,
        }));
        return Ok(0);
    }
    if n > 1 {
        println!(
            "namespace {:?}: spread over {n} sub-namespaces",
            client.namespace()
        );
    } else {
        println!("namespace {:?}: not spread", client.namespace());
    }
    for name in &args.names {
        println!("{name:?} lives in {}", client.sub_namespace_of(name));
    }
    Ok(0)
}
