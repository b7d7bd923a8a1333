//! Webhook delivery against a local hyper server: retries with backoff, Slack body, giving up,
//! dropping when the queue is full, no retry on 4xx, per-attempt timeout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use palisade_monitor::{
    generic_body, slack_body, Alert, AlertKind, Metrics, Notifier, NotifierConfig, NotifierStats, NotifyError,
    Severity, WebhookFormat, WebhookTarget,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
struct Hit {
    path: String,
    content_type: String,
    body: Bytes,
}

/// A server answering the n-th request with `statuses[n]` (200 past the end).
async fn server(statuses: Vec<u16>) -> (SocketAddr, Arc<Mutex<Vec<Hit>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let seen = Arc::clone(&seen);
            let statuses = statuses.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = Arc::clone(&seen);
                    let statuses = statuses.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let content_type = req
                            .headers()
                            .get("content-type")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let status = {
                            let mut hits = seen.lock().unwrap();
                            let status = statuses.get(hits.len()).copied().unwrap_or(200);
                            hits.push(Hit { path, content_type, body });
                            status
                        };
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (addr, hits)
}

fn alert() -> Alert {
    Alert {
        id: "4f1c0a2b-7".into(),
        kind: AlertKind::BruteForce,
        severity: Severity::High,
        summary: "Brute force suspected: at least 10 authentication failures for User::\"a<b>&c\" within 1m".into(),
        key: "brute_force:principal:User::\"a<b>&c\"".into(),
        event_ids: vec!["bf-1".into(), "bf-2".into()],
        first_seen: SystemTime::UNIX_EPOCH + Duration::from_millis(1_772_445_607_000),
        last_seen: SystemTime::UNIX_EPOCH + Duration::from_millis(1_772_445_625_250),
        count: 12,
    }
}

fn config(url: String, format: WebhookFormat, attempts: u32) -> NotifierConfig {
    NotifierConfig {
        targets: vec![WebhookTarget { url, format }],
        attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        timeout: Duration::from_secs(5),
        ..NotifierConfig::default()
    }
}

#[tokio::test]
async fn two_failures_then_success_delivers_once_in_three_attempts() {
    let (addr, hits) = server(vec![500, 503]).await;
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let url = format!("http://{addr}/hooks/T000/secret-part");
    let notifier = Notifier::spawn(config(url, WebhookFormat::Generic, 5), metrics).unwrap();
    assert!(notifier.notify(alert()));
    let stats = notifier.close().await;
    assert_eq!(stats, NotifierStats { delivered: 1, failed: 0, dropped: 0, attempts: 3 });
    let hits = hits.lock().unwrap().clone();
    assert_eq!(hits.len(), 3);
    for h in &hits {
        assert_eq!((h.path.as_str(), h.content_type.as_str()), ("/hooks/T000/secret-part", "application/json"));
        assert_eq!(h.body, generic_body(&alert()));
    }
    let json: serde_json::Value = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(json["kind"], "brute_force");
    assert_eq!(json["severity"], "high");
    assert_eq!(json["first_seen"], "2026-03-02T10:00:07.000Z");
    assert_eq!(json["last_seen"], "2026-03-02T10:00:25.250Z");
    assert_eq!(json["event_ids"], serde_json::json!(["bf-1", "bf-2"]));
    let back: Alert = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(back, alert());

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("monitor_webhook_attempts_total 3\n"), "{text}");
    assert!(text.contains("monitor_webhook_deliveries_total{outcome=\"delivered\"} 1\n"), "{text}");
}

#[tokio::test]
async fn slack_format_body_is_exact() {
    let (addr, hits) = server(vec![]).await;
    let notifier =
        Notifier::spawn(config(format!("http://{addr}/slack"), WebhookFormat::Slack, 1), Metrics::default()).unwrap();
    notifier.notify(alert());
    assert_eq!(notifier.close().await.delivered, 1);
    let body = hits.lock().unwrap()[0].body.clone();
    let expected = r#"{"text":"[HIGH] brute_force: Brute force suspected: at least 10 authentication failures for User::\"a&lt;b&gt;&amp;c\" within 1m (count 12, last seen 2026-03-02T10:00:25Z, alert 4f1c0a2b-7)"}"#;
    assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
    assert_eq!(body, slack_body(&alert()));
}

#[tokio::test]
async fn an_unreachable_target_is_given_up_after_n_attempts() {
    // A port that was just free: connections are refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let cfg = config(format!("http://127.0.0.1:{port}/hook"), WebhookFormat::Generic, 4);
    let notifier = Notifier::spawn(cfg, metrics).unwrap();
    let started = std::time::Instant::now();
    notifier.notify(alert());
    let stats = notifier.close().await;
    assert_eq!(stats, NotifierStats { delivered: 0, failed: 1, dropped: 0, attempts: 4 });
    // Backoff 10 + 20 + 40 ms between the four attempts.
    assert!(started.elapsed() >= Duration::from_millis(70), "{:?}", started.elapsed());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("monitor_webhook_deliveries_total{outcome=\"failed\"} 1\n"), "{text}");
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let (addr, hits) = server(vec![400, 400, 400]).await;
    let notifier =
        Notifier::spawn(config(format!("http://{addr}/x"), WebhookFormat::Generic, 5), Metrics::default()).unwrap();
    notifier.notify(alert());
    assert_eq!(notifier.close().await, NotifierStats { delivered: 0, failed: 1, dropped: 0, attempts: 1 });
    assert_eq!(hits.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_full_queue_drops_without_blocking() {
    let (addr, hits) = server(vec![]).await;
    let cfg = NotifierConfig { queue: 1, ..config(format!("http://{addr}/x"), WebhookFormat::Generic, 1) };
    let notifier = Notifier::spawn(cfg, Metrics::default()).unwrap();
    // A current-thread runtime: the delivery task cannot run until this test yields, so the
    // queue of one takes the first alert and refuses the other 49 at once.
    let accepted = (0..50).filter(|_| notifier.notify(alert())).count();
    assert_eq!(accepted, 1);
    assert_eq!(notifier.stats().dropped, 49);
    assert_eq!(notifier.close().await, NotifierStats { delivered: 1, failed: 0, dropped: 49, attempts: 1 });
    assert_eq!(hits.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_silent_server_times_out_each_attempt() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s); // accept, never answer
        }
    });
    let cfg = NotifierConfig {
        timeout: Duration::from_millis(100),
        ..config(format!("http://{addr}/x"), WebhookFormat::Generic, 2)
    };
    let notifier = Notifier::spawn(cfg, Metrics::default()).unwrap();
    notifier.notify(alert());
    assert_eq!(notifier.close().await, NotifierStats { delivered: 0, failed: 1, dropped: 0, attempts: 2 });
}

#[tokio::test]
async fn bad_targets_are_refused_and_urls_are_redacted() {
    let cfg = config("ftp://example.com/x".into(), WebhookFormat::Generic, 1);
    assert_eq!(
        Notifier::spawn(cfg, Metrics::default()).unwrap_err(),
        NotifyError::Target { index: 0, reason: "the URL must start with http:// or https://" }
    );
    let cfg = NotifierConfig { attempts: 0, ..NotifierConfig::default() };
    assert_eq!(
        Notifier::spawn(cfg, Metrics::default()).unwrap_err(),
        NotifyError::Config("attempts must be at least 1")
    );
    let target =
        WebhookTarget { url: "https://hooks.slack.com/services/T0/B0/SECRET".into(), format: WebhookFormat::Slack };
    assert_eq!(format!("{target:?}"), r#"WebhookTarget { url: "https://hooks.slack.com/…", format: Slack }"#);
    // The notifier config as a caller would deserialize it.
    let cfg: NotifierConfig = serde_json::from_str(
        r#"{"targets":[{"url":"https://hooks.example/x","format":"slack"}],"attempts":3,"base_delay":"200ms"}"#,
    )
    .unwrap();
    assert_eq!(
        (cfg.attempts, cfg.base_delay, cfg.targets[0].format),
        (3, Duration::from_millis(200), WebhookFormat::Slack)
    );
    assert!(serde_json::from_str::<NotifierConfig>(r#"{"retries":3}"#)
        .unwrap_err()
        .to_string()
        .contains("unknown field `retries`"));
}
