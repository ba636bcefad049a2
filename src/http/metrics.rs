//! Prometheus metrics: requests by route, method and status, latency histograms by route,
//! decisions by outcome, gauges read at scrape time (connections, workers, pool) and counters
//! read at scrape time from the server's and the index's running totals, each under its own name.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    decisions: IntCounterVec,
    gauges: IntGaugeVec,
    /// Counters that follow a running total kept elsewhere, by name (registered on first use).
    totals: Mutex<HashMap<&'static str, IntCounter>>,
}

impl Metrics {
    /// Build the metric set; `service` becomes a constant label.
    pub fn new(service: &str) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(
            None,
            Some([("service".to_string(), service.to_string())].into()),
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request handling time by route and method",
            )
            .buckets(vec![
                0.000_05, 0.0001, 0.000_25, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route", "method"],
        )?;
        let decisions = IntCounterVec::new(
            Opts::new("iam_decisions_total", "Authorization decisions by outcome"),
            &["outcome"],
        )?;
        let gauges = IntGaugeVec::new(
            Opts::new("service_gauge", "Point-in-time gauges read at scrape"),
            &["name"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(gauges.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            decisions,
            gauges,
            totals: Mutex::new(HashMap::new()),
        })
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let buf = itoa_status(status);
        let status = std::str::from_utf8(&buf).unwrap_or("0");
        self.requests
            .with_label_values(&[route, method, status])
            .inc();
        self.latency
            .with_label_values(&[route, method])
            .observe(took.as_secs_f64());
    }

    pub fn observe_decision(&self, outcome: &str, n: u64) {
        self.decisions.with_label_values(&[outcome]).inc_by(n);
    }

    /// A point-in-time value: `service_gauge{name="<name>"}`.
    pub fn set_gauge(&self, name: &str, value: i64) {
        self.gauges.with_label_values(&[name]).set(value);
    }

    /// A running total kept elsewhere (it only grows), exported as the counter `name` (which
    /// ends in `_total`): brought up to `total` at each scrape.
    pub fn set_total(&self, name: &'static str, help: &str, total: u64) {
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        let counter = match totals.get(name) {
            Some(c) => c.clone(),
            None => {
                let c = match IntCounter::with_opts(Opts::new(name, help)) {
                    Ok(c) => c,
                    Err(e) => {
                        log::error!("metrics: counter `{name}`: {e}");
                        return;
                    }
                };
                if let Err(e) = self.registry.register(Box::new(c.clone())) {
                    log::error!("metrics: counter `{name}`: {e}");
                    return;
                }
                totals.insert(name, c.clone());
                c
            }
        };
        let now = counter.get();
        if total > now {
            counter.inc_by(total - now);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("metrics: cannot encode: {e}");
        }
        out
    }
}

fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + ((s / 10) % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::new("iam").unwrap();
        m.observe_request("/health", "GET", 200, Duration::from_micros(120));
        m.observe_request("/health", "GET", 200, Duration::from_micros(80));
        m.observe_decision("allow", 3);
        m.set_gauge("http_open_connections", 5);
        m.set_total("http_connections_rejected_total", "Connections refused", 4);
        m.set_total("http_connections_rejected_total", "Connections refused", 7);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains(
                r#"http_requests_total{method="GET",route="/health",status="200",service="iam"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains("http_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains(r#"iam_decisions_total{outcome="allow",service="iam"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"service_gauge{name="http_open_connections",service="iam"} 5"#),
            "{text}"
        );
        assert!(
            text.contains("# TYPE http_connections_rejected_total counter"),
            "{text}"
        );
        assert!(
            text.contains(r#"http_connections_rejected_total{service="iam"} 7"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"name="http_connections_rejected_total""#),
            "{text}"
        );
    }
}
