//! A `metrics` recorder that keeps totals only: counters and gauges as atomics, histograms as
//! count / sum / min / max. leasehold's renewal counter and batch-size histogram are read from
//! it in the keepalive scenario.
//!
//! Not `metrics_util`'s `DebuggingRecorder`: that one keeps every histogram sample until it is
//! drained, and leasehold records two (lock wait, lock hold) per lock cycle, so over a million
//! cycles the recorder itself would grow the RSS the memory scenario checks for flatness. This
//! one costs a few atomic operations per sample and constant memory, like a real exporter's
//! fixed buckets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};

#[derive(Default)]
pub struct Totals {
    // The `metrics` macros look a handle up on every call: a read lock keeps that cheap.
    counters: RwLock<HashMap<Key, Arc<AtomicU64>>>,
    histograms: RwLock<HashMap<Key, Arc<Summary>>>,
}

/// Count, sum, min and max of a histogram's samples (f64 bits in atomics).
pub struct Summary {
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
            min: AtomicU64::new(f64::INFINITY.to_bits()),
            max: AtomicU64::new(f64::NEG_INFINITY.to_bits()),
        }
    }
}

fn update(cell: &AtomicU64, f: impl Fn(f64) -> f64) {
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        Some(f(f64::from_bits(bits)).to_bits())
    });
}

impl HistogramFn for Summary {
    fn record(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        update(&self.sum, |s| s + value);
        update(&self.min, |m| m.min(value));
        update(&self.max, |m| m.max(value));
    }
}

/// A snapshot of one histogram (all label sets together).
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }
}

static TOTALS: OnceLock<&'static Totals> = OnceLock::new();

/// Install the recorder (once per process) and return it.
pub fn install() -> &'static Totals {
    TOTALS.get_or_init(|| {
        let totals: &'static Totals = Box::leak(Box::default());
        metrics::set_global_recorder(totals).expect("no other metrics recorder is installed");
        // leasehold describes its metrics when its first client is built; harmless here.
        leasehold::metrics::describe();
        totals
    })
}

impl Totals {
    /// A counter's value summed over all its label sets.
    pub fn counter(&self, name: &str) -> u64 {
        let counters = self.counters.read().unwrap();
        counters
            .iter()
            .filter(|(k, _)| k.name() == name)
            .map(|(_, v)| v.load(Ordering::Relaxed))
            .sum()
    }

    /// A histogram's totals over all its label sets.
    pub fn histogram(&self, name: &str) -> Stats {
        let histograms = self.histograms.read().unwrap();
        let mut out = Stats {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        };
        for (_, s) in histograms.iter().filter(|(k, _)| k.name() == name) {
            out.count += s.count.load(Ordering::Relaxed);
            out.sum += f64::from_bits(s.sum.load(Ordering::Relaxed));
            out.min = out.min.min(f64::from_bits(s.min.load(Ordering::Relaxed)));
            out.max = out.max.max(f64::from_bits(s.max.load(Ordering::Relaxed)));
        }
        out
    }
}

impl metrics::Recorder for Totals {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(handle(&self.counters, key))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(handle(&self.histograms, key))
    }
}

fn handle<T: Default>(map: &RwLock<HashMap<Key, Arc<T>>>, key: &Key) -> Arc<T> {
    if let Some(h) = map.read().unwrap().get(key) {
        return h.clone();
    }
    map.write().unwrap().entry(key.clone()).or_default().clone()
}
