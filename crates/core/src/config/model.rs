//! Typed configuration. Every struct denies unknown fields: a security config must never
//! silently drop a setting it did not understand.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

use crate::secret::SecretRef;

/// A duration written like `500ms`, `5s`, `1m30s`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(Dur)
            .map_err(|_| D::Error::custom(format!("invalid duration {s:?}: write e.g. 500ms, 5s or 1m")))
    }
}

fn secs(n: u64) -> Dur {
    Dur(Duration::from_secs(n))
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Worker threads, each with its own listeners and upstream pools; 0 = one per core.
    /// Changing it needs a restart.
    #[serde(default)]
    pub workers: usize,
    pub listeners: Listeners,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub access_log: AccessLog,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    pub http: Option<HttpListener>,
    pub https: Option<HttpsListener>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpListener {
    pub address: SocketAddr,
    /// Answer every request with a 308 redirect to the HTTPS listener.
    #[serde(default)]
    pub redirect_to_https: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsListener {
    pub address: SocketAddr,
    /// Certificates chosen by SNI; the first one also serves clients that send no SNI.
    pub certificates: Vec<Certificate>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// PEM certificate chain (leaf first). Public, so a plain path.
    pub cert: PathBuf,
    /// PEM private key: a secret, so `file:PATH` or `${ENV_VAR}`.
    pub key: SecretRef,
    /// SNI names this certificate answers (exact or `*.example.com`). Empty: only the default.
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: SocketAddr,
}

impl Default for Admin {
    fn default() -> Self {
        Admin { address: SocketAddr::from(([127, 0, 0, 1], 9901)) }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head (request line + headers), else 431.
    pub max_header_bytes: usize,
    /// Largest request body, counted while streaming, else 413.
    pub max_body_bytes: u64,
    /// Time allowed to receive a request head (and a TLS handshake); slowloris defence.
    /// HTTP/1.1 keep-alive connections waiting for their next request are bound by it too.
    pub header_read_timeout: Dur,
    /// Close a connection with no request in flight and no bytes moving for this long.
    pub idle_timeout: Dur,
    /// Concurrent client connections; more are closed at accept.
    pub max_connections: usize,
    /// On SIGTERM, how long in-flight requests get to finish.
    pub drain_timeout: Dur,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            header_read_timeout: secs(10),
            idle_timeout: secs(60),
            max_connections: 10_000,
            drain_timeout: secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLog {
    pub enabled: bool,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog { enabled: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastRequest,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `host:port` of each endpoint.
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Time until the upstream's response head arrives, else 504.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// Idle keep-alive connections are closed after this long.
    #[serde(default = "default_pool_idle")]
    pub keepalive_timeout: Dur,
    #[serde(default = "default_max_idle")]
    pub max_idle_per_endpoint: usize,
    /// Extra attempts on another endpoint, only for idempotent requests without a body.
    #[serde(default = "default_retries")]
    pub retries: u32,
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub passive_ejection: PassiveEjection,
    pub tls: Option<UpstreamTls>,
}

fn default_connect_timeout() -> Dur {
    secs(2)
}
fn default_request_timeout() -> Dur {
    secs(30)
}
fn default_pool_idle() -> Dur {
    secs(90)
}
fn default_max_idle() -> usize {
    256
}
fn default_retries() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Dur,
    pub timeout: Dur,
    /// Consecutive passes before an unhealthy endpoint is used again.
    pub healthy_threshold: u32,
    /// Consecutive failures before an endpoint is taken out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/healthz".into(),
            interval: secs(5),
            timeout: secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveEjection {
    /// Consecutive failures (connect errors, timeouts, 502/503/504) before ejection; 0 disables.
    pub consecutive_failures: u32,
    pub ejection_time: Dur,
}

impl Default for PassiveEjection {
    fn default() -> Self {
        PassiveEjection { consecutive_failures: 5, ejection_time: secs(30) }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM CA bundle that must have issued the upstream's certificate.
    pub ca: PathBuf,
    /// Name to verify (and send as SNI); defaults to the endpoint host.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    pub upstream: String,
    #[serde(default)]
    pub request_headers: HeaderOps,
    #[serde(default)]
    pub response_headers: HeaderOps,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Host names (exact or `*.suffix`); empty matches any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub path: Option<PathMatch>,
    /// Methods; empty matches any.
    #[serde(default)]
    pub methods: Vec<String>,
}

/// Exactly one of `exact`, `prefix` or `regex`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    pub exact: Option<String>,
    /// Segment-aware: `/orders` matches `/orders` and `/orders/1`, not `/ordersx`.
    pub prefix: Option<String>,
    /// Matched against the whole path (anchored).
    pub regex: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Set (replace) these headers.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}
