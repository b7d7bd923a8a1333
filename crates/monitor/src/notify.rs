//! Webhook delivery. [`Notifier::notify`] never blocks: it puts the alert on a bounded queue (or
//! counts it dropped); a tokio task posts it to every target, retrying transient failures
//! (transport errors, timeouts, 5xx, 408, 429) with exponential backoff
//! `min(max_delay, base_delay * 2^(attempt-1))`, and giving up on other 4xx at once.
//! A webhook URL can hold a secret (Slack's do, in the path): logs and errors show only its
//! scheme and host.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::alert::Alert;
use crate::metrics::Metrics;

/// Largest response body read (and discarded) from a webhook.
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The alert as JSON.
    #[default]
    Generic,
    /// `{"text": "..."}`, as Slack (and Mattermost, Rocket.Chat) incoming webhooks take.
    Slack,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    /// `http://` or `https://` (Mozilla's roots).
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget").field("url", &redact(&self.url)).field("format", &self.format).finish()
    }
}

/// Scheme and host of a URL only (its path and query may be a secret).
fn redact(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) => format!("{}://{}/…", u.scheme_str().unwrap_or("?"), u.authority().map_or("?", |a| a.host())),
        Err(_) => "<invalid url>".to_owned(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifierConfig {
    pub targets: Vec<WebhookTarget>,
    /// Attempts per alert and target, at least 1.
    pub attempts: u32,
    #[serde(with = "crate::time::duration")]
    pub base_delay: Duration,
    #[serde(with = "crate::time::duration")]
    pub max_delay: Duration,
    /// Deadline of one attempt (connect, request, response).
    #[serde(with = "crate::time::duration")]
    pub timeout: Duration,
    /// Alerts waiting for delivery; past it new alerts are dropped (and counted).
    pub queue: usize,
    /// Deliveries in flight at once.
    pub max_concurrent: usize,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            targets: Vec::new(),
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            queue: 1024,
            max_concurrent: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("webhook target {index}: {reason}")]
    Target { index: usize, reason: &'static str },
    #[error("notifier configuration: {0}")]
    Config(&'static str),
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// Delivery counts, per (alert, target) pair except `dropped` (alerts refused by a full queue).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifierStats {
    pub delivered: u64,
    pub failed: u64,
    pub dropped: u64,
    pub attempts: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    attempts: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> NotifierStats {
        NotifierStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            attempts: self.attempts.load(Ordering::Relaxed),
        }
    }
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Handle to the delivery task.
#[derive(Debug)]
pub struct Notifier {
    tx: mpsc::Sender<Alert>,
    counters: Arc<Counters>,
    metrics: Metrics,
    worker: JoinHandle<()>,
}

/// The generic body: the alert as JSON.
pub fn generic_body(alert: &Alert) -> Vec<u8> {
    serde_json::to_vec(alert).unwrap_or_default()
}

/// The Slack body: `{"text": "[SEVERITY] kind: summary (count N, last seen T, alert ID)"}`, with
/// `&`, `<` and `>` escaped as Slack requires.
pub fn slack_body(alert: &Alert) -> Vec<u8> {
    let text = format!(
        "[{}] {}: {} (count {}, last seen {}, alert {})",
        alert.severity.as_str().to_uppercase(),
        alert.kind,
        alert.summary,
        alert.count,
        humantime::format_rfc3339_seconds(alert.last_seen),
        alert.id
    );
    let text = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap_or_default()
}

impl Notifier {
    /// Start the delivery task (call inside a tokio runtime).
    pub fn spawn(cfg: NotifierConfig, metrics: Metrics) -> Result<Notifier, NotifyError> {
        if cfg.attempts == 0 {
            return Err(NotifyError::Config("attempts must be at least 1"));
        }
        if cfg.queue == 0 || cfg.max_concurrent == 0 {
            return Err(NotifyError::Config("queue and max_concurrent must be at least 1"));
        }
        if cfg.timeout.is_zero() {
            return Err(NotifyError::Config("timeout must be positive"));
        }
        let mut targets = Vec::with_capacity(cfg.targets.len());
        for (index, t) in cfg.targets.iter().enumerate() {
            let uri: http::Uri =
                t.url.parse().map_err(|_| NotifyError::Target { index, reason: "the URL is invalid" })?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) {
                return Err(NotifyError::Target { index, reason: "the URL must start with http:// or https://" });
            }
            if uri.host().is_none_or(str::is_empty) {
                return Err(NotifyError::Target { index, reason: "the URL has no host" });
            }
            targets.push((uri, t.format, redact(&t.url)));
        }
        let client = http_client()?;
        let (tx, rx) = mpsc::channel(cfg.queue);
        let counters = Arc::new(Counters::default());
        let worker =
            tokio::spawn(run(rx, Arc::new(targets), Arc::new(cfg), client, Arc::clone(&counters), metrics.clone()));
        Ok(Notifier { tx, counters, metrics, worker })
    }

    /// Queue an alert for every target; `false` (and counted as dropped) when the queue is full.
    pub fn notify(&self, alert: Alert) -> bool {
        match self.tx.try_send(alert) {
            Ok(()) => true,
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.metrics.webhook("dropped");
                false
            }
        }
    }

    pub fn stats(&self) -> NotifierStats {
        self.counters.snapshot()
    }

    /// Stop taking alerts, finish the queued and in-flight deliveries (retries included), and
    /// return the final counts.
    pub async fn close(self) -> NotifierStats {
        let Notifier { tx, counters, worker, .. } = self;
        drop(tx);
        if let Err(e) = worker.await {
            tracing::error!(error = %e, "webhook delivery task ended abnormally");
        }
        counters.snapshot()
    }
}

fn http_client() -> Result<HttpClient, NotifyError> {
    let tls = palisade_core::net::client_tls(None).map_err(NotifyError::Tls)?;
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
    Ok(Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector))
}

type Targets = Arc<Vec<(http::Uri, WebhookFormat, String)>>;

async fn run(
    mut rx: mpsc::Receiver<Alert>,
    targets: Targets,
    cfg: Arc<NotifierConfig>,
    client: HttpClient,
    counters: Arc<Counters>,
    metrics: Metrics,
) {
    let permits = Arc::new(Semaphore::new(cfg.max_concurrent));
    let mut tasks = JoinSet::new();
    while let Some(alert) = rx.recv().await {
        let alert = Arc::new(alert);
        for index in 0..targets.len() {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { return };
            let job = Delivery {
                targets: Arc::clone(&targets),
                index,
                alert: Arc::clone(&alert),
                cfg: Arc::clone(&cfg),
                client: client.clone(),
                counters: Arc::clone(&counters),
                metrics: metrics.clone(),
            };
            tasks.spawn(async move {
                job.run().await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

struct Delivery {
    targets: Targets,
    index: usize,
    alert: Arc<Alert>,
    cfg: Arc<NotifierConfig>,
    client: HttpClient,
    counters: Arc<Counters>,
    metrics: Metrics,
}

enum Attempt {
    Delivered,
    Retry(String),
    GiveUp(String),
}

impl Delivery {
    async fn run(self) {
        let Some((uri, format, shown)) = self.targets.get(self.index) else { return };
        let body = Bytes::from(match format {
            WebhookFormat::Generic => generic_body(&self.alert),
            WebhookFormat::Slack => slack_body(&self.alert),
        });
        for attempt in 1..=self.cfg.attempts {
            self.counters.attempts.fetch_add(1, Ordering::Relaxed);
            self.metrics.webhook_attempt();
            let outcome = match tokio::time::timeout(self.cfg.timeout, self.post(uri, body.clone())).await {
                Ok(outcome) => outcome,
                Err(_) => Attempt::Retry(format!("no response within {:?}", self.cfg.timeout)),
            };
            match outcome {
                Attempt::Delivered => {
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    self.metrics.webhook("delivered");
                    return;
                }
                Attempt::GiveUp(why) => {
                    tracing::warn!(target_url = %shown, alert = %self.alert.id, attempt, "webhook refused the alert, not retrying: {why}");
                    break;
                }
                Attempt::Retry(why) => {
                    tracing::warn!(target_url = %shown, alert = %self.alert.id, attempt, "webhook delivery failed: {why}");
                    if attempt < self.cfg.attempts {
                        tokio::time::sleep(backoff(&self.cfg, attempt)).await;
                    }
                }
            }
        }
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        self.metrics.webhook("failed");
    }

    async fn post(&self, uri: &http::Uri, body: Bytes) -> Attempt {
        let req = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, concat!("palisade-monitor/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body));
        let req = match req {
            Ok(r) => r,
            Err(_) => return Attempt::GiveUp("the request could not be built".into()),
        };
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(palisade_core::net::error_chain(&e)),
        };
        let status = resp.status();
        // Read the body so the connection can be reused; its content does not matter.
        let _ = Limited::new(resp.into_body(), MAX_RESPONSE).collect().await;
        if status.is_success() {
            Attempt::Delivered
        } else if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Attempt::Retry(format!("status {}", status.as_u16()))
        } else {
            Attempt::GiveUp(format!("status {}", status.as_u16()))
        }
    }
}

/// Delay after failed attempt `attempt` (1-based): `min(max_delay, base_delay * 2^(attempt-1))`.
pub(crate) fn backoff(cfg: &NotifierConfig, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(20);
    cfg.base_delay.saturating_mul(factor).min(cfg.max_delay)
}
