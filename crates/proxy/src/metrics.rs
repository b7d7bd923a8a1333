//! Prometheus metrics for the gateway. One registry lives for the whole process (across
//! config reloads); the request path only touches pre-resolved handles, never the registry.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use palisade_shipper::ShippingSink;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndpointLabel {
    upstream: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    result: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~16 s
    Histogram::new(exponential_buckets(0.00025, 2.0, 17))
}

/// All gateway metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    pub(crate) endpoint_healthy: Family<EndpointLabel, Gauge>,
    open_connections: Family<ListenerLabel, Gauge>,
    pub(crate) connections_rejected: Counter,
    reloads: Family<ResultLabel, Counter>,
    audit_shipper: Arc<ShipperCollector>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("palisade");
        let requests = Family::<RouteStatus, Counter>::default();
        let latency = Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let endpoint_healthy = Family::<EndpointLabel, Gauge>::default();
        let open_connections = Family::<ListenerLabel, Gauge>::default();
        let connections_rejected = Counter::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register("requests", "Requests handled, by route and response status", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by route",
            latency.clone(),
        );
        registry.register(
            "upstream_endpoint_healthy",
            "1 when the endpoint receives traffic (health checks pass and not ejected)",
            endpoint_healthy.clone(),
        );
        registry.register("open_connections", "Client connections currently open", open_connections.clone());
        registry.register(
            "connections_rejected",
            "Client connections closed at accept because max_connections was reached",
            connections_rejected.clone(),
        );
        registry.register("config_reloads", "Configuration reloads, by result", reloads.clone());
        let audit_shipper = Arc::new(ShipperCollector::default());
        registry.register_collector(Box::new(audit_shipper.clone()));
        Metrics {
            registry,
            requests,
            latency,
            endpoint_healthy,
            open_connections,
            connections_rejected,
            reloads,
            audit_shipper,
        }
    }

    /// The audit shipper whose counters `/metrics` shows (the active config's; none without `audit.ship`).
    pub(crate) fn set_audit_shipper(&self, sink: Option<&Arc<ShippingSink>>) {
        let mut current = self.audit_shipper.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = sink.map_or_else(Weak::new, Arc::downgrade);
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "rejected" };
        self.reloads.get_or_create(&ResultLabel { result: result.into() }).inc();
    }

    pub(crate) fn route(self: &Arc<Self>, route: &str) -> RouteMetrics {
        RouteMetrics {
            name: route.to_string(),
            latency: self.latency.get_or_create(&RouteLabel { route: route.into() }).clone(),
            by_status: (0..500).map(|_| OnceLock::new()).collect(),
            metrics: self.clone(),
        }
    }

    pub(crate) fn open_connections(&self, listener: &str) -> Gauge {
        self.open_connections.get_or_create(&ListenerLabel { listener: listener.into() }).clone()
    }

    pub(crate) fn endpoint_gauge(&self, upstream: &str, endpoint: &str) -> Gauge {
        self.endpoint_healthy
            .get_or_create(&EndpointLabel { upstream: upstream.into(), endpoint: endpoint.into() })
            .clone()
    }
}

/// The audit shipper's counters (`palisade_audit_shipper_*`), read from the sink on each scrape.
/// Absent when the gateway does not ship audit events.
#[derive(Debug, Default)]
struct ShipperCollector(Mutex<Weak<ShippingSink>>);

impl Collector for ShipperCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let sink = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).upgrade();
        let Some(sink) = sink else { return Ok(()) };
        let s = sink.stats();
        let counters: [(&str, &str, u64); 10] = [
            ("audit_shipper_spooled_events", "Audit events written to the spool and fsynced", s.spooled),
            ("audit_shipper_sent_events", "Audit events sent (a retry counts again)", s.sent),
            ("audit_shipper_acknowledged_events", "Audit events the server acknowledged", s.acknowledged),
            (
                "audit_shipper_dropped_queue_full_events",
                "Audit events dropped: writer queue full",
                s.dropped_queue_full,
            ),
            ("audit_shipper_dropped_spool_full_events", "Audit events dropped: spool full", s.dropped_spool_full),
            ("audit_shipper_dropped_io_error_events", "Audit events dropped: spool write failed", s.dropped_io_error),
            ("audit_shipper_server_duplicate_events", "Audit events the server already had", s.server_duplicates),
            (
                "audit_shipper_read_from_spool_events",
                "Audit events sent from the spool file, not memory",
                s.read_from_spool,
            ),
            ("audit_shipper_memory_overflows", "Times the in-memory queue overflowed", s.memory_overflows),
            ("audit_shipper_skipped_spool_lines", "Damaged spool lines skipped", s.skipped_lines),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let gauges: [(&str, &str, u64); 3] = [
            ("audit_shipper_pending_events", "Durable audit events not yet acknowledged", s.pending),
            ("audit_shipper_spool_bytes", "Bytes in the spool's segment files", s.spool_bytes),
            (
                "audit_shipper_reading_spool",
                "1 while the sender reads the spool back (after a restart or an overflow), 0 from memory",
                u64::from(s.reading_spool),
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

/// Per-route handles, resolved once at compile time so the hot path does no label hashing.
pub(crate) struct RouteMetrics {
    name: String,
    latency: Histogram,
    by_status: Vec<OnceLock<Counter>>,
    metrics: Arc<Metrics>,
}

impl RouteMetrics {
    pub(crate) fn record(&self, status: u16, seconds: f64) {
        self.latency.observe(seconds);
        let counter = match self.by_status.get(usize::from(status).wrapping_sub(100)) {
            Some(slot) => slot.get_or_init(|| self.counter(status)),
            None => &self.counter(status),
        };
        counter.inc();
    }

    fn counter(&self, status: u16) -> Counter {
        self.metrics.requests.get_or_create(&RouteStatus { route: self.name.clone(), status }).clone()
    }
}
