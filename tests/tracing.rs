//! leasehold's spans and events as a user's `tracing-subscriber` prints them (own test binary:
//! the subscriber is process-global).

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tracing_subscriber::fmt::format::FmtSpan;

/// Everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_lock_cycle_shows_its_spans_with_their_fields() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let server = server();
    let client = client(&server, "tr").await;
    let session = client
        .session_with(leasehold::SessionOptions::new().ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    let guard = session.mutex("m").unwrap().lock().await.unwrap();
    let token = guard.fencing_token();
    tokio::time::sleep(Duration::from_millis(500)).await; // a renewal
    guard.unlock().await.unwrap();
    session.close().await.unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = |span: &str| {
        text.lines()
            .find(|l| l.contains(span) && l.contains("close"))
            .unwrap_or_else(|| panic!("no closed {span} span in:\n{text}"))
            .to_owned()
    };
    let open = line("leasehold.session_open");
    assert!(
        open.contains("namespace=\"tr\"") || open.contains("namespace=tr"),
        "{open}"
    );
    assert!(
        open.contains(&format!("lease={}", session.lease())),
        "{open}"
    );
    let acquire = line("leasehold.acquire");
    for field in [
        "kind=\"mutex\"".to_owned(),
        "queue=\"{tr}:mutex:m\"".to_owned(),
        format!("fencing_token={token}"),
        "waited_ms=".to_owned(),
    ] {
        assert!(acquire.contains(&field), "{field} in {acquire}");
    }
    let release = line("leasehold.release");
    assert!(
        release.contains(&format!("fencing_token={token}")),
        "{release}"
    );
    assert!(release.contains("held_ms="), "{release}");
    assert!(line("leasehold.renew").contains("leases="), "renewals");
    assert!(text.contains("acquired"), "the acquisition event");
}
