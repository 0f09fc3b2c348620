//! Prometheus metrics: counters, gauges and histograms that the index, the peer server and the
//! downloader update from any task, and their rendering in the Prometheus text format (0.0.4).
//!
//! Updating a metric is an atomic add, never a lock (series are made once, up front, so no
//! lookup by label happens on the hot path). Labels take only values from fixed sets defined
//! here ([`Label`]), never from the network, so the number of series is bounded. The rendering
//! is the Prometheus project's own `prometheus-client` crate's (escaping, `# HELP`/`# TYPE`,
//! `_total`, `_bucket{le="+Inf"}`).
//!
//! - [`IndexMetrics`]: one index server's, rendered by [`crate::index::IndexServer::metrics`].
//! - [`NodeMetrics`]: the process's peer server and downloads ([`node`], [`node_text`]): the
//!   peer server and the downloader count into one per process, as a node runs one of each.
//! - [`http`]: a small `/metrics` HTTP listener (the index's `--metrics ADDR`).
//!
//! docs/METRICS.md lists every metric.

pub mod http;
mod index;
mod node;

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

pub use index::{
    ConnectionError, IndexMetrics, IndexRequestKind, QueryKind, RegisterOutcome, SearchOutcome,
};
pub use node::{NodeMetrics, UploadOutcome, node, node_text};

/// The `Content-Type` of [`render`]'s text: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The bounds (seconds) of the latency histograms' buckets: 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The text of every metric in `registry`, in the Prometheus text format (0.0.4).
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail, and none of our metrics' encoders fails.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, registry);
    text
}

/// A label whose values are a fixed set: the only kind of label a metric here has.
pub trait Label: Copy + std::fmt::Debug + Send + Sync + 'static {
    /// The label's name.
    const NAME: &'static str;
    /// Every value, in the order of [`Label::index`].
    const ALL: &'static [Self];
    /// The value as rendered.
    fn value(self) -> &'static str;
    /// The position in [`Label::ALL`].
    fn index(self) -> usize;
}

/// Defines a fieldless enum as a [`Label`]: `labels!(pub enum E("name") { A = "a", B = "b" })`.
macro_rules! labels {
    ($(#[$m:meta])* $vis:vis enum $name:ident($label:literal) {
        $($(#[$vm:meta])* $var:ident = $val:literal),+ $(,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name { $($(#[$vm])* $var),+ }

        impl $crate::metrics::Label for $name {
            const NAME: &'static str = $label;
            const ALL: &'static [Self] = &[$($name::$var),+];
            fn value(self) -> &'static str {
                match self { $($name::$var => $val),+ }
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}
pub(crate) use labels;

/// One metric per value of the label `L`, all made up front: [`ByLabel::get`] is an index.
#[derive(Debug)]
pub struct ByLabel<L, M> {
    metrics: Arc<[M]>,
    _label: PhantomData<L>,
}

impl<L, M> Clone for ByLabel<L, M> {
    fn clone(&self) -> Self {
        ByLabel {
            metrics: self.metrics.clone(),
            _label: PhantomData,
        }
    }
}

impl<L: Label, M: Default> Default for ByLabel<L, M> {
    fn default() -> Self {
        ByLabel {
            metrics: L::ALL.iter().map(|_| M::default()).collect(),
            _label: PhantomData,
        }
    }
}

impl<L: Label, M> ByLabel<L, M> {
    /// The metric of `label`.
    pub fn get(&self, label: L) -> &M {
        &self.metrics[label.index()]
    }
}

impl<L, M> EncodeMetric for ByLabel<L, M>
where
    L: Label,
    M: EncodeMetric + TypedMetric,
{
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for &label in L::ALL {
            let set = [(L::NAME, label.value())];
            self.get(label).encode(encoder.encode_family(&set)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

/// A histogram over fixed bucket bounds, updated with atomic adds only (the `prometheus-client`
/// one takes a lock on every observation). Clones share their counts.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramCounts>);

#[derive(Debug)]
struct HistogramCounts {
    /// Upper bounds, ascending; the last bucket (+Inf) is implicit.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative), one more than `bounds`.
    counts: Box<[AtomicU64]>,
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    /// A histogram with buckets up to each of `bounds` (ascending), and +Inf.
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram(Arc::new(HistogramCounts {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    /// Counts one observation of `v`.
    pub fn observe(&self, v: f64) {
        let h = &self.0;
        let bucket = h.bounds.partition_point(|&b| b < v);
        h.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let _ = h
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// Latency buckets ([`LATENCY_BUCKETS`]).
impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(LATENCY_BUCKETS)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        let bounds = h.bounds.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(h.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' total, so `_count` always equals the +Inf bucket.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = f64::from_bits(h.sum.load(Ordering::Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    labels!(enum Colour("colour") { Red = "red", Blue = "b\"l\\u\ne" });

    #[test]
    fn renders_counters_labels_and_histograms_in_the_text_format() {
        let mut registry = Registry::default();
        let plain = Counter::<u64>::default();
        let by: ByLabel<Colour, Counter> = ByLabel::default();
        let h = Histogram::new(&[0.1, 1.0]);
        registry.register("demo_things", "Things seen", plain.clone());
        registry.register("demo_by_colour", "Things by colour", by.clone());
        registry.register("demo_seconds", "How long", h.clone());
        plain.inc_by(3);
        by.get(Colour::Blue).inc();
        for v in [0.05, 0.1, 0.5, 7.0] {
            h.observe(v);
        }
        let text = render(&registry);
        let want = "\
# HELP demo_things_total Things seen.
# TYPE demo_things_total counter
demo_things_total 3
# HELP demo_by_colour_total Things by colour.
# TYPE demo_by_colour_total counter
demo_by_colour_total{colour=\"red\"} 0
demo_by_colour_total{colour=\"b\\\"l\\\\u\\ne\"} 1
# HELP demo_seconds How long.
# TYPE demo_seconds histogram
demo_seconds_bucket{le=\"0.1\"} 2
demo_seconds_bucket{le=\"1\"} 3
demo_seconds_bucket{le=\"+Inf\"} 4
demo_seconds_sum 7.65
demo_seconds_count 4
";
        assert_eq!(text, want);
    }

    #[test]
    fn histogram_observations_from_many_threads_all_count() {
        let h = Histogram::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..10_000).for_each(|i| h.observe(f64::from(i % 7) * 0.001)));
            }
        });
        assert_eq!(h.count(), 40_000);
        let sum = f64::from_bits(h.0.sum.load(Ordering::Relaxed));
        let want = 4.0 * (0..10_000).map(|i| f64::from(i % 7) * 0.001).sum::<f64>();
        assert!((sum - want).abs() < 1e-6, "{sum} vs {want}");
    }
}
