//! Prometheus counters for alerts and webhook delivery. Handles are cheap clones sharing the
//! same counters: create one [`Metrics`], register it once, hand clones to the manager and the
//! notifier.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::alert::{AlertKind, Severity};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindSeverity {
    kind: &'static str,
    severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    alerts: Family<KindSeverity, Counter>,
    notifications: Family<KindSeverity, Counter>,
    webhooks: Family<Outcome, Counter>,
    webhook_attempts: Counter,
}

impl Metrics {
    /// Register the counters (names get the registry's prefix, e.g. `palisade_`):
    /// `monitor_alerts_total{kind,severity}` (new alerts opened),
    /// `monitor_notifications_total{kind,severity}` (alerts handed to notification),
    /// `monitor_webhook_deliveries_total{outcome=delivered|failed|dropped}`,
    /// `monitor_webhook_attempts_total`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("monitor_alerts", "Alerts opened, by kind and severity", self.alerts.clone());
        registry.register(
            "monitor_notifications",
            "Alerts sent to notification (not suppressed), by kind and severity",
            self.notifications.clone(),
        );
        registry.register(
            "monitor_webhook_deliveries",
            "Webhook deliveries by outcome: delivered, failed (retries exhausted) or dropped (queue full)",
            self.webhooks.clone(),
        );
        registry.register("monitor_webhook_attempts", "Webhook HTTP attempts", self.webhook_attempts.clone());
    }

    pub(crate) fn alert_opened(&self, kind: AlertKind, severity: Severity) {
        self.alerts.get_or_create(&KindSeverity { kind: kind.as_str(), severity: severity.as_str() }).inc();
    }

    pub(crate) fn notified(&self, kind: AlertKind, severity: Severity) {
        self.notifications.get_or_create(&KindSeverity { kind: kind.as_str(), severity: severity.as_str() }).inc();
    }

    pub(crate) fn webhook(&self, outcome: &'static str) {
        self.webhooks.get_or_create(&Outcome { outcome }).inc();
    }

    pub(crate) fn webhook_attempt(&self) {
        self.webhook_attempts.inc();
    }
}
