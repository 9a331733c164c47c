//! Fuzzing of every hand-written reply parser with arbitrary `fred` values: whatever Redis (or a
//! foreign writer, or a bug in a script) answers, a parser returns a value or
//! [`Error::Protocol`], and never panics (no out-of-bounds index, no overflow, no unwrap).

use std::time::Duration;

use fred::error::{Error as RedisError, ErrorKind};
use fred::types::{Map, Value};
use proptest::prelude::*;

use crate::base::error::Error;
use crate::base::lease_id::LeaseId;
use crate::lease::leases::Attachment;
use crate::redis::reply::Reply;

/// Strings the parsers look for (statuses, numbers, lease ids, log ids, attachments), so the
/// fuzzer reaches past the first check, and arbitrary ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "held", "leader", "wait", "locked", "gone", "lost", "size", "ready", "done", "full",
            "ok", "", "0", "1", "-1", "1.5", "nan", "inf",
        ])
        .prop_map(str::to_owned),
        "-?[0-9]{1,22}",
        "[0-9]{1,22}-[0-9]{1,22}",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(\\.[a-z0-9.]{0,4})?",
        "(z|k|w) [^ ]{0,6}( .{0,6})?",
        any::<String>(),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        prop::sample::select(vec![i64::MIN, -1, 0, 1, i64::MAX]).prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Double),
        prop::sample::select(vec![f64::NAN, f64::INFINITY, -0.0, 9.0e15, 1.0e300])
            .prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        text().prop_map(|s| Value::String(s.into())),
        any::<Vec<u8>>().prop_map(|b| Value::Bytes(b.into())),
        Just(Value::Queued),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 48, 12, |inner| {
        prop_oneof![
            4 => prop::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
            1 => prop::collection::vec((text(), inner), 0..4)
                .prop_map(|kv| Map::try_from(kv).map_or(Value::Null, Value::Map)),
        ]
    })
}

/// A reply whose first item is a status word: the shape most parsers branch on.
fn status_reply() -> impl Strategy<Value = Value> {
    (text(), prop::collection::vec(value(), 0..10)).prop_map(|(status, mut rest)| {
        rest.insert(0, Value::String(status.into()));
        Value::Array(rest)
    })
}

fn reply() -> impl Strategy<Value = Value> {
    prop_oneof![value(), status_reply()]
}

/// Ok, or the error a parser may report.
fn checked<T: std::fmt::Debug>(what: &str, r: crate::Result<T>) {
    if let Err(e) = r {
        assert!(matches!(e, Error::Protocol { .. }), "{what}: {e:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn reply_accessors(v in value(), n in 0usize..16) {
        let r = Reply::new("fuzz");
        checked("int", r.int(&v));
        checked("uint", r.uint(&v));
        checked("string", r.string(&v));
        checked("array_min", r.array_min(v.clone(), n));
        checked("array", r.array(v));
    }

    #[test]
    fn lock_and_barrier_replies(v in reply()) {
        checked("parse_turn", crate::wait::contend::parse_turn::<std::convert::Infallible>("fuzz", v.clone()).map(drop));
        checked("parse_acquire", crate::sync::semaphore::parse_acquire(v.clone()).map(drop));
        checked("parse_step", crate::recipes::double_barrier::parse_step(v.clone()).map(drop));
        checked("parse_check", crate::recipes::barrier::parse_check(v));
    }

    #[test]
    fn lease_replies(v in reply(), n in 0usize..8, id in any::<u128>()) {
        checked("parse_renew", crate::lease::leases::parse_renew(v.clone(), n));
        checked("parse_ttl", crate::lease::leases::parse_ttl(LeaseId::from_u128(id), v.clone()));
        checked("parse_list_row", crate::lease::leases::parse_list_row(v.clone()));
        checked("parse_grant", crate::lease::leases::parse_grant(v.clone()));
        checked("parse_adopt", crate::lease::leases::parse_adopt(v));
    }

    #[test]
    fn election_key_queue_and_inspect_replies(v in reply(), key in text()) {
        checked("parse_log", crate::sync::election::parse_log(v.clone()).map(drop));
        checked("parse_put", crate::kv::parse_put(v.clone()));
        checked("parse_get", crate::kv::parse_get(&key, v.clone()));
        checked("parse_range", crate::kv::parse_range(v.clone()));
        checked("parse_inspect", crate::inspect::parse_inspect(crate::QueueKind::Election, v.clone()));
        checked("parse_pop", crate::recipes::queue::parse_pop(v));
    }

    /// Replies built as the scripts build them, with every field fuzzed.
    #[test]
    fn well_shaped_replies_with_fuzzed_fields(fields in prop::collection::vec(leaf(), 0..40)) {
        let with = |head: &[Value]| {
            let mut items = head.to_vec();
            items.extend(fields.iter().cloned());
            Value::Array(items)
        };
        checked("parse_renew", crate::lease::leases::parse_renew(with(&[]), fields.len().saturating_sub(4)));
        checked("parse_log", crate::sync::election::parse_log(with(&[])).map(drop));
        checked("parse_range", crate::kv::parse_range(with(&[])));
        checked("parse_inspect", crate::inspect::parse_inspect(crate::QueueKind::Semaphore, Value::Array(vec![with(&[])])));
        checked("parse_list_row", crate::lease::leases::parse_list_row(with(&[])));
        checked("parse_ttl", crate::lease::leases::parse_ttl(LeaseId::from_u128(1), with(&[])));
        for status in ["held", "leader", "wait", "full", "size", "ok"] {
            let v = with(&[Value::String(status.into())]);
            checked("parse_turn", crate::wait::contend::parse_turn::<std::convert::Infallible>("fuzz", v.clone()).map(drop));
            checked("parse_acquire", crate::sync::semaphore::parse_acquire(v.clone()).map(drop));
            checked("parse_step", crate::recipes::double_barrier::parse_step(v.clone()).map(drop));
            checked("parse_put", crate::kv::parse_put(v));
        }
    }

    #[test]
    fn strings_of_members_and_attachments(s in text()) {
        let _ = Attachment::parse(&s);
        let _ = crate::recipes::queue::item_value(&s);
        let _ = s.parse::<LeaseId>();
    }

    /// Error replies: any text, any kind, typed or passed on, never a panic.
    #[test]
    fn error_replies_are_classified(
        prefix in prop::sample::select(vec![
            "", "LHWRONGTYPE ", "LHCORRUPT ", "LHARG ", "NOPERM ", "NOSCRIPT ", "WRONGTYPE ",
            "ERR The user executing the script can't ",
        ]),
        rest in text(),
        suffix in prop::sample::select(vec!["", " script: ", " script: abc, on @user_script:1."]),
        kind in prop::sample::select(vec![
            ErrorKind::Unknown, ErrorKind::Timeout, ErrorKind::IO, ErrorKind::Canceled,
            ErrorKind::Auth, ErrorKind::InvalidArgument, ErrorKind::Cluster, ErrorKind::Parse,
        ]),
    ) {
        let e = crate::redis::classify::classify(
            RedisError::new(kind, format!("{prefix}{rest}{suffix}")),
            Duration::from_secs(1),
        );
        if let Error::WrongType { key, .. } | Error::CorruptData { key, .. } = &e {
            prop_assert!(!key.contains(" script: "), "{e:?}");
        }
    }
}

/// Inputs the fuzzer found that panicked before they were fixed.
#[test]
fn regressions() {
    // A server time in seconds so large that it overflowed when converted to µs.
    let v = Value::Array(vec![
        Value::Integer(i64::MAX),
        Value::Integer(0),
        Value::Integer(0),
        Value::String("replid".into()),
    ]);
    assert!(matches!(
        crate::lease::leases::parse_renew(v, 0),
        Err(Error::Protocol { .. })
    ));
    // A TTL beyond MAX_TTL: the keepalive would add it to an Instant and overflow.
    let v = Value::Array(vec![
        Value::Integer(1),
        Value::Integer(0),
        Value::Integer(0),
        Value::String("replid".into()),
        Value::Integer(i64::MAX),
    ]);
    assert!(matches!(
        crate::lease::leases::parse_renew(v, 1),
        Err(Error::Protocol { .. })
    ));
    assert!(matches!(
        crate::lease::leases::parse_grant(Value::Integer(i64::MAX)),
        Err(Error::Protocol { .. })
    ));
}
