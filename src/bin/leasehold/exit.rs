//! The exit codes, declared once: `main.rs`'s help text and the README's table are tested
//! against [`TABLE`].

/// Success.
pub(crate) const OK: u8 = 0;
/// Any other error (a lost session, a refused operation, a command that could not start).
pub(crate) const ERROR: u8 = 1;
/// Redis could not be reached or did not answer in time.
pub(crate) const UNREACHABLE: u8 = 2;
/// The Redis ACL refused a command, key or channel.
pub(crate) const DENIED: u8 = 3;
/// Redis refused the credentials in the URL.
pub(crate) const AUTH: u8 = 4;
/// TLS failed (certificate, handshake, no TLS on that port).
pub(crate) const TLS: u8 = 5;
/// `lock --try`: held by someone else; `lock --timeout`: not acquired in time.
pub(crate) const NOT_ACQUIRED: u8 = 6;
/// Bad arguments.
pub(crate) const USAGE: u8 = 128;
/// Interrupted (SIGINT/SIGTERM) while waiting, as a shell reports SIGINT.
pub(crate) const INTERRUPTED: u8 = 130;

/// Every code with what it means, in order.
#[cfg(test)]
pub(crate) const TABLE: &[(u8, &str)] = &[
    (OK, "success"),
    (
        ERROR,
        "any other error (session lost, operation refused, command not started)",
    ),
    (
        UNREACHABLE,
        "cannot reach Redis, or it did not answer in time",
    ),
    (DENIED, "permission denied by the Redis ACL"),
    (AUTH, "Redis refused the credentials"),
    (TLS, "TLS failed"),
    (
        NOT_ACQUIRED,
        "`lock --try`: held by someone else; `lock --timeout`: not acquired in time",
    ),
    (USAGE, "bad arguments"),
    (
        INTERRUPTED,
        "interrupted while waiting (nothing left queued)",
    ),
];

/// The table as the README shows it.
#[cfg(test)]
pub(crate) fn markdown() -> String {
    let mut out = String::from("| exit code | meaning |\n|---|---|\n");
    for (code, what) in TABLE {
        out.push_str(&format!("| {code} | {what} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_shows_every_exit_code() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let table = markdown();
        assert!(
            readme.contains(&table),
            "README.md's exit code table differs from exit::TABLE; it should read:\n{table}"
        );
    }

    #[test]
    fn the_help_names_every_exit_code() {
        use clap::CommandFactory;
        let help = crate::Cli::command()
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        for (code, _) in TABLE {
            assert!(
                help.contains(&format!("{code} ")),
                "--help lacks exit code {code}: {help}"
            );
        }
    }
}
