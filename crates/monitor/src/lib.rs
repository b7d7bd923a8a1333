//! Palisade security monitoring: the streaming detection and alerting core of a SIEM's
//! correlation rules, as a library. [`Detectors`] turn audit records
//! ([`palisade_core::audit::AuditRecord`]) into [`Alert`]s (brute force, credential stuffing,
//! lateral movement, rate anomalies, WAF bursts, token misuse, deny and 5xx spikes, certificate
//! expiry); the [`AlertManager`] deduplicates, suppresses and tracks acknowledgements; the
//! [`Notifier`] posts alerts to webhooks (generic JSON or Slack) with retries.
//!
//! Not for: reading or storing audit logs, configuration files, serving an API or UI; the caller
//! feeds records in, passes alerts from the detectors to the manager and the manager's
//! notifications to the notifier. All state is in memory and bounded; only the lateral-movement
//! [`Baseline`] is meant to be persisted by the caller.
//!
//! ```no_run
//! # use palisade_monitor::*;
//! # fn f(records: Vec<palisade_core::audit::AuditRecord>) -> Result<(), Box<dyn std::error::Error>> {
//! let metrics = Metrics::default();
//! let mut detectors = Detectors::new(DetectorConfig::default())?;
//! let mut manager = AlertManager::new(ManagerConfig::default(), metrics.clone());
//! let notifier = Notifier::spawn(NotifierConfig::default(), metrics)?;
//! for rec in &records {
//!     for alert in detectors.observe(rec, std::time::SystemTime::now()) {
//!         if let Some(notify) = manager.ingest(alert, std::time::SystemTime::now()) {
//!             notifier.notify(notify);
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

mod alert;
mod bounded;
mod config;
mod detect;
mod manager;
mod metrics;
mod notify;
mod time;

pub use alert::{Alert, AlertKind, Severity};
pub use config::{
    BruteForceConfig, ConfigError, CredentialStuffingConfig, DetectorConfig, ExpiryConfig, LateralMovementConfig,
    RateAnomalyConfig, SpikeConfig, TokenMisuseConfig, WafBurstConfig,
};
pub use detect::{Baseline, Detectors, Edge};
pub use manager::{Ack, AckError, AlertManager, ManagedAlert, ManagerConfig};
pub use metrics::Metrics;
pub use notify::{
    generic_body, slack_body, Notifier, NotifierConfig, NotifierStats, NotifyError, WebhookFormat, WebhookTarget,
};
pub use time::event_time;
