//! `leasehold functions load|status`: leasehold's Redis function library, which an operator
//! loads once per deploy where namespace users may not load it themselves (`docs/acl.md`).

use serde_json::json;

use crate::{connect, output, Cli, Outcome};

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// Load leasehold's function library on the server (every primary of a cluster) with the
    /// --url user, who needs FUNCTION LOAD: `function library <name> loaded`.
    Load,
    /// Whether clients of this version call the library (FCALL) or scripts (EVALSHA) here:
    /// `function library <name>: in use` or `…: not in use, scripts run with EVALSHA`.
    Status,
}

pub(crate) async fn run(cli: &Cli, cmd: &Command) -> Outcome {
    let client = connect(cli).await?;
    let library = leasehold::function_library_name();
    if let Command::Load = cmd {
        client.load_functions().await?;
    }
    let in_use = client.uses_functions();
    if cli.json {
        output::json(json!({ "library": library, "in_use": in_use }));
    } else if let Command::Load = cmd {
        println!("function library {library} loaded");
    } else if in_use {
        println!("function library {library}: in use");
    } else {
        println!("function library {library}: not in use, scripts run with EVALSHA");
    }
    Ok(0)
}
