//! Palisade's identity provider: an OAuth 2.x / OpenID Connect authorization server.
//!
//! Endpoints (mounted by `palisade server`):
//! - discovery: `/.well-known/openid-configuration`, `/.well-known/oauth-authorization-server`, `/jwks.json`
//! - `/oauth2/authorize`: server-rendered login and consent, CSRF-protected ([`authorize`])
//! - `/oauth2/token`: client_credentials, authorization_code (+PKCE), refresh_token (rotation with
//!   reuse detection), token exchange (RFC 8693) ([`token`])
//! - `/oauth2/introspect` (RFC 7662), `/oauth2/revoke` (RFC 7009), `/userinfo`, `/oauth2/logout`
//! - `/admin/...` REST API guarded by the admin credential, described by `/openapi.json` ([`admin`])
//!
//! State lives in the database ([`repo`]); signing keys are a sealed [`palisade_crypto::Keyset`]
//! ([`keys`]). Nothing here logs a token, secret or password.

pub mod admin;
mod authorize;
mod cache;
mod client_auth;
mod endpoints;
pub mod error;
mod form;
mod html;
pub mod keys;
pub mod model;
pub mod ops;
pub mod repo;
pub mod secrets;
mod throttle;
mod token;
mod tokens;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use palisade_crypto::{Alg, MasterKey};
use palisade_store::Store;

pub use keys::Keys;
pub use repo::Repo;

/// How the server is set up. Lifetimes are seconds.
#[derive(Debug, Clone)]
pub struct IdpConfig {
    /// The `iss` of every token and the base of every endpoint URL (no trailing slash).
    pub issuer: String,
    pub access_token_ttl: u64,
    pub id_token_ttl: u64,
    pub refresh_token_ttl: u64,
    pub session_ttl: u64,
    /// Algorithm of the first key (and of rotations that name none).
    pub key_alg: Alg,
    /// How often the stored keyset is re-read.
    pub key_refresh: Duration,
    /// SHA-256 (hex) of the admin API credential; `None` turns the admin API off.
    pub admin_token_sha256: Option<String>,
}

impl IdpConfig {
    pub fn new(issuer: &str) -> IdpConfig {
        IdpConfig {
            issuer: issuer.trim_end_matches('/').to_owned(),
            access_token_ttl: 600,
            id_token_ttl: 600,
            refresh_token_ttl: 86_400,
            session_ttl: 8 * 3600,
            key_alg: Alg::ES256,
            key_refresh: Duration::from_secs(5),
            admin_token_sha256: None,
        }
    }

    /// The longest a signed token lives: how long a retired key must stay in the JWKS.
    pub fn max_token_lifetime(&self) -> u64 {
        self.access_token_ttl.max(self.id_token_ttl)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    fn secure_cookies(&self) -> bool {
        self.issuer.starts_with("https://")
    }
}

/// What the listener knows about the connection; inserted as a request extension by the server.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// DER of the verified TLS client certificate, if the client sent one.
    pub client_cert: Option<Arc<Vec<u8>>>,
}

impl Default for Peer {
    fn default() -> Self {
        Peer { addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), client_cert: None }
    }
}

pub struct Idp {
    pub cfg: IdpConfig,
    pub repo: Repo,
    pub keys: Arc<Keys>,
    secret_cache: secrets::VerifiedCache,
    throttle: throttle::Throttle,
    revoked: cache::Revoked,
    clients: cache::Clients,
    verified: cache::Verified,
    audit: std::sync::OnceLock<Arc<dyn palisade_core::audit::AuditSink>>,
}

impl Idp {
    /// Where sign-in and token-endpoint decisions go (set once, by the server).
    pub fn set_audit_sink(&self, sink: Arc<dyn palisade_core::audit::AuditSink>) {
        let _ = self.audit.set(sink);
    }

    /// Record a decision of the idp. `principal` is a Cedar-style principal (`User::"alice"`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn audit(
        &self,
        stage: palisade_core::audit::Stage,
        deny: bool,
        principal: String,
        client_id: Option<&str>,
        peer: &Peer,
        path: &str,
        status: u16,
        reason: &str,
    ) {
        use palisade_core::audit::{now_rfc3339, AuditEvent, Decision};
        let Some(sink) = self.audit.get() else { return };
        sink.record(AuditEvent {
            time: now_rfc3339(),
            source: "idp".into(),
            service: None,
            request_id: secrets::random_token(8),
            decision: if deny { Decision::Deny } else { Decision::Allow },
            stage,
            reason: reason.to_owned(),
            principal,
            client_id: client_id.map(|c| c.chars().take(128).collect()),
            auth_method: None,
            route: "idp".into(),
            method: "POST".into(),
            path: path.to_owned(),
            client_ip: peer.addr.ip().to_string(),
            policy_ids: Vec::new(),
            status,
            latency_ms: 0.0,
            waf: Vec::new(),
        });
    }

    pub async fn new(store: &Store, master: MasterKey, cfg: IdpConfig) -> Result<Arc<Idp>, keys::KeyError> {
        let repo = Repo::new(store.pool().clone());
        let keys = Arc::new(Keys::load(repo.clone(), master, cfg.key_alg).await?);
        let revoked = cache::Revoked::default();
        revoked.sync(&repo).await?;
        Ok(Arc::new(Idp {
            cfg,
            repo,
            keys,
            secret_cache: secrets::VerifiedCache::default(),
            throttle: throttle::Throttle::default(),
            revoked,
            clients: cache::Clients::default(),
            verified: cache::Verified::default(),
            audit: std::sync::OnceLock::new(),
        }))
    }

    /// Background upkeep: keyset refresh and purging of expired rows. Abort the handles to stop.
    pub fn spawn_background(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let keys = self.keys.clone();
        let every = self.cfg.key_refresh;
        let repo = self.repo.clone();
        let me = self.clone();
        vec![
            tokio::spawn(keys.refresh_loop(every)),
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Err(e) = me.revoked.sync(&me.repo).await {
                        tracing::warn!(error = %e, "cannot sync revocations");
                    }
                }
            }),
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    match repo.purge_expired(palisade_store::now()).await {
                        Ok(n) if n > 0 => tracing::debug!(rows = n, "purged expired idp state"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot purge expired idp state"),
                    }
                }
            }),
        ]
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(endpoints::discovery))
            .route("/.well-known/oauth-authorization-server", get(endpoints::discovery))
            .route("/jwks.json", get(endpoints::jwks))
            .route("/oauth2/authorize", get(authorize::get).post(authorize::post))
            .route("/oauth2/token", post(token::token))
            .route("/oauth2/introspect", post(endpoints::introspect))
            .route("/oauth2/revoke", post(endpoints::revoke))
            .route("/userinfo", get(endpoints::userinfo).post(endpoints::userinfo))
            .route("/oauth2/logout", get(endpoints::logout).post(endpoints::logout))
            .merge(admin::router())
            .layer(DefaultBodyLimit::max(64 * 1024))
            .with_state(self.clone())
    }
}

impl Idp {
    /// A client registration, from the one-second cache.
    pub(crate) async fn client(&self, id: &str) -> Result<Option<Arc<model::Client>>, sqlx::Error> {
        self.clients.get(&self.repo, id).await
    }

    /// Revoke a grant (refresh family and its access tokens) here and in the database.
    pub(crate) async fn revoke_grant(&self, grant_id: &str) -> Result<(), sqlx::Error> {
        let now = palisade_store::now();
        let until = now + self.revocation_window();
        self.repo.revoke_grant(grant_id, now, until).await?;
        self.revoked.insert(grant_id, until);
        Ok(())
    }

    pub(crate) async fn revoke_jti(&self, jti: &str, until: i64) -> Result<(), sqlx::Error> {
        self.repo.revoke_jti(jti, until).await?;
        self.revoked.insert(jti, until);
        Ok(())
    }

    pub(crate) fn is_revoked(&self, jti: &str, grant_id: Option<&str>) -> bool {
        let now = palisade_store::now();
        self.revoked.contains(jti, now) || grant_id.is_some_and(|g| self.revoked.contains(g, now))
    }
}

fn peer_of(ext: Option<axum::Extension<Peer>>) -> Peer {
    ext.map(|axum::Extension(p)| p).unwrap_or_default()
}

/// Entry points for fuzzing the parsers that take outside input (no sockets, no database).
pub mod fuzzing {
    use http::{header, HeaderMap, HeaderValue};

    /// Bytes as an untrusted token-endpoint request: the first line is an `Authorization` and
    /// `Cookie` header value, the rest a form body. Runs parameter, credential, cookie, scope,
    /// client-assertion and registration parsing. Must never panic.
    pub fn request(data: &[u8]) {
        let (head, body) = match data.iter().position(|b| *b == b'\n') {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, &[][..]),
        };
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(head) {
            headers.insert(header::AUTHORIZATION, v.clone());
            headers.insert(header::COOKIE, v);
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        let _ = crate::client_auth::basic_credentials(&headers);
        let _ = crate::authorize::cookie(&headers, crate::authorize::CSRF_COOKIE);
        if let Ok(p) = crate::form::Params::from_form(&headers, body) {
            if let Some(s) = p.get("scope") {
                for t in crate::form::split_scope(s) {
                    let _ = crate::form::valid_scope_token(&t);
                }
            }
            if let Some(a) = p.get("client_assertion") {
                let _ = crate::client_auth::unverified_subject(a);
            }
        }
        if let Ok(spec) = serde_json::from_slice::<crate::model::ClientSpec>(body) {
            let _ = spec.validate();
        }
        let _ = crate::client_auth::subject_matches(body, "CN=x");
    }
}
