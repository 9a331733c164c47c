//! Elections against a real redis-server: FIFO leadership, resume, proclaim, gap-free observe.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use leasehold::{Error, LeaderEvent, SessionOptions};
use support::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Next event within 5 s.
async fn next<S>(s: &mut S) -> LeaderEvent
where
    S: futures_util::Stream<Item = leasehold::Result<LeaderEvent>> + Unpin,
{
    tokio::time::timeout(secs(5), s.next())
        .await
        .expect("an event within 5 s")
        .expect("stream goes on")
        .expect("no error")
}

fn value(ev: &LeaderEvent) -> &str {
    &ev.leader.as_ref().expect("a leader").value
}

#[tokio::test]
async fn closing_the_leader_elects_the_next_and_observers_see_it() {
    let server = server();
    let client = client(&server, "e1").await;
    let (s1, s2, s3) = (
        client.session().await.unwrap(),
        client.session().await.unwrap(),
        client.session().await.unwrap(),
    );
    let t1 = s1.election("lead").unwrap().campaign("one").await.unwrap();
    let mut observer = Box::pin(s3.election("lead").unwrap().observe());
    let first = next(&mut observer).await;
    assert_eq!(value(&first), "one");
    assert_eq!(first.leader.as_ref().unwrap().lease, s1.lease());
    assert_eq!(first.leader.as_ref().unwrap().fencing_token, t1);

    let e2 = s2.election("lead").unwrap();
    let campaign = tokio::spawn(async move { e2.campaign("two").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!campaign.is_finished());
    s1.close().await.unwrap();
    let t2 = tokio::time::timeout(secs(2), campaign)
        .await
        .expect("next candidate elected")
        .unwrap()
        .unwrap();
    assert!(t2 > t1);
    let ev = next(&mut observer).await;
    assert_eq!(value(&ev), "two");
    assert_eq!(ev.leader.as_ref().unwrap().fencing_token, t2);
    assert!(ev.revision > first.revision);
    assert!(!ev.after_gap);
}

#[tokio::test]
async fn recampaign_with_the_same_session_resumes_and_updates_the_value() {
    let server = server();
    let client = client(&server, "e2").await;
    let s = client.session().await.unwrap();
    let t1 = s.election("x").unwrap().campaign("v1").await.unwrap();
    let mut observer = Box::pin(s.election("x").unwrap().observe());
    assert_eq!(value(&next(&mut observer).await), "v1");
    let again = s.election("x").unwrap();
    let t2 = tokio::time::timeout(secs(2), again.campaign("v2"))
        .await
        .expect("no deadlock")
        .unwrap();
    assert_eq!(t2, t1, "same candidacy");
    assert_eq!(value(&next(&mut observer).await), "v2");
    assert_eq!(again.leader().await.unwrap().unwrap().value, "v2");
}

#[tokio::test]
async fn a_new_session_reusing_the_leaders_lease_wins_at_once() {
    let server = server();
    let old = client(&server, "e3").await;
    let s = old
        .session_with(SessionOptions::new().on_drop(leasehold::OnDrop::Orphan))
        .await
        .unwrap();
    let lease = s.lease();
    let token = s.election("x").unwrap().campaign("before").await.unwrap();
    // A waiting rival, so "at once" is not "because nobody else wanted it".
    let rival = old.session().await.unwrap();
    let e = rival.election("x").unwrap();
    let rival_campaign = tokio::spawn(async move { e.campaign("rival").await });
    drop(s); // the process "restarts": its lease is left to expire, not revoked

    let new = client(&server, "e3").await;
    let resumed = new
        .session_with(SessionOptions::new().lease(lease))
        .await
        .unwrap();
    let again = tokio::time::timeout(secs(2), resumed.election("x").unwrap().campaign("after"))
        .await
        .expect("wins at once")
        .unwrap();
    assert_eq!(again, token);
    assert!(!rival_campaign.is_finished());
    rival_campaign.abort();
}

#[tokio::test]
async fn observe_yields_every_proclaim_in_order_even_for_a_slow_consumer() {
    let server = server();
    let client = client(&server, "e4").await;
    let leader = client.session().await.unwrap();
    let watcher = client.session().await.unwrap();
    let e = leader.election("p").unwrap();
    e.campaign("abc").await.unwrap();
    let mut observer = Box::pin(watcher.election("p").unwrap().observe());
    let first = next(&mut observer).await;
    // The observer is not polled while these happen (a blocked consumer).
    e.proclaim("def").await.unwrap();
    e.proclaim("ghi").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = next(&mut observer).await;
    let third = next(&mut observer).await;
    assert_eq!(
        [value(&first), value(&second), value(&third)],
        ["abc", "def", "ghi"]
    );
    assert!(first.revision < second.revision && second.revision < third.revision);
    // And nothing else.
    let more = tokio::time::timeout(Duration::from_millis(300), observer.next()).await;
    assert!(more.is_err(), "unexpected event {more:?}");
}

#[tokio::test]
async fn an_observer_left_behind_by_log_trimming_is_told_and_resynced() {
    let server = server();
    let client = client(&server, "e5").await;
    let s = client.session().await.unwrap();
    let e = s.election("busy").unwrap();
    e.campaign("v0").await.unwrap();
    let mut observer = Box::pin(s.election("busy").unwrap().observe());
    assert_eq!(value(&next(&mut observer).await), "v0");
    for i in 1..=1300 {
        e.proclaim(&format!("v{i}")).await.unwrap();
    }
    let ev = next(&mut observer).await;
    assert!(ev.after_gap, "{ev:?}");
    assert_eq!(value(&ev), "v1300");
    e.proclaim("after").await.unwrap();
    let ev = next(&mut observer).await;
    assert!(!ev.after_gap);
    assert_eq!(value(&ev), "after");
}

#[tokio::test]
async fn resign_elects_the_next_candidate_promptly() {
    let server = server();
    let client = client(&server, "e6").await;
    let s1 = client.session().await.unwrap();
    let s2 = client.session().await.unwrap();
    let e1 = s1.election("r").unwrap();
    let t1 = e1.campaign("a").await.unwrap();
    let e2 = s2.election("r").unwrap();
    let c = tokio::spawn(async move { (e2.campaign("b").await, Instant::now()) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    e1.resign().await.unwrap();
    let (t2, at) = tokio::time::timeout(secs(2), c).await.unwrap().unwrap();
    println!("resign -> next leader elected after {:?}", at - t);
    assert!(t2.unwrap() > t1);
    assert!(matches!(
        e1.proclaim("x").await,
        Err(Error::NotLeader { .. })
    ));
    e1.resign().await.unwrap(); // not leading: a no-op
}

#[tokio::test]
async fn an_election_named_like_a_prefix_of_another_is_independent() {
    let server = server();
    let client = client(&server, "e7").await;
    let s1 = client.session().await.unwrap();
    let s2 = client.session().await.unwrap();
    s1.election("job").unwrap().campaign("a").await.unwrap();
    tokio::time::timeout(secs(2), s2.election("job-2").unwrap().campaign("b"))
        .await
        .expect("independent")
        .unwrap();
    tokio::time::timeout(secs(2), s2.election("jo").unwrap().campaign("c"))
        .await
        .expect("independent")
        .unwrap();
    assert_eq!(
        s2.election("job")
            .unwrap()
            .leader()
            .await
            .unwrap()
            .unwrap()
            .value,
        "a"
    );
}

#[tokio::test]
async fn observers_see_an_expired_leader_replaced_within_ttl_plus_a_renewal_interval() {
    let server = server();
    let client = client(&server, "e8").await;
    let ttl = secs(2);
    let s1 = client
        .session_with(SessionOptions::new().ttl(ttl))
        .await
        .unwrap();
    s1.election("q").unwrap().campaign("frozen").await.unwrap();
    let s2 = client.session().await.unwrap();
    let e2 = s2.election("q").unwrap();
    let c = tokio::spawn(async move { e2.campaign("next").await });
    let watcher = client.session().await.unwrap();
    let mut observer = Box::pin(watcher.election("q").unwrap().observe());
    assert_eq!(value(&next(&mut observer).await), "frozen");
    let t = Instant::now();
    s1.orphan(); // stops renewing: the lease runs out on the server
    let ev = next(&mut observer).await;
    let took = t.elapsed();
    println!("orphaned leader -> observer sees the next after {took:?} (TTL {ttl:?})");
    assert_eq!(value(&ev), "next");
    assert!(
        took <= ttl + ttl / 3 + Duration::from_millis(500),
        "{took:?}"
    );
    tokio::time::timeout(secs(2), c)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_dropped_campaign_withdraws_and_a_withdrawn_waiter_is_told() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "e9").await;
    let s1 = client.session().await.unwrap();
    s1.election("w").unwrap().campaign("a").await.unwrap();
    let s2 = client.session().await.unwrap();
    let e2 = s2.election("w").unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), e2.campaign("b"))
            .await
            .is_err()
    );
    assert!(
        eventually(secs(2), || async {
            zcard(&raw, "{e9}:election:w").await == 1
        })
        .await,
        "dropped campaign withdrew"
    );
    // A waiting candidacy removed behind its back (here: straight through the script) is told.
    let e2b = s2.election("w").unwrap();
    let c = tokio::spawn(async move { e2b.campaign("b").await });
    assert!(
        eventually(secs(2), || async {
            zcard(&raw, "{e9}:election:w").await == 2
        })
        .await
    );
    let lease = s2.lease().to_string();
    eval_script(
        &raw,
        "election_resign",
        vec![
            "{e9}:rev".into(),
            "{e9}:leases".into(),
            "{e9}:election:w".into(),
            "{e9}:election-values:w".into(),
            "{e9}:election-log:w".into(),
            format!("{{e9}}:attached:{lease}"),
        ],
        vec![lease.clone(), format!("{lease}.c"), "0".into()],
    )
    .await
    .unwrap();
    let err = tokio::time::timeout(secs(2), c)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err}");
}

#[tokio::test]
async fn bad_values_and_names_are_rejected() {
    let server = server();
    let client = client(&server, "e10").await;
    let s = client.session().await.unwrap();
    assert!(matches!(s.election(""), Err(Error::InvalidName { .. })));
    let e = s.election("v").unwrap();
    let huge = "x".repeat(leasehold::MAX_VALUE_LEN + 1);
    assert!(matches!(
        e.campaign(&huge).await,
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(matches!(
        e.proclaim("x").await,
        Err(Error::NotLeader { .. })
    ));
    let raw = raw(&server).await;
    let _: () = cmd(&raw, "SET", &["{e10}:election-log:v", "x"])
        .await
        .unwrap();
    let err = e.campaign("ok").await.unwrap_err();
    assert!(
        matches!(err, Error::WrongType { ref key, .. } if key == "{e10}:election-log:v"),
        "{err}"
    );
    assert_eq!(zcard(&raw, "{e10}:election:v").await, 0, "nothing written");
}

#[tokio::test]
async fn a_pruned_leaders_value_does_not_linger() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "e11").await;
    let s1 = client
        .session_with(SessionOptions::new().ttl(secs(1)))
        .await
        .unwrap();
    s1.election("v")
        .unwrap()
        .campaign("big value")
        .await
        .unwrap();
    let s2 = client.session().await.unwrap();
    let e2 = s2.election("v").unwrap();
    let c = tokio::spawn(async move { e2.campaign("next").await });
    s1.orphan();
    tokio::time::timeout(secs(3), c)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // sweeps run
    let n: u64 = cmd(&raw, "HLEN", &["{e11}:election-values:v"])
        .await
        .unwrap();
    assert_eq!(n, 1, "only the live candidate's value");
}

/// An observer polled while nobody has led yet, then left alone: it gets the first leader and
/// every later change, not only the latest.
#[tokio::test]
async fn an_observer_opened_before_anyone_led_sees_every_change() {
    let server = server();
    let client = client(&server, "e10").await;
    let leader = client.session().await.unwrap();
    let watcher = client.session().await.unwrap();
    let mut observer = Box::pin(watcher.election("first").unwrap().observe());
    // Polled once while the log is empty: nothing to see yet.
    let early = tokio::time::timeout(Duration::from_millis(200), observer.next()).await;
    assert!(early.is_err(), "unexpected event {early:?}");
    let e = leader.election("first").unwrap();
    e.campaign("0").await.unwrap();
    for v in ["1", "2", "3", "4"] {
        e.proclaim(v).await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(value(&next(&mut observer).await).to_owned());
    }
    assert_eq!(seen, ["0", "1", "2", "3", "4"]);
}

/// The values of the election log's entries, oldest first.
async fn log_values(raw: &fred::clients::Client, key: &str) -> Vec<String> {
    let entries: Vec<(String, Vec<String>)> = cmd(raw, "XRANGE", &[key, "-", "+"]).await.unwrap();
    entries
        .into_iter()
        .map(|(_, f)| {
            f.chunks(2)
                .find(|kv| kv[0] == "value")
                .map(|kv| kv[1].clone())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn the_log_is_capped_in_bytes_and_observers_read_large_values_in_order() {
    let server = server();
    let raw = raw(&server).await;
    let client = client(&server, "e_bytes").await;
    let session = client.session().await.unwrap();
    let election = session.election("big").unwrap();
    election.campaign("v0").await.unwrap();
    let mut observer = Box::pin(election.observe());
    assert_eq!(value(&next(&mut observer).await), "v0");
    let big = |i: usize| format!("{i:03}{}", "x".repeat(leasehold::MAX_VALUE_LEN - 3));

    // 12 values of 512 KiB (6 MiB, within the cap): read in order, none skipped, though one
    // reply carries only part of them.
    for i in 1..=12 {
        election.proclaim(&big(i)).await.unwrap();
    }
    for i in 1..=12 {
        let ev = next(&mut observer).await;
        assert!(!ev.after_gap);
        assert_eq!(&value(&ev)[..3], format!("{i:03}"));
    }

    // 40 more: the log keeps at most ELECTION_LOG_BYTES of values; an observer that fell
    // further behind is told it missed changes and resumes at the current leader.
    for i in 13..=52 {
        election.proclaim(&big(i)).await.unwrap();
    }
    let values = log_values(&raw, "{e_bytes}:election-log:big").await;
    let bytes: usize = values.iter().map(String::len).sum();
    assert!(bytes <= leasehold::ELECTION_LOG_BYTES, "{bytes} bytes kept");
    assert!(bytes + leasehold::MAX_VALUE_LEN > leasehold::ELECTION_LOG_BYTES);
    assert_eq!(&values.last().unwrap()[..3], "052");
    let ev = next(&mut observer).await;
    assert!(ev.after_gap);
    assert_eq!(&value(&ev)[..3], "052");
}

#[tokio::test]
async fn a_candidate_knows_its_own_id_and_revision() {
    let server = server();
    let client = client(&server, "e_rev").await;
    let session = client.session().await.unwrap();
    let election = session.election("lead").unwrap();
    assert_eq!(election.candidate_id(), format!("{}.c", session.lease()));
    assert_eq!(election.revision(), None, "not leading yet");
    let token = election.campaign("a").await.unwrap();
    assert_eq!(election.revision(), Some(token));
    let leader = election.leader().await.unwrap().unwrap();
    assert_eq!(leader.fencing_token, token);
    election.resign().await.unwrap();
    assert_eq!(election.revision(), None);
}
