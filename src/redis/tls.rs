//! From a URL (or a fred `Config`) and optional CA certificates to the fred configuration the
//! client connects with, TLS included (feature `tls`).
//!
//! With the feature, TLS runs on rustls. Its configuration is built here with an explicit
//! crypto provider (the process default if the application installed one, else aws-lc-rs), so
//! nobody has to call `CryptoProvider::install_default`, and nothing panics when the dependency
//! tree enables several rustls providers (where rustls cannot pick one by itself).

use fred::types::config::Config;

use crate::base::error::{Error, Result};

/// Parse `url` into a fred configuration. A TLS scheme (`rediss://`, `rediss-cluster://`,
/// `rediss-sentinel://`, `valkeys…`) trusts `roots_pem` if given, else the system's roots.
/// `roots_pem` with a URL that does not ask for TLS is an error: it is almost always a
/// `redis://` written for a `rediss://` server.
/// The URL schemes fred understands (its `Config::from_url`).
const SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis-cluster",
    "rediss-cluster",
    "redis-sentinel",
    "rediss-sentinel",
    "redis+unix",
    "valkey",
    "valkeys",
    "valkey-cluster",
    "valkeys-cluster",
    "valkey-sentinel",
    "valkeys-sentinel",
    "valkey+unix",
];

pub(crate) fn config_from_url(url: &str, roots_pem: Option<&[u8]>) -> Result<Config> {
    let invalid = |e: &dyn std::fmt::Display| {
        Error::InvalidArgument(format!("Redis URL {:?}: {e}", redact(url)))
    };
    // fred takes any other scheme (http://, a typo) for a plain Redis server.
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !scheme.as_deref().is_some_and(|s| SCHEMES.contains(&s)) {
        return Err(invalid(&format_args!(
            "not a Redis URL: the scheme must be one of {}",
            SCHEMES.join(", ")
        )));
    }
    let plain = match plain_scheme(url) {
        None => {
            if roots_pem.is_some() {
                return Err(invalid(
                    &"TLS root certificates were given but the URL does not use TLS \
                      (use rediss://)",
                ));
            }
            return Config::from_url(url).map_err(|e| invalid(&e));
        }
        Some(plain) => plain,
    };
    // fred would build its own rustls configuration for a TLS scheme, with rustls's
    // process-default provider: parse the plain twin and add ours instead.
    let mut config = Config::from_url(&plain).map_err(|e| invalid(&e))?;
    with_tls(&mut config, roots_pem)?;
    Ok(config)
}

/// Apply `roots_pem` to a caller's fred configuration: make it connect with TLS trusting
/// those roots (keeping its cluster host mapping, if any).
pub(crate) fn config_with_roots(mut config: Config, roots_pem: Option<&[u8]>) -> Result<Config> {
    if roots_pem.is_some() {
        with_tls(&mut config, roots_pem)?;
    }
    Ok(config)
}

/// The URL with its TLS scheme replaced by the plain one, or `None` when it uses no TLS.
fn plain_scheme(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    for (tls, plain) in [("rediss", "redis"), ("valkeys", "valkey")] {
        if let Some(suffix) = scheme.strip_prefix(tls) {
            return Some(format!("{plain}{suffix}://{rest}"));
        }
    }
    None
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://…{}", &url[at..]),
        _ => url.to_owned(),
    }
}

/// Explain a failed TLS handshake. fred reports it as an I/O error whose text is the `Debug`
/// form of `io::Error::new(InvalidData, rustls::Error)`; `None` for anything else.
pub(crate) fn handshake_failure(details: &str) -> Option<String> {
    let inner = details
        .strip_prefix("Custom { kind: InvalidData, error: ")?
        .strip_suffix(" }")?;
    let variant = inner.split(['(', ' ', '{']).next().unwrap_or_default();
    let why = match variant {
        "InvalidCertificate" if inner.contains("UnknownIssuer") => {
            "the server's certificate is not signed by a trusted CA (trust its CA with \
             ClientBuilder::tls_root_ca_pem)"
        }
        "InvalidCertificate" if inner.contains("NotValidForName") => {
            "the server's certificate does not name the host in the URL"
        }
        "InvalidCertificate" if inner.contains("Expired") => "the server's certificate expired",
        "InvalidCertificate" | "NoCertificatesPresented" => "the server's certificate was rejected",
        "AlertReceived" => {
            "the server refused the handshake (does it require a client certificate?)"
        }
        "InvalidMessage"
        | "InappropriateMessage"
        | "InappropriateHandshakeMessage"
        | "PeerSentOversizedRecord" => {
            "the handshake failed (does the server speak TLS on this port?)"
        }
        "PeerIncompatible"
        | "PeerMisbehaved"
        | "DecryptError"
        | "HandshakeNotComplete"
        | "General"
        | "Other" => "the handshake failed",
        _ => return None,
    };
    Some(format!("{why}: {inner}"))
}

#[cfg(not(feature = "tls"))]
fn with_tls(_config: &mut Config, _roots_pem: Option<&[u8]>) -> Result<()> {
    Err(Error::InvalidArgument(
        "TLS needs leasehold's `tls` feature".to_owned(),
    ))
}

#[cfg(feature = "tls")]
fn with_tls(config: &mut Config, roots_pem: Option<&[u8]>) -> Result<()> {
    use fred::types::config::{TlsConfig, TlsHostMapping};

    let roots = match roots_pem {
        Some(pem) => roots_from_pem(pem)?,
        None => system_roots()?,
    };
    let hostnames = config
        .tls
        .take()
        .map_or(TlsHostMapping::None, |t| t.hostnames);
    config.tls = Some(TlsConfig {
        connector: client_config(roots)?.into(),
        hostnames,
    });
    Ok(())
}

#[cfg(feature = "tls")]
fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig> {
    use std::sync::Arc;

    use rustls::crypto::CryptoProvider;

    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            Error::Tls(crate::base::error::Cause::new(format!(
                "crypto provider: {e}"
            )))
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(feature = "tls")]
fn roots_from_pem(pem: &[u8]) -> Result<rustls::RootCertStore> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let bad = |e: &dyn std::fmt::Display| {
        Error::InvalidArgument(format!("TLS root certificates (PEM): {e}"))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no CERTIFICATE block found"));
    }
    Ok(roots)
}

#[cfg(feature = "tls")]
fn system_roots() -> Result<rustls::RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable or unparsable system certificates are skipped, as browsers do.
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(Error::Tls(crate::base::error::Cause::new(format!(
            "no trusted root certificates found on this system ({} errors reading them); \
             pass the server's CA with ClientBuilder::tls_root_ca_pem",
            found.errors.len()
        ))));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_schemes_map_to_their_plain_twins() {
        assert_eq!(plain_scheme("redis://h:1"), None);
        assert_eq!(plain_scheme("redis-cluster://h:1"), None);
        assert_eq!(
            plain_scheme("rediss://h:1/2").as_deref(),
            Some("redis://h:1/2")
        );
        assert_eq!(
            plain_scheme("rediss-cluster://u:p@h:1?node=h:2").as_deref(),
            Some("redis-cluster://u:p@h:1?node=h:2")
        );
        assert_eq!(
            plain_scheme("REDISS-sentinel://h").as_deref(),
            Some("redis-sentinel://h")
        );
        assert_eq!(plain_scheme("valkeys://h").as_deref(), Some("valkey://h"));
        assert_eq!(plain_scheme("no scheme"), None);
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redact("rediss://u:secret@h:1"), "rediss://…@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn handshake_failures_are_explained() {
        let unknown = "Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }";
        let m = handshake_failure(unknown).unwrap();
        assert!(m.contains("not signed by a trusted CA") && m.ends_with("(UnknownIssuer)"));
        let name = "Custom { kind: InvalidData, error: InvalidCertificate(NotValidForNameContext \
                    { expected: IpAddress(V4(Ipv4Addr([127, 0, 0, 1]))), presented: [] }) }";
        assert!(handshake_failure(name)
            .unwrap()
            .contains("does not name the host"));
        let corrupt = "Custom { kind: InvalidData, error: InvalidMessage(InvalidContentType) }";
        assert!(handshake_failure(corrupt).unwrap().contains("speak TLS"));
        for other in [
            "Os { code: 111, kind: ConnectionRefused, message: \"Connection refused\" }",
            "Custom { kind: InvalidData, error: \"stream did not contain valid UTF-8\" }",
            "Custom { kind: InvalidData, error: ",
            "",
        ] {
            assert_eq!(handshake_failure(other), None, "{other}");
        }
    }

    #[test]
    fn urls_that_are_not_redis_are_refused_without_their_password() {
        for url in [
            "http://u:pw@127.0.0.1:1",
            "127.0.0.1:6379",
            "redis:/x",
            "https://h",
        ] {
            match config_from_url(url, None) {
                Err(Error::InvalidArgument(m)) => {
                    assert!(m.contains("not a Redis URL"), "{m}");
                    assert!(!m.contains("pw"), "{m}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        for url in [
            "redis://h:1",
            "REDIS://h:1",
            "valkey://h:1",
            "redis-sentinel://h:1?sentinelServiceName=m",
        ] {
            assert!(config_from_url(url, None).is_ok(), "{url}");
        }
    }

    #[test]
    fn roots_for_a_plain_url_are_refused() {
        let e = config_from_url("redis://127.0.0.1:1", Some(b"x")).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(ref m) if m.contains("rediss://")));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn bad_pem_is_an_invalid_argument() {
        for pem in [&b""[..], b"not pem", b"-----BEGIN CERTIFICATE-----\n!!\n"] {
            let e = config_from_url("rediss://127.0.0.1:1", Some(pem)).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_urls_get_a_rustls_connector() {
        let config = config_from_url("rediss://127.0.0.1:1", None);
        // A machine without system roots reports that instead; both are typed.
        match config {
            Ok(c) => assert!(c.uses_rustls()),
            Err(e) => assert!(matches!(e, Error::Tls(_)), "{e:?}"),
        }
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_urls_without_the_feature_are_refused() {
        let e = config_from_url("rediss://127.0.0.1:1", None).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(ref m) if m.contains("`tls` feature")));
    }
}
