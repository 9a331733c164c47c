//! A throwaway redis-server that also listens with TLS, with a CA and a server certificate
//! made at test time (nothing is read from or left on the machine).

use std::net::{Ipv4Addr, TcpListener};

use leasehold_testing::RedisServer;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA that can sign server certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM: what a client must trust.
    pub pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate and its key (both PEM) for `names` (DNS names or IP addresses).
    pub fn server_cert(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "leasehold test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A redis-server with a plain port (the harness's readiness check, raw commands) and a TLS
/// port whose certificate `ca` signed for `127.0.0.1` and `localhost`. Clients need not
/// present certificates.
pub struct TlsServer {
    pub server: RedisServer,
    pub tls_port: u16,
    pub ca: TestCa,
    _certs: tempfile::TempDir,
}

impl TlsServer {
    pub fn start() -> TlsServer {
        let ca = TestCa::new("leasehold test CA");
        let (cert, key) = ca.server_cert(&["127.0.0.1", "localhost"]);
        TlsServer::start_with_cert(ca, &cert, &key)
    }

    /// A server presenting `cert` (PEM, with its `key`), which `ca` should have signed.
    pub fn start_with_cert(ca: TestCa, cert: &str, key: &str) -> TlsServer {
        let certs = tempfile::Builder::new()
            .prefix("leasehold-tls-")
            .tempdir()
            .unwrap();
        let path = |name: &str| certs.path().join(name).to_string_lossy().into_owned();
        let (cert_file, key_file, ca_file) =
            (path("server.crt"), path("server.key"), path("ca.crt"));
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        std::fs::write(&ca_file, &ca.pem).unwrap();
        let mut last = None;
        // Another process may take the probed TLS port before the server binds it: retry.
        for _ in 0..5 {
            let tls_port = free_port();
            let port = tls_port.to_string();
            let args = [
                "--tls-port",
                &port,
                "--tls-cert-file",
                &cert_file,
                "--tls-key-file",
                &key_file,
                "--tls-ca-cert-file",
                &ca_file,
                "--tls-auth-clients",
                "no",
            ];
            match RedisServer::start_with(&args) {
                Ok(server) => {
                    return TlsServer {
                        server,
                        tls_port,
                        ca,
                        _certs: certs,
                    }
                }
                Err(e) => last = Some(e),
            }
        }
        panic!("cannot start redis-server with TLS: {last:?}");
    }

    /// `rediss://<host>:<tls port>`.
    pub fn url(&self, host: &str) -> String {
        format!("rediss://{host}:{}", self.tls_port)
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
