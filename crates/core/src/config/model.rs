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
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub client_ip: ClientIp,
    #[serde(default)]
    pub authentication: Authentication,
    #[serde(default)]
    pub authorization: Authorization,
    #[serde(default)]
    pub rate_limiting: RateLimiting,
    #[serde(default)]
    pub security_headers: SecurityHeadersConfig,
    /// The WAF rule set (ModSecurity SecLang, e.g. the OWASP Core Rule Set) that routes with a
    /// `waf` section run.
    pub waf: Option<WafConfig>,
    /// Service mesh membership: where this sidecar gets its SVID and which trust domain it is in.
    pub mesh: Option<MeshConfig>,
    /// The `palisade server` vault that routes with a `transform` section call.
    pub vault: Option<VaultClientConfig>,
}

/// `mesh:` the workload CA this sidecar joins. The engine only validates and exposes it: the
/// `palisade` binary fetches and rotates the SVID and hands the engine an `SvidSource`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// Base URL of the Palisade CA (`http://` or `https://`).
    pub server: String,
    /// PEM CA bundle that must have issued an `https://` server's certificate.
    pub server_ca: Option<PathBuf>,
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// One-time join token: a secret, so `file:PATH` or `${ENV_VAR}`. Exactly one of
    /// `join_token` and `k8s_token_file`.
    pub join_token: Option<SecretRef>,
    /// Projected Kubernetes service account token to attest with.
    pub k8s_token_file: Option<PathBuf>,
}

fn default_trust_domain() -> String {
    "palisade.local".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    pub http: Option<HttpListener>,
    pub https: Option<HttpsListener>,
    /// Inbound mTLS listener of the mesh (SVID-authenticated peers only). Needs `mesh:`.
    pub mesh: Option<MeshListener>,
    /// Extra plain-HTTP listeners, e.g. a sidecar's outbound ports (one per destination).
    #[serde(default)]
    pub local: Vec<LocalListener>,
}

/// Names the built-in listeners have in `match.listeners`.
pub const LISTENER_HTTP: &str = "http";
pub const LISTENER_HTTPS: &str = "https";
pub const LISTENER_MESH: &str = "mesh";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshListener {
    pub address: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalListener {
    /// Name used in routes' `match.listeners`; not `http`, `https` or `mesh`.
    pub name: String,
    pub address: SocketAddr,
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
    pub client_auth: Option<ClientAuth>,
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
    /// Time allowed to receive a request head from its first byte, a new connection's first
    /// head from the connection's start, and a TLS handshake; slowloris defence. A keep-alive
    /// connection waiting for its next request is bound by `idle_timeout` instead. Both are
    /// checked every quarter of the smaller one: a connection is closed between its limit and a
    /// quarter of the smaller limit later, never before.
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
    /// Connect with mTLS using this sidecar's SVID; the peer must present `identity`.
    #[serde(default)]
    pub mesh: bool,
    /// SPIFFE ID the upstream must present (required with `mesh: true`).
    pub identity: Option<String>,
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
    pub authn: Option<RouteAuthn>,
    pub authz: Option<RouteAuthz>,
    #[serde(default)]
    pub rate_limit: Vec<RateLimitRule>,
    pub validate: Option<Validate>,
    pub cors: Option<Cors>,
    /// Replaces the top-level `security_headers` for this route.
    pub security_headers: Option<SecurityHeadersConfig>,
    /// Run the top-level `waf` rule set on this route's requests.
    pub waf: Option<RouteWaf>,
    /// Tokenize or encrypt request-body fields; detokenize, decrypt or mask response fields.
    pub transform: Option<Transform>,
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
    /// Listeners (`http`, `https`, `mesh` or a `local` name) whose requests this route takes.
    /// Unset: every listener except `mesh` (the mesh only reaches routes that name it).
    pub listeners: Option<Vec<String>>,
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

// ---------------------------------------------------------------------------------------------
// Gateway security: authentication, authorization, rate limiting, validation, CORS, headers,
// audit. Top-level sections hold what routes share; each route opts in to its filters.
// ---------------------------------------------------------------------------------------------

/// `audit:` where audit events go.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// JSON-lines file (relative to the config file); its directory is created.
    pub file: Option<PathBuf>,
    /// Ship events to `palisade server` in batches, through an on-disk spool.
    pub ship: Option<AuditShip>,
}

/// `audit.ship:` the server's ingest endpoint and the local spool that holds events until the
/// server has acknowledged them (nothing is lost across a server outage or a restart).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditShip {
    /// Base URL of `palisade server` (`http://127.0.0.1:9400`); events go to `/audit/v1/events`.
    pub server: String,
    /// The ingest token (`<data>/audit-ingest.token` of the server, or its admin token).
    pub token: SecretRef,
    /// Spool directory (relative to the config file), created 0700; one process per directory.
    pub spool_dir: PathBuf,
    /// PEM roots for an https server (default: Mozilla's roots).
    pub ca_file: Option<PathBuf>,
    /// Most bytes the spool holds while the server is unreachable; past it new events are dropped
    /// and counted.
    #[serde(default = "default_spool_max")]
    pub max_spool_bytes: u64,
}

fn default_spool_max() -> u64 {
    256 << 20
}

/// `client_ip:` how the client address is found behind proxies.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientIp {
    /// CIDRs of proxies whose `X-Forwarded-For` is believed. The client IP is the rightmost
    /// address in `X-Forwarded-For` that is not a trusted proxy.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// `authentication:` issuers, API keys and DPoP settings shared by routes.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    #[serde(default)]
    pub jwt_issuers: Vec<JwtIssuer>,
    pub api_keys: Option<ApiKeys>,
    #[serde(default)]
    pub dpop: DpopConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuer {
    /// The `iss` value, also the base URL for discovery (`/.well-known/openid-configuration`).
    pub issuer: String,
    /// Skip discovery and fetch keys here.
    pub jwks_uri: Option<String>,
    /// Accepted `aud` values; empty accepts any audience.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted JWS algorithms (asymmetric only).
    #[serde(default = "default_jwt_algs")]
    pub algorithms: Vec<String>,
    /// Accepted `typ` header values.
    #[serde(default = "default_jwt_typ")]
    pub typ: Vec<String>,
    #[serde(default = "default_leeway")]
    pub leeway: Dur,
    /// Extra CA (PEM) for an https issuer.
    pub ca: Option<PathBuf>,
    #[serde(default = "default_jwks_refresh")]
    pub refresh_interval: Dur,
    #[serde(default = "default_jwks_min_refresh")]
    pub min_refresh_interval: Dur,
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
}

fn default_jwt_algs() -> Vec<String> {
    vec!["ES256".into(), "RS256".into(), "EdDSA".into()]
}
fn default_jwt_typ() -> Vec<String> {
    vec!["at+jwt".into(), "JWT".into()]
}
fn default_leeway() -> Dur {
    secs(30)
}
fn default_jwks_refresh() -> Dur {
    secs(300)
}
fn default_jwks_min_refresh() -> Dur {
    secs(10)
}
fn default_max_token_bytes() -> usize {
    8192
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeys {
    /// Header carrying the key.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// Query parameter that may carry the key; off unless set (keys in URLs end up in logs).
    pub query: Option<String>,
    /// At most two keys per client (rotation). Keys are stored as `sha256:<hex>` hashes:
    /// `palisade apikey generate` prints a key and its hash.
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
}

fn default_api_key_header() -> String {
    "x-api-key".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    pub client: String,
    pub hash: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpopConfig {
    /// How far a proof's `iat` may be from now.
    pub iat_window: Dur,
    /// How long a proof `jti` is remembered (replay cache).
    pub replay_ttl: Dur,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig { iat_window: secs(60), replay_ttl: secs(300) }
    }
}

/// `authorization:` Cedar policy files that apply to every route with an `authz` section.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(default)]
    pub policies: Vec<PathBuf>,
    /// A mesh policy (service-to-service allow-list, `palisade-policy::mesh`): its rules whose `to`
    /// is this proxy's own SPIFFE ID join the Cedar policies. Needs the `mesh` section.
    pub mesh_policy: Option<PathBuf>,
}

/// `rate_limiting:` the shared store for routes that say `store: redis`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiting {
    pub redis: Option<RedisStore>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisStore {
    /// `redis://host:port[/db]`, without a password.
    pub url: String,
    pub password: Option<SecretRef>,
    #[serde(default = "default_redis_timeout")]
    pub timeout: Dur,
    /// What a request gets when Redis cannot answer.
    #[serde(default)]
    pub on_error: OnError,
}

fn default_redis_timeout() -> Dur {
    Dur(Duration::from_millis(50))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    #[default]
    FailClosed,
    FailOpen,
}

/// `security_headers:` response headers added by the gateway (top level, or per route).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHeadersConfig {
    pub enabled: bool,
    /// Sent on HTTPS responses only.
    pub hsts: Option<String>,
    pub content_type_options: bool,
    pub frame_options: Option<String>,
    pub referrer_policy: Option<String>,
    pub csp: Option<String>,
    /// Replace headers the upstream set (default: keep the upstream's).
    pub override_upstream: bool,
}

impl Default for SecurityHeadersConfig {
    fn default() -> Self {
        SecurityHeadersConfig {
            enabled: true,
            hsts: Some("max-age=31536000; includeSubDomains".into()),
            content_type_options: true,
            frame_options: Some("DENY".into()),
            referrer_policy: Some("no-referrer".into()),
            csp: None,
            override_upstream: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthnMethod {
    Jwt,
    ApiKey,
    Mtls,
}

/// A route's `authn:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthn {
    /// Accepted credentials, tried in this order.
    pub methods: Vec<AuthnMethod>,
    /// Accept `access_token` in the query string (RFC 6750 §2.3; off by default).
    #[serde(default)]
    pub query_token: bool,
    /// Refuse bearer tokens that are not DPoP-bound.
    #[serde(default)]
    pub require_dpop: bool,
}

/// A route's `authz:` section: compiled to Cedar with the files of `authorization.policies`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthz {
    /// Requests without credentials may pass (as `Anonymous`) when a policy permits them.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Each entry permits the request when all of its conditions hold.
    #[serde(default)]
    pub require: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// Methods this entry covers; empty covers every method.
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Claim name → required value (a list: the claim must contain every item).
    #[serde(default)]
    pub claims: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateStore {
    #[default]
    Local,
    Redis,
}

/// One rate limit of a route (GCRA).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// Shown in the `RateLimit-Policy` header.
    #[serde(default = "default_rl_name")]
    pub name: String,
    /// Requests allowed per `period`.
    pub limit: u32,
    pub period: Dur,
    /// Extra requests allowed back to back.
    #[serde(default)]
    pub burst: u32,
    /// What one bucket is: any of `principal`, `client_id`, `api_key`, `client_ip`, `route`,
    /// `header:<name>`. Requests that lack a key part share the bucket of that empty part.
    pub key: Vec<String>,
    #[serde(default)]
    pub store: RateStore,
}

fn default_rl_name() -> String {
    "default".into()
}

/// A route's `validate:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validate {
    /// Accepted request media types (e.g. `application/json`); empty accepts any.
    #[serde(default)]
    pub content_types: Vec<String>,
    #[serde(default = "default_json_depth")]
    pub max_json_depth: usize,
    /// Bodies buffered for validation may not exceed this (else 413).
    #[serde(default = "default_validate_body")]
    pub max_body_bytes: u64,
    /// JSON Schema (JSON or YAML file) for the body.
    pub json_schema: Option<PathBuf>,
    /// JSON Schema for the query parameters (as an object of strings / arrays).
    pub query_schema: Option<PathBuf>,
    pub openapi: Option<OpenApiRef>,
}

fn default_json_depth() -> usize {
    32
}
fn default_validate_body() -> u64 {
    1024 * 1024
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenApiRef {
    pub file: PathBuf,
    /// `operationId`; without it the operation is found by method and path.
    pub operation: Option<String>,
}

/// A route's `cors:` section.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    pub max_age: Option<Dur>,
}

/// `listeners.https.client_auth:` ask clients for certificates (mTLS).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// PEM bundle of CAs that client certificates must chain to.
    pub ca: PathBuf,
    /// Refuse the TLS handshake without a certificate (otherwise routes decide).
    #[serde(default)]
    pub required: bool,
}

// ---------------------------------------------------------------------------------------------
// WAF: one SecLang rule set (top level), run by the routes that opt in, each with its own mode,
// paranoia level and exclusions.
// ---------------------------------------------------------------------------------------------

/// `waf:` the rule set. With the OWASP Core Rule Set: `rules: [crs/crs-setup.conf, crs/rules/*.conf]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WafConfig {
    /// SecLang files in load order, relative to this config file; `*` globs expand in name order.
    pub rules: Vec<String>,
    /// SecLang directives loaded after the files.
    #[serde(default)]
    pub directives: String,
    /// CRS paranoia level (1-4) for routes that do not set their own.
    #[serde(default = "default_paranoia")]
    pub paranoia_level: u8,
    /// CRS inbound anomaly score at which a request is blocked.
    #[serde(default = "default_inbound_threshold")]
    pub inbound_threshold: u32,
    /// CRS outbound anomaly score threshold.
    #[serde(default = "default_outbound_threshold")]
    pub outbound_threshold: u32,
    /// Request bodies up to this size are inspected; a larger one is refused with 413.
    #[serde(default = "default_waf_body")]
    pub max_body_bytes: u64,
    /// Remember per worker what rules that depend only on a value answered for it (the WAF's
    /// verdict memo; decisions are the same either way). `false` evaluates every rule every time.
    #[serde(default = "default_true")]
    pub verdict_memo: bool,
}

fn default_true() -> bool {
    true
}
fn default_paranoia() -> u8 {
    1
}
fn default_inbound_threshold() -> u32 {
    5
}
fn default_outbound_threshold() -> u32 {
    4
}
fn default_waf_body() -> u64 {
    128 * 1024
}

/// A route's `waf:` section.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteWaf {
    #[serde(default)]
    pub mode: WafMode,
    /// Overrides `waf.paranoia_level` for this route.
    pub paranoia_level: Option<u8>,
    /// Rules (or rule targets) not run on this route: the `SecRuleRemoveById`,
    /// `SecRuleRemoveByTag` and `ctl:ruleRemoveTargetById` of ModSecurity, per route.
    #[serde(default)]
    pub exclusions: Vec<WafExclusion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WafMode {
    /// Refuse a request the rules decide to block (403), and audit it.
    #[default]
    Block,
    /// Audit what the rules match; block nothing.
    Detect,
    /// Do not run the rules.
    Off,
}

/// One exclusion: `rule: 942100` or `rule: 942100-942199` (a range) or `tag: attack-sqli`;
/// with `target: ARGS:password`, only that variable is taken out of the rule(s).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WafExclusion {
    pub rule: Option<RuleIds>,
    pub tag: Option<String>,
    pub target: Option<String>,
}

/// A rule id or an inclusive range `FIRST-LAST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleIds(pub u32, pub u32);

impl<'de> Deserialize<'de> for RuleIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u32),
            S(String),
        }
        let bad = |s: &str| D::Error::custom(format!("invalid rule id {s:?}: write 942100 or 942100-942199"));
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(RuleIds(n, n)),
            Raw::S(s) => {
                let (a, b) = s.split_once('-').unwrap_or((&s, &s));
                let a: u32 = a.trim().parse().map_err(|_| bad(&s))?;
                let b: u32 = b.trim().parse().map_err(|_| bad(&s))?;
                if a > b {
                    return Err(bad(&s));
                }
                Ok(RuleIds(a, b))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Field-level data protection: the gateway's transform filter and the vault it calls.
// ---------------------------------------------------------------------------------------------

/// `vault:` the vault API of `palisade server` (`/vault/v1/...`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultClientConfig {
    /// Base URL of `palisade server` (`http://127.0.0.1:9400`).
    pub server: String,
    /// Bearer token: the server's admin token or an access token with scope `vault`.
    pub token: SecretRef,
    /// PEM roots for an https server (default: Mozilla's roots).
    pub ca_file: Option<PathBuf>,
    /// Deadline of one vault call; past it the request is refused (503) or the response masked.
    #[serde(default = "default_vault_timeout")]
    pub timeout: Dur,
}

fn default_vault_timeout() -> Dur {
    secs(2)
}

/// A route's `transform:` section. Bodies are buffered (JSON only) up to `max_body_bytes`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// Fields protected before the request goes upstream.
    #[serde(default)]
    pub request: Vec<RequestTransform>,
    /// Fields revealed (to callers allowed by `reveal`) or masked in the response.
    #[serde(default)]
    pub response: Vec<ResponseTransform>,
    /// Largest request or response body transformed. A larger request is refused (413); a larger
    /// response goes to the client unchanged.
    #[serde(default = "default_transform_body")]
    pub max_body_bytes: u64,
}

fn default_transform_body() -> u64 {
    1 << 20
}

/// One request rule: a JSON pointer (RFC 6901; `*` matches every array element or member) and
/// exactly one of `tokenize` or `encrypt`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestTransform {
    pub pointer: String,
    pub tokenize: Option<TokenizeRule>,
    pub encrypt: Option<EncryptRule>,
}

/// One response rule: a JSON pointer and exactly one of `detokenize` or `decrypt`; callers that
/// `reveal` allows see the clear value, everyone else a mask (`****1234`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseTransform {
    pub pointer: String,
    pub detokenize: Option<TokenizeRule>,
    pub decrypt: Option<EncryptRule>,
    #[serde(default)]
    pub reveal: Reveal,
}

/// A vault tokenization key and the value's format (`card`, `ssn`, `phone` or `digits`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRule {
    pub key: String,
    pub format: String,
}

/// A vault encryption key and the associated data (context) bound to the ciphertext.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptRule {
    pub key: String,
    pub context: Option<String>,
}

/// Who sees a response field in clear: a caller with any of these roles or scopes.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reveal {
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}
