//! From Redis's and fred's errors to [`Error`]: the typed errors scripts raise (`LH<CODE>`),
//! ACL refusals, lost connections, TLS failures and timeouts.

use std::time::Duration;

use fred::error::{Error as RedisError, ErrorKind};

use crate::base::error::{Cause, Error};

/// fred's error for a command that found no connection to send on (never sent; the pool
/// sends each command at most once).
pub(super) fn not_sent(e: &RedisError) -> bool {
    let d = e.details();
    d.starts_with("Failed to route command")
        // A Cluster slot on the move (see `Conn::call`): refused, not run.
        || d.starts_with("Too many redirections")
        || d.starts_with("TRYAGAIN")
        || d.starts_with("ASK ")
        || d.starts_with("MOVED ")
}

/// Low-cardinality label for an error.
pub(super) fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Timeout(_) => "timeout",
        Error::Unreachable(_) => "unreachable",
        Error::WrongType { .. } => "wrong_type",
        Error::CorruptData { .. } => "corrupt_data",
        Error::PermissionDenied(_) => "permission",
        Error::AuthFailed(_) => "auth",
        Error::Tls(_) => "tls",
        Error::InvalidArgument(_) => "argument",
        Error::NotReplicated { .. } => "not_replicated",
        Error::OutOfMemory(_) => "out_of_memory",
        _ => "other",
    }
}

/// Redis's ACL errors name neither the key nor the channel nor the namespace: add `what` was
/// being done to a [`Error::PermissionDenied`]; other errors pass unchanged.
pub(crate) fn denied_during(e: Error, what: impl FnOnce() -> String) -> Error {
    match e {
        Error::PermissionDenied(c) => {
            let message = format!("{} ({})", c.message(), what());
            Error::PermissionDenied(c.with_message(message))
        }
        e => e,
    }
}

/// Map a Redis/fred error to ours. Script errors come as `LH<CODE> <details>`, with Redis's
/// " script: <sha>, on @user_script:<line>." appended.
pub(crate) fn classify(e: RedisError, timeout: Duration) -> Error {
    let details = e.details();
    // Redis 6.2 wraps what a script raises: "ERR Error running script (call to f_<sha>):
    // @user_script:<line>: LHARG …" (lua/prelude/core.lua's `raise`), and an error reply of a
    // command the script called as "…: @user_script: <line>: -OOM …" (nested when a script
    // raises such a reply again): what follows the last position is the error.
    let details = match details.rsplit_once("@user_script:") {
        Some((_, rest))
            if details.starts_with("ERR Error running script")
                || details.starts_with("@user_script:") =>
        {
            rest.split_once(": ")
                .map_or(details, |(_, raised)| raised.trim_start_matches('-'))
        }
        _ => details,
    };
    let details = details
        .rfind(" script: ")
        .map_or(details, |at| &details[..at]);
    if let Some(rest) = details.strip_prefix("LHWRONGTYPE ") {
        let mut parts = rest.splitn(3, ' ');
        if let (Some(found), Some(expected), Some(key)) = (parts.next(), parts.next(), parts.next())
        {
            return Error::WrongType {
                key: key.to_owned(),
                found: found.to_owned(),
                expected: expected.to_owned(),
            };
        }
    }
    if let Some(rest) = details.strip_prefix("LHCORRUPT ") {
        let (detail, key) = rest.split_once(": ").unwrap_or((rest, ""));
        return Error::CorruptData {
            key: key.to_owned(),
            detail: detail.to_owned(),
        };
    }
    let cause = |message: String| Cause::from_source(message, e.clone());
    // Redis checks memory before a script's first write, so nothing was written.
    if details.starts_with("OOM ") {
        return Error::OutOfMemory(cause(details.to_owned()));
    }
    if let Some(rest) = details.strip_prefix("LHARG ") {
        return Error::InvalidArgument(rest.to_owned());
    }
    if let Some(rest) = details.strip_prefix("LHLAYOUT ") {
        return Error::LayoutMismatch(rest.to_owned());
    }
    // A command refused by the ACL answers NOPERM; one refused inside a script answers
    // "ERR The user executing the script can't …" on Redis 7.0, "ERR ACL failure in script: …"
    // on Valkey 8 (NOPERM on later Redis versions).
    if details.starts_with("NOPERM")
        || details.contains("The user executing the script can't")
        || details.starts_with("ERR ACL failure in script")
    {
        return Error::PermissionDenied(cause(details.to_owned()));
    }
    if details.starts_with("WRONGPASS") || details.starts_with("NOAUTH") {
        return Error::AuthFailed(cause(details.to_owned()));
    }
    // A command whose connection closed while it was in flight (the pool sends each command
    // at most once). fred gives this no kind of its own (`Unknown`), so the text decides.
    if details.starts_with("Too many failed write attempts") {
        return Error::Unreachable(cause(
            "the connection closed with the call in flight (it may have run)".to_owned(),
        ));
    }
    if not_sent(&e) {
        return Error::Unreachable(cause("no connection to send the call on".to_owned()));
    }
    if let Some(why) = super::tls::handshake_failure(details) {
        return Error::Tls(cause(why));
    }
    match e.kind() {
        #[cfg(feature = "tls")]
        ErrorKind::Tls => Error::Tls(cause(details.to_owned())),
        ErrorKind::Auth => Error::AuthFailed(cause(details.to_owned())),
        ErrorKind::Timeout => Error::Timeout(timeout),
        ErrorKind::IO | ErrorKind::Canceled => Error::Unreachable(cause(io_sentence(details))),
        _ => Error::Redis(cause(details.to_owned())),
    }
}

/// fred reports an I/O error as the `Debug` form of `std::io::Error` (`Os { code: 111, kind:
/// ConnectionRefused, message: "Connection refused" }`), without the error itself: this turns
/// that text into the sentence `io::Error`'s `Display` would have given.
fn io_sentence(details: &str) -> String {
    if let Some(rest) = details.strip_prefix("Os {") {
        let message = rest
            .split_once("message: \"")
            .and_then(|(_, m)| m.split_once('"'))
            .map(|(m, _)| m);
        let code = rest
            .split_once("code: ")
            .and_then(|(_, c)| c.split_once(','))
            .map(|(c, _)| c.trim());
        if let (Some(message), Some(code)) = (message, code) {
            return format!("{} (os error {code})", message.to_lowercase());
        }
    }
    if let Some(kind) = details
        .strip_prefix("Kind(")
        .and_then(|k| k.strip_suffix(')'))
    {
        // `UnexpectedEof` -> "unexpected eof"
        let mut words = String::new();
        for (i, ch) in kind.char_indices() {
            if ch.is_uppercase() && i > 0 {
                words.push(' ');
            }
            words.push(ch.to_ascii_lowercase());
        }
        return words;
    }
    details.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script_error(msg: &str) -> RedisError {
        RedisError::new(ErrorKind::Unknown, msg.to_owned())
    }

    #[test]
    fn out_of_memory_is_its_own_error() {
        let oom = "OOM command not allowed when used memory > 'maxmemory'. script: 1f, on \
                   @user_script:9.";
        let e = classify(script_error(oom), Duration::from_secs(1));
        assert!(
            matches!(e, Error::OutOfMemory(ref m) if m.message().starts_with("OOM command not allowed")),
            "{e:?}"
        );
        assert_eq!(error_kind(&e), "out_of_memory");
    }

    /// The texts Redis 7.0.15 answers, checked against a server (see tests/acl.rs).
    #[test]
    fn acl_denials_are_permission_denied() {
        let t = Duration::from_secs(1);
        for (reply, kept) in [
            (
                "NOPERM this user has no permissions to access one of the keys used as arguments",
                "one of the keys",
            ),
            (
                "NOPERM this user has no permissions to access one of the channels used as arguments",
                "one of the channels",
            ),
            ("NOPERM this user has no permissions to run the 'evalsha' command", "'evalsha'"),
            (
                "ERR The user executing the script can't access at least one of the keys \
                 mentioned in the command arguments script: 6e8f06, on @user_script:1.",
                "can't access at least one of the keys mentioned in the command arguments",
            ),
            (
                "ERR The user executing the script can't publish to the channel mentioned in \
                 the command script: 3f1665, on @user_script:1.",
                "can't publish to the channel mentioned in the command",
            ),
            (
                "ERR The user executing the script can't run this command or subcommand \
                 script: d7e1e1, on @user_script:1.",
                "can't run this command or subcommand",
            ),
            // Valkey 8.1.
            (
                "ERR ACL failure in script: User lh-noxadd has no permissions to run the 'xadd' \
                 command script: 6835e5, on @user_script:409.",
                "no permissions to run the 'xadd' command",
            ),
        ] {
            match classify(script_error(reply), t) {
                Error::PermissionDenied(m) => {
                    let m = m.message();
                    assert!(m.contains(kept), "{m}");
                    assert!(!m.contains("@user_script"), "{m}");
                }
                other => panic!("{reply}: {other:?}"),
            }
        }
        let e = denied_during(classify(script_error("NOPERM no"), t), || "doing x".into());
        assert!(
            matches!(e, Error::PermissionDenied(ref m) if m.message() == "NOPERM no (doing x)")
        );
        let e = denied_during(Error::Closed, || unreachable!());
        assert!(matches!(e, Error::Closed));
    }

    #[test]
    fn io_errors_read_as_sentences_and_keep_their_source() {
        let t = Duration::from_secs(1);
        let refused = std::io::Error::from_raw_os_error(111);
        let e = classify(RedisError::from(refused), t);
        match &e {
            Error::Unreachable(c) => {
                assert_eq!(c.message(), "connection refused (os error 111)");
                assert!(std::error::Error::source(c).is_some());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            e.to_string(),
            "cannot reach Redis: connection refused (os error 111)"
        );
        assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        let e = classify(RedisError::from(eof), t);
        assert_eq!(e.to_string(), "cannot reach Redis: unexpected eof");
    }

    #[test]
    fn refused_credentials_are_auth_failed() {
        let t = Duration::from_secs(1);
        for reply in [
            "WRONGPASS invalid username-password pair or user is disabled.",
            "NOAUTH Authentication required.",
        ] {
            let e = classify(script_error(reply), t);
            assert!(matches!(e, Error::AuthFailed(_)), "{e:?}");
            assert!(!e.is_transient());
        }
    }

    /// Redis 6.2 reports what a script raises with the script's position in front.
    #[test]
    fn script_errors_are_typed_on_redis_6_2_too() {
        let t = Duration::from_secs(1);
        let e = classify(
            script_error(
                "ERR Error running script (call to f_3f1e): @user_script:33: LHARG bad size",
            ),
            t,
        );
        assert!(
            matches!(e, Error::InvalidArgument(ref m) if m == "bad size"),
            "{e:?}"
        );
        let e = classify(
            script_error(
                "ERR Error running script (call to f_3f1e): @user_script:78: LHWRONGTYPE \
                 string zset {ns}:mutex:a",
            ),
            t,
        );
        assert!(
            matches!(e, Error::WrongType { ref key, .. } if key == "{ns}:mutex:a"),
            "{e:?}"
        );
    }

    #[test]
    fn script_errors_are_typed() {
        let t = Duration::from_secs(1);
        let e = classify(
            script_error("LHWRONGTYPE string zset {ns}:mutex:a b script: 3f, on @user_script:40."),
            t,
        );
        match e {
            Error::WrongType {
                key,
                found,
                expected,
            } => {
                assert_eq!(key, "{ns}:mutex:a b");
                assert_eq!(found, "string");
                assert_eq!(expected, "zset");
            }
            other => panic!("{other:?}"),
        }
        let e = classify(
            script_error("LHCORRUPT revision counter is not a number: {ns}:rev"),
            t,
        );
        assert!(matches!(e, Error::CorruptData { ref key, .. } if key == "{ns}:rev"));
        assert!(matches!(
            classify(script_error("LHARG bad"), t),
            Error::InvalidArgument(_)
        ));
        assert!(matches!(
            classify(script_error("NOPERM no"), t),
            Error::PermissionDenied(_)
        ));
        assert!(matches!(
            classify(RedisError::new(ErrorKind::Timeout, "t"), t),
            Error::Timeout(_)
        ));
        // Truncated or odd messages never panic.
        for odd in [
            "LHWRONGTYPE",
            "LHWRONGTYPE a",
            "LHCORRUPT ",
            " script: ",
            "",
        ] {
            let _ = classify(script_error(odd), t);
        }
    }
}
