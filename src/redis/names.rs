//! Connection names. Every connection a client opens is named `leasehold:<namespace>:<client
//! id>` (`CLIENT SETNAME`), so that `CLIENT LIST` tells an operator which connections are
//! leasehold's, for which namespace and which process (the client id is also in its leases:
//! `leasehold sessions`). Named when the client connects, and again after each reconnection:
//! the keepalive supervisor is told of reconnections of pooled connections and names them
//! again, and names the doorbell connection before it subscribes again (a subscribed RESP2
//! connection takes no `CLIENT SETNAME`). A client on several namespaces
//! (`Client::with_namespace`) names its connections after the one it was built for; a pool
//! the application brought keeps the names it has.
//!
//! A refusal (a Redis ACL user without `client|setname`, see `docs/acl.md`) is ignored: a name
//! is a convenience, never a reason for a call to fail.

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientInterface, ClientLike};
use fred::types::config::Server;

use super::Keys;

/// The name of every connection of the client `id` in the namespace of `keys`.
pub(crate) fn connection_name(keys: &Keys, id: &str) -> String {
    format!("leasehold:{}:{id}", keys.namespace())
}

/// Name `client`'s connection to `server`, or all its connections (every primary of a
/// cluster) when `server` is `None`.
pub(crate) async fn name_client(client: &Client, server: Option<Server>, name: &str) {
    if !client.is_clustered() {
        let _ = client.client_setname(name).await;
        return;
    }
    let servers = match server {
        Some(server) => vec![server],
        None => client.active_connections(),
    };
    for server in servers {
        let _ = client.with_cluster_node(server).client_setname(name).await;
    }
}

/// Name the doorbell connection (on a cluster: the one its commands go to).
pub(crate) async fn name_subscriber(subscriber: &SubscriberClient, name: &str) {
    let _ = subscriber.client_setname(name).await;
}
