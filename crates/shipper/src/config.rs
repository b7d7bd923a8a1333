//! The shipper's configuration: where to send, with which token, where to spool, and the limits.
//! Invariant: the token is a [`Secret`] from deserialization on, so no `Debug` or error shows it.

use std::path::PathBuf;
use std::time::Duration;

use palisade_core::Secret;
use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

use crate::ShipperError;

/// Smallest spool cap accepted: a segment is at most 1/16 of the cap, so a cap this small still
/// rolls segments and frees space once they are acknowledged.
pub(crate) const MIN_SPOOL_BYTES: u64 = 64 * 1024;

/// How a shipper ships: `server` (`http://` or `https://` base URL; events go to
/// `<server>/audit/v1/events`), the bearer `token` value (the caller resolves secret references),
/// the spool directory and the limits. Durations are written like `500ms`, `5s`, `1m`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipperConfig {
    pub server: String,
    #[serde(deserialize_with = "de_secret")]
    pub token: Secret,
    /// Created with mode 0700 when missing; one shipper at a time (it is locked while open).
    pub spool_dir: PathBuf,
    /// Most events in one request (default 1000; the audit server takes up to 10,000).
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// Most body bytes in one request (default 1 MiB); a single larger event is sent alone.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Spool cap (default 256 MiB, at least 64 KiB): when full, new events are dropped and counted.
    #[serde(default = "default_max_spool_bytes")]
    pub max_spool_bytes: u64,
    /// PEM roots for an https server; without it, Mozilla's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// First retry delay after a failed send (default 500ms); doubles up to `retry_max`.
    #[serde(default = "default_retry_initial", deserialize_with = "de_duration")]
    pub retry_initial: Duration,
    /// Longest retry delay (default 30s).
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    pub retry_max: Duration,
    /// Deadline for one request, connect to full response (default 30s).
    #[serde(default = "default_request_timeout", deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// How often the spool writer flushes and fsyncs (default 50ms): the bound on how long an
    /// event waits before it may be sent.
    #[serde(default = "default_flush_interval", deserialize_with = "de_duration")]
    pub flush_interval: Duration,
    /// Events queued between `record` and the spool writer (default 65536); beyond it, dropped and counted.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Bytes of durable, serialized events the sender keeps in memory (default 32 MiB), so that
    /// it ships them without reading the spool back. When the server falls further behind, newer
    /// events are left out of memory (the spool keeps them): the sender ships the queued ones,
    /// then reads the spool until it has caught up. 0: always read the spool.
    #[serde(default = "default_max_memory_bytes")]
    pub max_memory_bytes: usize,
}

fn default_batch_max_events() -> usize {
    1000
}
fn default_batch_max_bytes() -> usize {
    1 << 20
}
fn default_max_spool_bytes() -> u64 {
    256 << 20
}
fn default_retry_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_flush_interval() -> Duration {
    Duration::from_millis(50)
}
fn default_queue_capacity() -> usize {
    65_536
}
fn default_max_memory_bytes() -> usize {
    32 << 20
}

fn de_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    let s = String::deserialize(d)?;
    Ok(Secret::from(s.into_bytes()))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|_| D::Error::custom(format!("invalid duration {s:?}: write e.g. 500ms, 5s or 1m")))
}

impl ShipperConfig {
    /// A configuration with every limit at its default.
    pub fn new(server: impl Into<String>, token: Secret, spool_dir: impl Into<PathBuf>) -> ShipperConfig {
        ShipperConfig {
            server: server.into(),
            token,
            spool_dir: spool_dir.into(),
            batch_max_events: default_batch_max_events(),
            batch_max_bytes: default_batch_max_bytes(),
            max_spool_bytes: default_max_spool_bytes(),
            ca_file: None,
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            request_timeout: default_request_timeout(),
            flush_interval: default_flush_interval(),
            queue_capacity: default_queue_capacity(),
            max_memory_bytes: default_max_memory_bytes(),
        }
    }

    /// Everything [`crate::ShippingSink::open`] checks before touching the disk or the network.
    pub(crate) fn validate(&self) -> Result<(), ShipperError> {
        let bad = |m: String| Err(ShipperError::Config(m));
        if self.batch_max_events == 0 {
            return bad("batch_max_events must be at least 1".into());
        }
        if self.batch_max_bytes < 1024 {
            return bad("batch_max_bytes must be at least 1024".into());
        }
        if self.max_spool_bytes < MIN_SPOOL_BYTES {
            return bad(format!("max_spool_bytes must be at least {MIN_SPOOL_BYTES}"));
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity must be at least 1".into());
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return bad("retry_initial must be positive and not above retry_max".into());
        }
        if self.request_timeout.is_zero() || self.flush_interval.is_zero() {
            return bad("request_timeout and flush_interval must be positive".into());
        }
        let token = self.token.expose();
        // A header value: visible ASCII only. The message never shows the value.
        if token.is_empty() || !token.iter().all(|b| b.is_ascii_graphic()) {
            return bad("token must be non-empty visible ASCII (no spaces or line breaks)".into());
        }
        Ok(())
    }

    /// The spool segment size: small against the cap, so acknowledged segments free space early.
    pub(crate) fn segment_bytes(&self) -> u64 {
        (self.max_spool_bytes / 16).clamp(4 * 1024, 16 << 20)
    }
}

/// `<server>/audit/v1/events`, checked: http or https, a host, no user info, query or fragment.
pub(crate) fn events_url(server: &str) -> Result<http::Uri, ShipperError> {
    let base = server.trim_end_matches('/');
    let lower = base.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err(ShipperError::Config(format!("server URL {server:?} must start with http:// or https://")));
    }
    let uri: http::Uri = format!("{base}/audit/v1/events")
        .parse()
        .map_err(|_| ShipperError::Config(format!("server URL {server:?} is invalid")))?;
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if uri.host().is_none_or(str::is_empty) || authority.contains('@') || uri.query().is_some() || base.contains('#') {
        return Err(ShipperError::Config(format!(
            "server URL {server:?} needs a host and no user info, query or fragment"
        )));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_fields() {
        let c: ShipperConfig = serde_json::from_str(
            r#"{"server":"https://audit.example:8443/","token":"t0k","spool_dir":"/var/spool/x"}"#,
        )
        .unwrap();
        assert_eq!(c.batch_max_events, 1000);
        assert_eq!(c.batch_max_bytes, 1 << 20);
        assert_eq!(c.max_spool_bytes, 256 << 20);
        assert_eq!(c.retry_max, Duration::from_secs(30));
        assert_eq!(c.flush_interval, Duration::from_millis(50));
        assert_eq!(c.max_memory_bytes, 32 << 20);
        assert_eq!(c.segment_bytes(), 16 << 20);
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("t0k"));
        let err = serde_json::from_str::<ShipperConfig>(r#"{"server":"x","token":"t","spool_dir":"d","batch":1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `batch`"), "{err}");
        let c: ShipperConfig =
            serde_json::from_str(r#"{"server":"x","token":"t","spool_dir":"d","retry_initial":"20ms"}"#).unwrap();
        assert_eq!(c.retry_initial, Duration::from_millis(20));
    }

    #[test]
    fn validation_never_shows_the_token() {
        let mut c = ShipperConfig::new("http://127.0.0.1:1", Secret::from(b"sec ret".to_vec()), "/tmp/x");
        let err = c.validate().unwrap_err().to_string();
        assert!(!err.contains("sec ret") && err.contains("token"), "{err}");
        c.token = Secret::from(b"ok".to_vec());
        c.max_spool_bytes = 1000;
        assert!(c.validate().is_err());
    }

    #[test]
    fn events_url_is_checked() {
        assert_eq!(
            events_url("https://a.example:8443/base/").unwrap().to_string(),
            "https://a.example:8443/base/audit/v1/events"
        );
        assert_eq!(events_url("http://127.0.0.1:9").unwrap().to_string(), "http://127.0.0.1:9/audit/v1/events");
        for bad in [
            "ftp://a",
            "a.example",
            "https://user:pw@a.example",
            "https://a.example/?q=1",
            "https://a.example/#f",
            "http://",
        ] {
            assert!(events_url(bad).is_err(), "{bad}");
        }
    }
}
