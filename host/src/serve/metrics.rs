//! The Prometheus metrics `runcap serve` exposes at `/metrics`, in the text exposition
//! format, named after Prometheus' conventions (`runcap_` prefix, `_total` counters,
//! `_seconds` durations): enough to chart on a Grafana board what a status checker like
//! Gatus shows, and to alert on runcap itself.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::runbook::RunReport;
use crate::runner::Status;

type Labels = Vec<(String, String)>;

fn step_histogram() -> Histogram {
    // 1 ms to ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric the server keeps, registered once.
pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Counter>,
    step_duration: Family<Labels, Histogram, fn() -> Histogram>,
    last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    probe_up: Family<Labels, Gauge>,
    probe_latency: Family<Labels, Gauge<f64, AtomicU64>>,
    schedule_lag: Family<Labels, Gauge<f64, AtomicU64>>,
    skipped: Family<Labels, Counter>,
    /// Runs under way now.
    pub running: Gauge,
    /// Open incidents and faults, refreshed before each scrape.
    pub open_incidents: Gauge,
    pub open_faults: Gauge,
    /// Plugins loaded and kept warm.
    pub plugins: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("runcap");
        let runs = Family::<Labels, Counter>::default();
        registry.register("runs", "Runs finished, by runbook and status", runs.clone());
        let step_duration =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(step_histogram);
        registry.register(
            "step_duration_seconds",
            "How long steps took, by runbook and step",
            step_duration.clone(),
        );
        let last_success = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "When each runbook last finished ok (Unix time)",
            last_success.clone(),
        );
        let probe_up = Family::<Labels, Gauge>::default();
        registry.register(
            "probe_up",
            "Whether the last run of each probe step passed (1) or not (0)",
            probe_up.clone(),
        );
        let probe_latency = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "probe_response_seconds",
            "Response time measured by the last run of each probe step",
            probe_latency.clone(),
        );
        let schedule_lag = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "schedule_lag_seconds",
            "How late the last scheduled run of each runbook started (jitter excluded)",
            schedule_lag.clone(),
        );
        let skipped = Family::<Labels, Counter>::default();
        registry.register(
            "schedule_skipped",
            "Scheduled runs skipped because the last one was still under way",
            skipped.clone(),
        );
        let running = Gauge::default();
        registry.register("runs_running", "Runs under way", running.clone());
        let open_incidents = Gauge::default();
        registry.register("open_incidents", "Incidents open", open_incidents.clone());
        let open_faults = Gauge::default();
        registry.register(
            "open_faults",
            "Faults injected and not yet reverted",
            open_faults.clone(),
        );
        let plugins = Gauge::default();
        registry.register(
            "plugin_instances",
            "Plugins loaded and kept warm",
            plugins.clone(),
        );
        Metrics {
            registry,
            runs,
            step_duration,
            last_success,
            probe_up,
            probe_latency,
            schedule_lag,
            skipped,
            running,
            open_incidents,
            open_faults,
            plugins,
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Metrics {
    /// Counts a finished run and what its steps measured.
    pub fn record_run(&self, report: &RunReport) {
        let rb = report.runbook.as_str();
        self.runs
            .get_or_create(&labels(&[
                ("runbook", rb),
                ("status", report.status.as_str()),
            ]))
            .inc();
        if report.status.as_str() == "ok" {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            self.last_success
                .get_or_create(&labels(&[("runbook", rb)]))
                .set(now);
        }
        for s in &report.steps {
            if s.action.status == Status::Skipped {
                continue;
            }
            let l = labels(&[("runbook", rb), ("step", &s.id)]);
            self.step_duration
                .get_or_create(&l)
                .observe(s.action.duration_ms / 1000.0);
            // A step that measured a response time is a probe.
            if let Some((_, ms)) = s
                .action
                .metrics
                .iter()
                .find(|(k, _)| k == "response_time_ms")
            {
                self.probe_up
                    .get_or_create(&l)
                    .set(i64::from(s.action.status != Status::Fail));
                self.probe_latency.get_or_create(&l).set(ms / 1000.0);
            }
        }
    }

    /// How late a scheduled run started.
    pub fn schedule_lag(&self, runbook: &str, lag: std::time::Duration) {
        self.schedule_lag
            .get_or_create(&labels(&[("runbook", runbook)]))
            .set(lag.as_secs_f64());
    }

    /// A scheduled run that did not start because the last was under way.
    pub fn skipped(&self, runbook: &str) {
        self.skipped
            .get_or_create(&labels(&[("runbook", runbook)]))
            .inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
