//! Lock-delay (`Mutex::with_lock_delay`, `ClientBuilder::lock_delay`): a mutex whose holder's
//! session ends without unlocking stays unavailable for the delay after; a clean unlock is not
//! delayed.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leasehold::{Error, SessionOptions};
use support::*;

const DELAY: Duration = Duration::from_secs(2);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// When the lease of `session` expires by the server's registry (ms since the epoch).
async fn expiry_ms(raw: &fred::clients::Client, ns: &str, session: &leasehold::Session) -> u64 {
    let score: String = cmd(
        raw,
        "ZSCORE",
        &[&format!("{{{ns}}}:leases"), &session.lease().to_string()],
    )
    .await
    .unwrap();
    score.parse().unwrap()
}

/// A holder that stops renewing (a long pause): the next waiter gets the lock no earlier than
/// its lease's expiry + the delay, and well within a renewal interval of that.
#[tokio::test]
async fn an_expired_holder_delays_the_next_one_by_the_lock_delay() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "ld1").await;
    let a = client
        .session_with(SessionOptions::new().ttl(secs(1)))
        .await
        .unwrap();
    let b = client.session().await.unwrap();
    let held = a
        .mutex("m")
        .unwrap()
        .with_lock_delay(DELAY)
        .unwrap()
        .lock()
        .await
        .unwrap();
    let waiting = spawn_lock(b.mutex("m").unwrap());
    a.orphan();
    let expiry = expiry_ms(&raw, "ld1", &a).await;
    tokio::time::timeout(secs(10), waiting)
        .await
        .expect("acquired after the delay")
        .unwrap()
        .unwrap();
    let got = now_ms();
    let delay = DELAY.as_millis() as u64;
    assert!(got >= expiry + delay, "{} ms early", expiry + delay - got);
    // Within a renewal interval of a 3 s session.
    assert!(
        got <= expiry + delay + 1000,
        "{} ms late",
        got - expiry - delay
    );
    drop(held);
}

/// A holder revoked while it holds (an operator's `lease revoke`): the delay runs from the
/// revoke.
#[tokio::test]
async fn a_revoked_holder_delays_the_next_one() {
    let server = server();
    let client = leasehold::Client::builder()
        .url(server.url())
        .namespace("ld2")
        .lock_delay(DELAY)
        .build()
        .await
        .unwrap();
    let a = client.session().await.unwrap();
    let b = client.session().await.unwrap();
    let mutex = a.mutex("m").unwrap();
    assert_eq!(mutex.lock_delay(), DELAY, "the client's default");
    let _held = mutex.lock().await.unwrap();
    let waiting = spawn_lock(b.mutex("m").unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let revoked = now_ms();
    client.revoke(a.lease()).await.unwrap();
    tokio::time::timeout(secs(10), waiting)
        .await
        .expect("acquired after the delay")
        .unwrap()
        .unwrap();
    let got = now_ms();
    assert!(
        got >= revoked + DELAY.as_millis() as u64,
        "{} ms after",
        got - revoked
    );
}

/// A clean unlock is not delayed, and neither is the next holder when a waiter behind the
/// holder died while waiting (it never owned).
#[tokio::test]
async fn a_clean_unlock_and_a_dead_waiter_are_not_delayed() {
    let server = server();
    let client = client(&server, "ld3").await;
    let long = secs(30);
    let a = client.session().await.unwrap();
    let c = client
        .session_with(SessionOptions::new().ttl(secs(1)))
        .await
        .unwrap();
    let d = client.session().await.unwrap();
    let delayed = |s: &leasehold::Session| s.mutex("m").unwrap().with_lock_delay(long).unwrap();
    let held = delayed(&a).lock().await.unwrap();
    let dying = spawn_lock(delayed(&c));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let next = spawn_lock(delayed(&d));
    c.orphan();
    assert!(matches!(
        tokio::time::timeout(secs(5), dying).await.unwrap().unwrap(),
        Err(Error::SessionLost { .. })
    ));
    // c's lease has expired, its entry still queued between a and d.
    tokio::time::sleep(secs(1)).await;
    held.unlock().await.unwrap();
    tokio::time::timeout(secs(5), next)
        .await
        .expect("not delayed by a clean unlock, nor by a waiter that died")
        .unwrap()
        .unwrap();
}

/// Delays past the limit are refused before any I/O.
#[tokio::test]
async fn a_lock_delay_past_the_limit_is_refused() {
    let server = server();
    let client = client(&server, "ld4").await;
    let session = client.session().await.unwrap();
    let too_long = leasehold::MAX_LOCK_DELAY + Duration::from_millis(1);
    assert!(matches!(
        session.mutex("m").unwrap().with_lock_delay(too_long),
        Err(Error::InvalidArgument(_))
    ));
    let built = leasehold::Client::builder()
        .url(server.url())
        .lock_delay(too_long)
        .build()
        .await;
    assert!(matches!(built, Err(Error::InvalidArgument(_))));
}

/// A guard dropped just before its session is closed: the guard's release may still be on its
/// way when the revoke runs, and a clean close is no lost holder: no delay either way.
#[tokio::test]
async fn dropping_a_guard_then_closing_the_session_is_not_delayed() {
    let server = server();
    let client = client(&server, "ld5").await;
    for _ in 0..5 {
        let a = client.session().await.unwrap();
        let guard = a
            .mutex("m")
            .unwrap()
            .with_lock_delay(secs(30))
            .unwrap()
            .lock()
            .await
            .unwrap();
        drop(guard);
        a.close().await.unwrap();
        let b = client.session().await.unwrap();
        let next = tokio::time::timeout(secs(5), b.mutex("m").unwrap().lock())
            .await
            .expect("not delayed by a clean close")
            .unwrap();
        next.unlock().await.unwrap();
        b.close().await.unwrap();
    }
}
