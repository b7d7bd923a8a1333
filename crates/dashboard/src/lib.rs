//! Palisade security dashboard, served under `/ui` by `palisade server`.
//!
//! What it is for: a browser UI (service graph, live audit events, alerts, certificates,
//! policies, top denied principals) and the small JSON/SSE API behind it, with its own login:
//! OIDC authorization code + PKCE against Palisade's IdP, or the admin token. Sessions live in
//! memory on the server; the browser only holds an opaque, HttpOnly cookie.
//!
//! What it is not for: it computes nothing about traffic. Every number it shows comes from a
//! [`DashboardData`] implementation the server provides (audit log, monitor, CA, policy store),
//! so this crate depends on none of those crates. The UI is plain ES modules, CSS and SVG
//! embedded in the binary: no build step, no external resource, a strict CSP.
//!
//! ```ignore
//! let ui = palisade_dashboard::router(cfg, Arc::new(MyData { .. }));
//! let app = idp.router().merge(ui);
//! ```

mod api;
mod assets;
mod auth;
mod error;
mod oidc;
mod pages;
mod session;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use error::DataError;

/// How the dashboard is reached and who may sign in.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// Our IdP's issuer URL (exactly its `iss`), e.g. `http://127.0.0.1:9400`.
    pub issuer: String,
    /// The dashboard's OAuth client id: a public client using PKCE (no secret).
    pub client_id: String,
    /// Where `/ui` is reached from a browser (scheme, host, port; no path). The OIDC
    /// `redirect_uri` is `<public_url>/ui/callback`; an `https` URL makes the cookie `Secure`.
    pub public_url: String,
    /// The ID token's `roles` claim must hold one of these.
    pub allowed_roles: Vec<String>,
    /// Lower-case hex SHA-256 of the admin token; `None` disables admin-token login and bearer
    /// access to the API.
    pub admin_token_sha256: Option<String>,
}

impl DashboardConfig {
    /// A configuration with `allowed_roles = ["admin"]` and no admin token.
    pub fn new(issuer: &str, client_id: &str, public_url: &str) -> DashboardConfig {
        DashboardConfig {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            public_url: public_url.to_owned(),
            allowed_roles: vec!["admin".to_owned()],
            admin_token_sha256: None,
        }
    }
}

/// What kind of box a graph node is drawn as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Service,
    Gateway,
    External,
}

/// One workload, gateway or outside caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub label: String,
    pub kind: NodeKind,
}

/// Traffic from one node to another over the observed window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub requests: u64,
    pub denies: u64,
    /// Every request on this edge was mutually authenticated.
    pub mtls: bool,
}

/// The service graph.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// A search over stored audit records. Every filter that is `Some` must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only records at or after this time (Unix milliseconds).
    pub since_ms: Option<u64>,
    pub principal: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
    /// The emitting component (`gateway`, `sidecar`, `idp`, ...).
    pub source: Option<String>,
    /// At most this many records, newest first (1..=1000).
    pub limit: usize,
}

/// One item of the live stream.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveItem {
    /// An audit record as a JSON object (`id`, `time`, `source`, `principal`, `decision`, ...).
    Event(Value),
    /// A new or updated alert as a JSON object (`id`, `kind`, `severity`, `summary`, ...).
    Alert(Value),
}

/// A certificate the platform holds (CA, workload SVID, listener certificate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    pub name: String,
    pub kind: String,
    pub subject: String,
    /// RFC 3339.
    pub not_after: String,
    /// Negative once expired.
    pub seconds_left: i64,
}

/// One authorization policy in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub id: String,
    pub source: String,
    pub text: String,
}

/// Everything the dashboard shows, provided by the server. Implementations should answer
/// quickly (the UI polls some of these every few seconds) and never block the runtime.
#[async_trait]
pub trait DashboardData: Send + Sync + 'static {
    async fn graph(&self) -> Graph;
    async fn events(&self, query: EventQuery) -> Vec<Value>;
    /// A receiver of live events and alerts; one per open event stream.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<LiveItem>;
    /// Alerts as JSON objects (`id`, `kind`, `severity`, `summary`, `count`, `first_seen`,
    /// `last_seen`, `event_ids`, `acked_by`, `acked_at`).
    async fn alerts(&self) -> Vec<Value>;
    /// Acknowledge alert `id` on behalf of `by`; `Ok(false)` when there is no such alert.
    async fn ack(&self, id: &str, by: &str) -> Result<bool, DataError>;
    async fn certs(&self) -> Vec<CertInfo>;
    async fn policies(&self) -> Vec<PolicyInfo>;
    /// The principals denied most often, most denied first.
    async fn top_denied(&self, limit: usize) -> Vec<(String, u64)>;
}

/// Shared state of all handlers.
pub(crate) struct App {
    pub(crate) cfg: DashboardConfig,
    pub(crate) data: Arc<dyn DashboardData>,
    pub(crate) sessions: session::Sessions,
    pub(crate) oidc: oidc::Oidc,
    /// SHA-256 of the admin token, decoded from the configuration.
    pub(crate) admin_sha: Option<[u8; 32]>,
    pub(crate) secure_cookie: bool,
}

pub(crate) type AppState = Arc<App>;

/// The `/ui` router: pages, assets, login, and the `/ui/api` data API. It has no fallback, so
/// it merges into the server's router.
///
/// An `admin_token_sha256` that is not 64 hex digits disables admin-token access (logged), it
/// never matches anything.
pub fn router(cfg: DashboardConfig, data: Arc<dyn DashboardData>) -> Router {
    let admin_sha = cfg.admin_token_sha256.as_deref().and_then(|h| {
        let parsed = auth::parse_sha256_hex(h);
        if parsed.is_none() {
            tracing::warn!("dashboard: admin_token_sha256 is not 64 hex digits; admin-token login disabled");
        }
        parsed
    });
    let secure_cookie = cfg.public_url.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("https://"));
    let app = Arc::new(App {
        oidc: oidc::Oidc::new(&cfg),
        cfg,
        data,
        sessions: session::Sessions::new(),
        admin_sha,
        secure_cookie,
    });
    pages::routes().merge(api::routes()).layer(axum::middleware::map_response(pages::security_headers)).with_state(app)
}
