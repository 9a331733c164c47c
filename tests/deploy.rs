//! The deployment files: the Grafana dashboard queries only metrics the crate emits (and shows
//! all of them), the metrics example's exposition is valid Prometheus text, and the Prometheus
//! and docker-compose configurations load.
//!
//! The checks that need `promtool` or `docker-compose` are skipped with a note on stderr when
//! the tool is missing, unless `LEASEHOLD_REQUIRE_TOOLS=1` (as in CI) makes that a failure.
//! Own test binary: one test installs the process-global metrics recorder.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use leasehold::metrics::{Kind, ALL};
use leasehold_testing::RedisServer;
use serde_json::Value;

// The example's own exporter configuration and workload, run in-process below.
#[allow(dead_code)] // its main() is not called here
#[path = "../examples/metrics.rs"]
mod example;

const DASHBOARD: &str = "deploy/grafana/dashboards/leasehold.json";
const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";
const ALERTS: &str = "deploy/prometheus/alerts.yml";
const ALERTS_TEST: &str = "deploy/prometheus/alerts_test.yml";
const COMPOSE: &str = "docker-compose.yml";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

// ---------------------------------------------------------------------------------------------
// The metric list

#[test]
fn metric_list_is_consistent() {
    let mut seen = BTreeSet::new();
    for m in ALL {
        assert!(seen.insert(m.name), "{} listed twice", m.name);
        assert!(m.name.starts_with("leasehold_"), "{}", m.name);
        match m.kind {
            Kind::Counter => assert!(m.name.ends_with("_total"), "counter {}", m.name),
            Kind::Histogram => {
                assert!(!m.buckets.is_empty(), "histogram {} has buckets", m.name);
                assert!(
                    m.buckets.windows(2).all(|w| w[0] < w[1]),
                    "{} buckets ascend",
                    m.name
                );
            }
            Kind::Gauge => {}
        }
        if m.kind != Kind::Histogram {
            assert!(m.buckets.is_empty(), "{} is no histogram", m.name);
        }
    }
    // Every metric has a description for the recorder (the README's table is generated from
    // them: see the metrics module's unit test).
    assert!(ALL.iter().all(|m| !m.help.is_empty()));
}

// ---------------------------------------------------------------------------------------------
// The dashboard

/// Metric and label names referenced by PromQL expressions.
#[derive(Debug, Default)]
struct Refs {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

/// Keywords other than the grouping ones below.
const KEYWORDS: &[&str] = &[
    "bool", "and", "or", "unless", "offset", "atan2", "inf", "nan",
];
/// Aggregation operators: followed by `(` or by `by (…)` / `without (…)`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a parenthesised list of label names.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Collect what `expr` refers to: an identifier is a metric name unless it is a keyword, an
/// aggregation, a function (followed by `(`), a label name (inside `{…}` or a grouping list),
/// inside a range `[…]`, a string, or a Grafana variable (`$x`).
fn scan(expr: &str, refs: &mut Refs) {
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let (mut braces, mut brackets) = (0usize, 0usize);
    // One entry per open parenthesis: does it hold label names?
    let mut parens: Vec<bool> = Vec::new();
    let mut grouping_next = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '[' => brackets += 1,
            ']' => brackets = brackets.saturating_sub(1),
            '(' => parens.push(std::mem::take(&mut grouping_next)),
            ')' => {
                parens.pop();
            }
            '$' => {
                // A Grafana variable: `$name` or `${name}`.
                i += 1;
                while i < chars.len() && (ident(chars[i]) || chars[i] == '{' || chars[i] == '}') {
                    i += 1;
                }
                continue;
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number or a duration (5m, 1e3, 0.99).
                while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
                continue;
            }
            c if ident(c) => {
                let start = i;
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if brackets > 0 {
                } else if braces > 0 || parens.last() == Some(&true) {
                    refs.labels.insert(word);
                } else if KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
                    || GROUPING.contains(&word.to_ascii_lowercase().as_str())
                {
                    grouping_next = GROUPING.contains(&word.to_ascii_lowercase().as_str());
                } else if next != Some(&'(') && !AGGREGATIONS.contains(&word.as_str()) {
                    refs.metrics.insert(word);
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

/// Every PromQL expression of a Grafana dashboard: panel targets (in rows too) and the
/// template variables' `label_values(metric, label)` queries.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", Value::String(s)) => out.push(s.clone()),
                        ("templating", _) => {}
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    let variables = dashboard["templating"]["list"].as_array().cloned();
    for var in variables.unwrap_or_default() {
        let query = match &var["query"] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("query")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            _ => String::new(),
        };
        if var["type"] != "query" {
            continue;
        }
        // Grafana's label_values(metric, label): the metric part is PromQL, the label is not.
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {query:?}: only label_values(…) is checked"));
        if let Some((metric, _label)) = inner.rsplit_once(',') {
            out.push(metric.trim().to_owned());
        }
    }
    out
}

/// Check that `exprs` name only series the crate exports; returns the crate metrics they
/// cover, or every problem found.
fn check_exprs(exprs: &[String]) -> Result<BTreeSet<&'static str>, Vec<String>> {
    let mut refs = Refs::default();
    for e in exprs {
        scan(e, &mut refs);
    }
    // The series each metric is exported as.
    let mut series: BTreeMap<String, &'static str> = BTreeMap::new();
    for m in ALL {
        if m.kind == Kind::Histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                series.insert(format!("{}{suffix}", m.name), m.name);
            }
        } else {
            series.insert(m.name.to_owned(), m.name);
        }
    }
    let mut labels: BTreeSet<&str> = ["le", "instance", "job"].into();
    labels.extend(ALL.iter().flat_map(|m| m.labels.iter().copied()));

    let mut problems = Vec::new();
    let mut covered = BTreeSet::new();
    for name in &refs.metrics {
        match series.get(name) {
            Some(m) => {
                covered.insert(*m);
            }
            None => problems.push(format!("unknown metric {name:?}")),
        }
    }
    for label in &refs.labels {
        if !labels.contains(label.as_str()) {
            problems.push(format!("unknown label {label:?}"));
        }
    }
    if problems.is_empty() {
        Ok(covered)
    } else {
        Err(problems)
    }
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo(DASHBOARD)).expect("read the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

#[test]
fn dashboard_shows_every_metric_and_only_those() {
    let exprs = dashboard_queries(&dashboard());
    assert!(exprs.len() > 10, "found the queries: {exprs:?}");
    let covered = check_exprs(&exprs).unwrap_or_else(|p| panic!("{DASHBOARD}: {p:#?}"));
    let missing: Vec<&str> = ALL
        .iter()
        .map(|m| m.name)
        .filter(|n| !covered.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "{DASHBOARD} has no panel for {missing:?}"
    );
}

#[test]
fn the_dashboard_check_catches_mistakes() {
    let ok = |e: &str| check_exprs(&[e.to_owned()]);
    assert!(ok(r#"sum by (kind) (rate(leasehold_lock_handoffs_total{instance=~"$instance"}[$__rate_interval]))"#).is_ok());
    assert!(ok(
        "histogram_quantile(0.99, sum by (le) (rate(leasehold_renew_latency_seconds_bucket[5m])))"
    )
    .is_ok());
    for bad in [
        "rate(leasehold_bogus_total[5m])",
        "leasehold_sessions_live + leasehold_sesions_live",
        "sum(rate(leasehold_lock_handoffs[1m]))",
        // A histogram is exported as _bucket, _sum and _count only.
        "leasehold_renew_latency_seconds",
        "sum by (lock_name) (rate(leasehold_lock_handoffs_total[1m]))",
        "rate(leasehold_lock_handoffs_total{name=\"x\"}[1m])",
    ] {
        assert!(ok(bad).is_err(), "{bad} should be refused");
    }
}

#[test]
fn dashboard_is_provisionable() {
    let d = dashboard();
    assert_eq!(d["uid"], "leasehold");
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "panel ids unique"
        );
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{p}: gridPos");
        if p["type"] != "row" {
            // Every query goes to the data source picked by the dashboard variable, which
            // defaults to the provisioned Prometheus.
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(!p["targets"].as_array().expect("targets").is_empty());
        }
    }
}

/// The `expr` of every rule in a rules file (a one-line value, or a folded `>-` block).
fn rule_exprs(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value != ">-" {
            out.push(value.to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.len() - l.trim_start().len() > indent)
            .map(|l| l.trim())
            .collect();
        out.push(block.join(" "));
    }
    out
}

/// The shipped alerts watch only what the crate exports, and pass promtool's checks and their
/// unit tests (`alerts_test.yml`: each alert fires on the series it should, not before).
#[test]
fn alerts_use_only_crate_metrics_and_pass_their_unit_tests() {
    let text = std::fs::read_to_string(repo(ALERTS)).expect("read the alerts");
    let exprs = rule_exprs(&text);
    assert!(exprs.len() >= 8, "{exprs:?}");
    check_exprs(&exprs).unwrap_or_else(|p| panic!("{ALERTS}: {p:#?}"));
    // Every alert has a unit test.
    let tests = std::fs::read_to_string(repo(ALERTS_TEST)).expect("read the alert tests");
    for alert in text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{ALERTS_TEST} does not test {alert}"
        );
    }
    let config = std::fs::read_to_string(repo(PROMETHEUS_CONFIG)).unwrap();
    assert!(
        config.contains("- alerts.yml"),
        "{PROMETHEUS_CONFIG} loads the alerts"
    );
    if !tool("promtool") {
        return;
    }
    run_ok("promtool", &["check", "rules", ALERTS], None, None);
    run_ok("promtool", &["test", "rules", ALERTS_TEST], None, None);
}

/// The dashboard's PromQL parses (as recording rules, with Grafana's variables filled in).
#[test]
fn dashboard_queries_parse() {
    if !tool("promtool") {
        return;
    }
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, e) in dashboard_queries(&dashboard()).iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace('\'', "''");
        rules += &format!("      - record: dashboard:query_{n}\n        expr: '{e}'\n");
    }
    let file = temp_file("rules.yml", &rules);
    run_ok("promtool", &["check", "rules"], Some(file.path()), None);
}

// ---------------------------------------------------------------------------------------------
// The metrics example's exposition

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_exposition_has_every_metric_and_passes_promtool() {
    let recorder = example::exporter().expect("buckets").build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");
    let server = RedisServer::start().expect("start redis-server");

    // Run the example's workload (faults on) until every metric has shown up, at most 60 s.
    let started = Instant::now();
    let render = handle.clone();
    let stop = async move {
        while !missing(&render.render()).is_empty() && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    example::run(&server.url(), true, stop)
        .await
        .expect("the workload runs");
    let text = handle.render();
    assert_eq!(missing(&text), Vec::<&str>::new(), "not exported:\n{text}");

    if tool("promtool") {
        let file = temp_file("metrics.txt", &text);
        run_ok("promtool", &["check", "metrics"], None, Some(file.path()));
    }
}

/// Metrics of `ALL` absent from an exposition; histograms must come with buckets.
fn missing(text: &str) -> Vec<&'static str> {
    ALL.iter()
        .filter(|m| {
            let (kind, sample) = match m.kind {
                Kind::Counter => ("counter", m.name.to_owned()),
                Kind::Gauge => ("gauge", m.name.to_owned()),
                Kind::Histogram => ("histogram", format!("{}_bucket", m.name)),
            };
            let typed = text.contains(&format!("# TYPE {} {kind}\n", m.name));
            let sampled = text.lines().any(|l| {
                l.starts_with(&format!("{sample} ")) || l.starts_with(&format!("{sample}{{"))
            });
            !(typed && sampled)
        })
        .map(|m| m.name)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Prometheus and docker-compose configuration

#[test]
fn prometheus_config_loads() {
    if tool("promtool") {
        run_ok(
            "promtool",
            &["check", "config", PROMETHEUS_CONFIG],
            None,
            None,
        );
    }
}

#[test]
fn compose_file_loads_with_every_profile() {
    let compose = std::fs::read_to_string(repo(COMPOSE)).expect("read docker-compose.yml");
    // Every file the compose file mounts is in the repository.
    for word in compose.split_whitespace() {
        if let Some(path) = word.trim_start_matches("- ").strip_prefix("./") {
            let path = path.split(':').next().unwrap_or(path);
            assert!(
                repo(path).exists(),
                "{COMPOSE} mounts ./{path}, which is missing"
            );
        }
    }
    let profiles: BTreeSet<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("profiles:"))
        .flat_map(|l| l.trim().trim_matches(['[', ']']).split(','))
        .map(|p| p.trim().trim_matches('"'))
        .collect();
    assert_eq!(
        profiles,
        ["cluster", "monitoring", "sentinel"].into(),
        "the profiles the header documents"
    );
    if !tool("docker-compose") {
        return;
    }
    run_ok(
        "docker-compose",
        &["-f", COMPOSE, "config", "-q"],
        None,
        None,
    );
    for p in profiles {
        run_ok(
            "docker-compose",
            &["-f", COMPOSE, "--profile", p, "config", "-q"],
            None,
            None,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tools

/// Is `name` installed? When it is not, say the check is skipped, or fail when
/// `LEASEHOLD_REQUIRE_TOOLS=1`.
fn tool(name: &str) -> bool {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("LEASEHOLD_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{name} is not installed, and LEASEHOLD_REQUIRE_TOOLS=1 requires it"
        );
        // Straight to stderr: the test harness would swallow println! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {name} is not installed (LEASEHOLD_REQUIRE_TOOLS=1 makes this a failure)"
        );
    }
    found
}

/// Run `program args… [file]` in the repository (with `stdin` from a file) and fail with its
/// output unless it succeeds within 60 s.
fn run_ok(program: &str, args: &[&str], file: Option<&Path>, stdin: Option<&Path>) {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(repo(""))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(f) = file {
        cmd.arg(f);
    }
    if let Some(f) = stdin {
        cmd.stdin(std::fs::File::open(f).expect("open stdin file"));
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("run {program}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{program} {args:?} took more than 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("collect output");
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn temp_file(name: &str, contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(&format!("-{name}"))
        .tempfile()
        .expect("temp file");
    f.write_all(contents.as_bytes()).expect("write temp file");
    f
}
