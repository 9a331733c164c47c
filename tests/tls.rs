//! TLS against a real redis-server with a test-made CA: sessions, mutex handoff and election
//! observe (both need the pub/sub doorbell) over `rediss://`, and typed, bounded failures
//! when the server's certificate is not trusted.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use leasehold::{Client, Error};
use support::tls::{TestCa, TlsServer};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn tls_client(url: &str, ca_pem: &str, ns: &str) -> leasehold::Result<Client> {
    Client::builder()
        .url(url)
        .tls_root_ca_pem(ca_pem)
        .namespace(ns)
        .connect_timeout(secs(3))
        .command_timeout(secs(2))
        .build()
        .await
}

#[tokio::test]
async fn sessions_locks_and_elections_work_over_tls() {
    let tls = TlsServer::start();
    // One client by IP address, one by host name: both certificate names are checked.
    let a = tls_client(&tls.url("127.0.0.1"), &tls.ca.pem, "tls")
        .await
        .expect("connect by IP");
    let b = tls_client(&tls.url("localhost"), &tls.ca.pem, "tls")
        .await
        .expect("connect by name");
    let (sa, sb) = (a.session().await.unwrap(), b.session().await.unwrap());

    // Handoff between two clients: the waiter is woken by the releaser's doorbell message.
    // Its only other wake-up is the holder's lease expiry (60 s away), so a quick handoff
    // proves pub/sub works over TLS.
    let held = sa.mutex("job").unwrap().lock().await.unwrap();
    let waiter = sb.mutex("job").unwrap();
    let waiting = tokio::spawn(async move { waiter.lock().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the lock is held");
    let released = Instant::now();
    held.unlock().await.unwrap();
    let guard = tokio::time::timeout(secs(5), waiting)
        .await
        .expect("handed off by the doorbell, not by lease expiry")
        .unwrap()
        .unwrap();
    assert!(released.elapsed() < secs(5));
    assert!(guard.fencing_token() > 0);
    guard.unlock().await.unwrap();

    // Election: observe from one client, campaign from the other.
    let mut observer = Box::pin(sa.election("lead").unwrap().observe());
    let token = sb.election("lead").unwrap().campaign("b").await.unwrap();
    let event = loop {
        let ev = tokio::time::timeout(secs(5), observer.next())
            .await
            .expect("an event within 5 s")
            .expect("stream goes on")
            .expect("no error");
        if ev.leader.is_some() {
            break ev;
        }
    };
    let leader = event.leader.unwrap();
    assert_eq!(leader.value, "b");
    assert_eq!(leader.lease, sb.lease());
    assert_eq!(leader.fencing_token, token);
    drop(observer);

    sa.close().await.unwrap();
    sb.close().await.unwrap();
}

/// Build must fail with `Error::Tls` within the connect timeout (plus slack), not hang.
async fn expect_tls_error(builder: leasehold::ClientBuilder) -> String {
    let started = Instant::now();
    let result = tokio::time::timeout(secs(10), builder.connect_timeout(secs(3)).build())
        .await
        .expect("build gives up by itself");
    assert!(started.elapsed() < secs(6), "took {:?}", started.elapsed());
    match result {
        Err(Error::Tls(cause)) => cause.message().to_owned(),
        Err(other) => panic!("expected Error::Tls, got {other:?}"),
        Ok(_) => panic!("connected without trusting the server"),
    }
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_a_tls_error() {
    let tls = TlsServer::start();
    // The system's roots do not know the test CA.
    let message = expect_tls_error(Client::builder().url(tls.url("127.0.0.1"))).await;
    assert!(
        message.contains("certificate"),
        "the message says why: {message}"
    );
    // Nor does another CA.
    let other = TestCa::new("some other CA");
    let message = expect_tls_error(
        Client::builder()
            .url(tls.url("127.0.0.1"))
            .tls_root_ca_pem(other.pem.as_str()),
    )
    .await;
    assert!(message.contains("certificate"), "{message}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_tls_error() {
    let ca = TestCa::new("leasehold test CA");
    let ca_pem = ca.pem.clone();
    let (cert, key) = ca.server_cert(&["db.example"]);
    let tls = TlsServer::start_with_cert(ca, &cert, &key);
    let message = expect_tls_error(
        Client::builder()
            .url(tls.url("127.0.0.1"))
            .tls_root_ca_pem(ca_pem),
    )
    .await;
    assert!(message.contains("certificate"), "{message}");
}

/// A plain Redis port waits for the end of a line that a TLS hello never sends: the handshake
/// cannot fail, so `build` gives up at the connect timeout.
#[tokio::test]
async fn tls_to_a_plain_port_gives_up_at_the_connect_timeout() {
    let tls = TlsServer::start();
    let started = Instant::now();
    let e = Client::builder()
        .url(format!("rediss://127.0.0.1:{}", tls.server.port()))
        .tls_root_ca_pem(tls.ca.pem.as_str())
        .connect_timeout(secs(1))
        .build()
        .await
        .unwrap_err();
    assert!(started.elapsed() < secs(3), "took {:?}", started.elapsed());
    assert!(matches!(e, Error::Unreachable(_) | Error::Tls(_)), "{e:?}");
}

#[tokio::test]
async fn ca_roots_with_a_plain_url_are_refused_before_any_io() {
    let e = Client::builder()
        .url("redis://127.0.0.1:1")
        .tls_root_ca_pem("-----BEGIN CERTIFICATE-----\n")
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(ref m) if m.contains("rediss://")),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_cli_trusts_a_ca_given_with_cacert() {
    let tls = TlsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &tls.ca.pem).unwrap();
    let run = |extra: &[&std::ffi::OsStr]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_leasehold"));
        c.env_remove("REDIS_URL")
            .env_remove("LEASEHOLD_CACERT")
            .args(["--url", &tls.url("127.0.0.1"), "--namespace", "tls-cli"])
            .args(extra)
            .args(["lease", "grant", "30"])
            .kill_on_drop(true);
        async move {
            tokio::time::timeout(secs(20), c.output())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let ok = run(&["--cacert".as_ref(), ca_file.as_os_str()]).await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{ok:?}");
    assert!(stdout.contains("granted"), "{stdout}");

    let untrusted = run(&[]).await;
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(
        untrusted.status.code(),
        Some(5),
        "TLS failed: {untrusted:?}"
    );
    assert!(stderr.contains("not signed by a trusted CA"), "{stderr}");
}
