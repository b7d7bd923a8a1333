//! JWT bearer tokens (RFC 7519, RFC 9068) verified against issuers' JWKS, following RFC 8725.
//!
//! Invariants: keys come only from the JWKS fetched from the configured issuer (never from
//! `jku`/`x5u`/`x5c`/`jwk` headers); the key decides the algorithm family and the issuer's
//! allow-list bounds it; a failed refresh keeps the previous keys; no lock is held across an
//! `.await` except the per-issuer single-flight fetch lock (a `tokio::sync::Mutex`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::fetch;
use crate::jose::{self, Alg, PublicKey};
use crate::AuthnError;

/// JWKS larger than this are cut off: an issuer publishes a handful of keys.
const MAX_KEYS: usize = 64;

/// One trusted token issuer.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// Exact `iss` value; also the base of discovery (`{issuer}/.well-known/...`). `http://`
    /// is accepted (loopback, tests); requiring https is the caller's policy.
    pub issuer: String,
    /// Skip discovery and fetch keys from here.
    pub jwks_uri: Option<String>,
    /// Accepted `aud` values; empty means `aud` is not checked.
    pub audiences: Vec<String>,
    /// Accepted JWS algorithms (asymmetric only).
    pub algorithms: Vec<String>,
    /// Accepted `typ` header values (case-insensitive, `application/` optional); empty means
    /// `typ` is not checked.
    pub typ: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// How often the JWKS is refetched by [`JwtAuthenticator::refresh_loop`].
    pub refresh_interval: Duration,
    /// An unknown `kid` triggers at most one refetch per this interval; also the retry delay
    /// while the issuer is unreachable.
    pub min_refresh_interval: Duration,
    /// Extra CA (PEM) trusted for this issuer's https endpoints instead of Mozilla's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Tokens longer than this are refused before any parsing.
    pub max_token_bytes: usize,
}

impl IssuerSettings {
    /// Settings with the defaults: ES256/RS256/EdDSA, typ `at+jwt` or `JWT`, 30 s leeway,
    /// refresh every 5 min, unknown-kid refetch at most every 10 s, 8 KiB tokens.
    pub fn new(issuer: impl Into<String>) -> Self {
        IssuerSettings {
            issuer: issuer.into(),
            jwks_uri: None,
            audiences: Vec::new(),
            algorithms: vec!["ES256".into(), "RS256".into(), "EdDSA".into()],
            typ: vec!["at+jwt".into(), "JWT".into()],
            leeway: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(10),
            ca_pem: None,
            max_token_bytes: 8192,
        }
    }
}

/// A key from an issuer's JWKS.
#[derive(Debug)]
struct CachedKey {
    kid: Option<String>,
    /// The JWK's own `alg`, if it names one we know; a key naming an alg we do not know is
    /// dropped at parse time.
    alg: Option<Alg>,
    key: PublicKey,
}

impl CachedKey {
    fn usable_for(&self, alg: Alg) -> bool {
        self.key.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

#[derive(Debug, Default)]
struct Schedule {
    last_attempt: Option<Instant>,
    last_ok: bool,
    last_on_demand: Option<Instant>,
}

struct Issuer {
    settings: IssuerSettings,
    algs: Vec<Alg>,
    typ: Vec<String>,
    tls: Arc<rustls::ClientConfig>,
    /// `None` until the first successful fetch.
    keys: RwLock<Option<Arc<Vec<CachedKey>>>>,
    /// Completed fetch attempts (successful or not), to detect a refresh done while waiting.
    attempts: AtomicU64,
    schedule: Mutex<Schedule>,
    /// Single flight: one fetch per issuer at a time.
    fetching: tokio::sync::Mutex<()>,
}

/// Verifies bearer JWTs from a fixed set of issuers. `Send + Sync`; share it in an `Arc`
/// across runtimes and run [`JwtAuthenticator::refresh_loop`] on one of them.
pub struct JwtAuthenticator {
    issuers: Vec<Issuer>,
    /// Tokens already verified: a repeat presentation skips the signature check (the hot path
    /// of a gateway). A hit needs the very same token, unexpired, and its issuer's key set
    /// unchanged since (any JWKS change re-verifies).
    verified: Mutex<VerifiedCache>,
}

/// Verified tokens by a 64-bit hash of the compact token under a per-process random seed. The
/// entry keeps the whole token and a hit must equal it, compared without an early exit: a
/// chance (or contrived) collision is a miss that verifies the token, never a wrong answer.
/// Where a SHA-256 of the token was the key, this costs a fast hash and one compare.
#[derive(Default)]
struct VerifiedCache {
    map: HashMap<u64, Verified, foldhash::fast::RandomState>,
    hasher: foldhash::fast::RandomState,
    /// Sum of the kept tokens' lengths, bounded by `VERIFIED_CACHE_BYTES`.
    bytes: usize,
}

impl VerifiedCache {
    fn key(&self, token: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, token.as_bytes())
    }
}

/// Equal bytes, in a time that depends on the lengths only (no early exit on the first
/// difference, which would time how much of a cached token a guess matches).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a8, a_rest) = a.as_chunks::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    let mut diff = a8.iter().zip(b8).fold(0u64, |d, (x, y)| d | (u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y)));
    for (x, y) in a_rest.iter().zip(b_rest) {
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

struct Verified {
    /// The compact token, to tell it from another with the same hash.
    compact: Box<str>,
    token: VerifiedToken,
    issuer: usize,
    keys: std::sync::Weak<Vec<CachedKey>>,
}

/// Bounds of the verified-token cache, in tokens and in the bytes of the tokens kept; when
/// either is reached it is emptied (only valid tokens get in).
const VERIFIED_CACHE: usize = 65_536;
const VERIFIED_CACHE_BYTES: usize = 32 << 20;

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("issuers", &self.issuers.iter().map(|i| &i.settings.issuer).collect::<Vec<_>>())
            .finish()
    }
}

/// A JWT whose signature, issuer, lifetime, audience and header were checked. Only
/// [`JwtAuthenticator`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    issuer: String,
    expires_at: u64,
    /// Shared: the verified-token cache and every request using the token hold the same map.
    claims: Arc<Map<String, Value>>,
    /// What a caller derived from this token (see [`VerifiedToken::derived`]), shared the same way:
    /// it lives exactly as long as the token's place in the verified-token cache.
    derived: Arc<std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>>,
    /// Whether the claims hold `cnf` (a bound token): looked up once, not on every request.
    confirmed: bool,
}

impl VerifiedToken {
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn subject(&self) -> Option<&str> {
        self.str_claim("sub")
    }

    /// `client_id` (RFC 9068), else `azp` (OIDC).
    pub fn client_id(&self) -> Option<&str> {
        self.str_claim("client_id").or_else(|| self.str_claim("azp"))
    }

    /// Space-separated `scope` (RFC 9068), else the `scp` array (Azure AD, Okta).
    pub fn scopes(&self) -> Vec<&str> {
        match self.claims.get("scope") {
            Some(Value::String(s)) => s.split(' ').filter(|s| !s.is_empty()).collect(),
            _ => str_array(self.claims.get("scp")),
        }
    }

    /// `roles` (RFC 9068 §7.2.1.1), plus Keycloak's `realm_access.roles`.
    pub fn roles(&self) -> Vec<&str> {
        let mut roles = str_array(self.claims.get("roles"));
        let realm = self.claims.get("realm_access").and_then(|r| r.get("roles"));
        for r in str_array(realm) {
            if !roles.contains(&r) {
                roles.push(r);
            }
        }
        roles
    }

    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The claims, shared (a reference-count increment, not a copy).
    pub fn shared_claims(&self) -> Arc<Map<String, Value>> {
        Arc::clone(&self.claims)
    }

    /// A value made from this token once, by the first caller, and shared by every later request
    /// that the verified-token cache answers with the same token (e.g. the gateway's identity and
    /// its forwarded headers). `make` runs again, uncached, if another type was stored first.
    pub fn derived<T: std::any::Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Arc<T> {
        if let Some(stored) = self.derived.get() {
            return Arc::clone(stored).downcast::<T>().unwrap_or_else(|_| Arc::new(make()));
        }
        let v = Arc::new(make());
        // Two first requests may race: each made the same value from the same token; one is kept.
        let _ = self.derived.set(v.clone());
        v
    }

    /// `cnf.x5t#S256` (RFC 8705): the token is bound to a client certificate.
    pub fn cnf_x5t_s256(&self) -> Option<&str> {
        self.confirmation()?.get("x5t#S256")?.as_str()
    }

    /// `cnf.jkt` (RFC 9449): the token is bound to a DPoP key.
    pub fn cnf_jkt(&self) -> Option<&str> {
        self.confirmation()?.get("jkt")?.as_str()
    }

    fn confirmation(&self) -> Option<&Value> {
        self.confirmed.then(|| self.claims.get("cnf")).flatten()
    }

    /// `exp`, in Unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// `jti`.
    pub fn token_id(&self) -> Option<&str> {
        self.str_claim("jti")
    }

    fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

fn str_array(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn config_err(issuer: &str, why: impl std::fmt::Display) -> AuthnError {
    AuthnError::Config(format!("issuer {issuer}: {why}"))
}

/// A token parsed and checked up to the point where its key is needed.
struct Pending<'t> {
    issuer: usize,
    alg: Alg,
    kid: Option<String>,
    compact: jose::Compact<'t>,
}

impl JwtAuthenticator {
    /// Validate the settings. No network access happens here; keys are fetched by
    /// [`refresh_all`](Self::refresh_all), [`refresh_loop`](Self::refresh_loop) or on demand.
    pub fn new(settings: Vec<IssuerSettings>) -> Result<Self, AuthnError> {
        if settings.is_empty() {
            return Err(AuthnError::Config("no issuer configured".into()));
        }
        let mut issuers: Vec<Issuer> = Vec::with_capacity(settings.len());
        for s in settings {
            let name = s.issuer.clone();
            if !fetch::is_http_url(&name) {
                return Err(config_err(&name, "issuer must be an http(s) URL"));
            }
            if issuers.iter().any(|i| i.settings.issuer == name) {
                return Err(config_err(&name, "configured twice"));
            }
            if let Some(uri) = &s.jwks_uri {
                if !fetch::is_http_url(uri) || uri.parse::<http::Uri>().is_err() {
                    return Err(config_err(&name, "jwks_uri must be an http(s) URL"));
                }
            }
            if s.algorithms.is_empty() {
                return Err(config_err(&name, "no algorithm allowed"));
            }
            let mut algs = Vec::new();
            for a in &s.algorithms {
                let alg = Alg::from_header(a).map_err(|_| {
                    config_err(&name, format!("algorithm {a:?} is not an asymmetric JWS algorithm we support"))
                })?;
                algs.push(alg);
            }
            if s.typ.iter().any(|t| t.trim().is_empty()) {
                return Err(config_err(&name, "empty typ value"));
            }
            if s.max_token_bytes == 0 {
                return Err(config_err(&name, "max_token_bytes must be positive"));
            }
            if s.refresh_interval.is_zero() || s.min_refresh_interval > s.refresh_interval {
                return Err(config_err(&name, "need 0 < min_refresh_interval <= refresh_interval"));
            }
            let tls = fetch::tls_config(s.ca_pem.as_deref()).map_err(|e| config_err(&name, e))?;
            issuers.push(Issuer {
                typ: s.typ.iter().map(|t| jose::normalize_typ(t)).collect(),
                algs,
                settings: s,
                tls,
                keys: RwLock::new(None),
                attempts: AtomicU64::new(0),
                schedule: Mutex::new(Schedule::default()),
                fetching: tokio::sync::Mutex::new(()),
            });
        }
        Ok(JwtAuthenticator { issuers, verified: Mutex::new(VerifiedCache::default()) })
    }

    /// Verify a bearer token now. An unknown `kid` (or no keys yet) triggers one rate-limited,
    /// single-flight JWKS refetch before the token is refused.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, AuthnError> {
        let now = unix_now();
        if let Some(hit) = self.cached_answer(token, now) {
            return Ok(hit);
        }
        let pending = self.parse(token)?;
        let issuer = self.issuers.get(pending.issuer).ok_or(AuthnError::UnknownIssuer)?;
        let seen = issuer.attempts.load(Ordering::Acquire);
        let result = match self.finish(&pending, now) {
            Err(AuthnError::UnknownKey | AuthnError::KeysUnavailable { .. }) => {
                // A hanging issuer must not hold requests for a whole discovery + JWKS exchange.
                let _ = tokio::time::timeout(fetch::FETCH_TIMEOUT, self.refresh_on_demand(issuer, seen)).await;
                self.finish(&pending, unix_now())
            }
            other => other,
        };
        if let (Ok(t), true) = (&result, self.cacheable(token)) {
            self.remember(token, pending.issuer, t);
        }
        result
    }

    /// The token's verification when the verified-token cache holds it (unexpired, its issuer's
    /// keys unchanged): what [`JwtAuthenticator::verify`] would return, without waiting. `None`
    /// otherwise, which says nothing about the token.
    pub fn verified_now(&self, token: &str) -> Option<VerifiedToken> {
        self.cached_answer(token, unix_now())
    }

    fn cached_answer(&self, token: &str, now: u64) -> Option<VerifiedToken> {
        self.cacheable(token).then(|| self.cached(token, now)).flatten()
    }

    /// Only a token no longer than some issuer allows can be valid, and be cached.
    fn cacheable(&self, token: &str) -> bool {
        self.issuers.iter().any(|i| token.len() <= i.settings.max_token_bytes)
    }

    fn current_keys(&self, issuer: usize) -> Option<Arc<Vec<CachedKey>>> {
        self.issuers.get(issuer)?.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn cached(&self, token: &str, now: u64) -> Option<VerifiedToken> {
        let cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let v = cache.map.get(&cache.key(token)).filter(|v| same_bytes(v.compact.as_bytes(), token.as_bytes()))?;
        let keys = self.current_keys(v.issuer)?;
        (now < v.token.expires_at && std::ptr::eq(v.keys.as_ptr(), Arc::as_ptr(&keys))).then(|| v.token.clone())
    }

    fn remember(&self, compact: &str, issuer: usize, token: &VerifiedToken) {
        let Some(keys) = self.current_keys(issuer) else { return };
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.map.len() >= VERIFIED_CACHE || cache.bytes + compact.len() > VERIFIED_CACHE_BYTES {
            cache.map.clear();
            cache.bytes = 0;
        }
        let key = cache.key(compact);
        let entry = Verified { compact: compact.into(), token: token.clone(), issuer, keys: Arc::downgrade(&keys) };
        cache.bytes += compact.len();
        // A token with the same hash is replaced.
        if let Some(old) = cache.map.insert(key, entry) {
            cache.bytes -= old.compact.len();
        }
    }

    /// Verify against the keys cached now, at Unix time `now`, without any network access.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<VerifiedToken, AuthnError> {
        let pending = self.parse(token)?;
        self.finish(&pending, now)
    }

    /// Fetch every issuer's keys once (e.g. at startup). Issuers that fail keep their
    /// previous keys; the first failure is returned after all were tried.
    pub async fn refresh_all(&self) -> Result<(), AuthnError> {
        let mut first_err = None;
        for issuer in &self.issuers {
            let _flight = issuer.fetching.lock().await;
            if let Err(e) = fetch_keys(issuer).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Refresh the JWKS of every issuer every `refresh_interval` (every `min_refresh_interval`
    /// while an issuer is failing) until `shutdown` completes. Run it on one runtime:
    /// `tokio::spawn(auth.clone().refresh_loop(cancel.cancelled_owned()))`.
    pub async fn refresh_loop(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let pass = async {
                for issuer in &self.issuers {
                    if next_due(issuer).is_some_and(|due| due <= Instant::now()) || never_tried(issuer) {
                        let _flight = issuer.fetching.lock().await;
                        let _ = fetch_keys(issuer).await;
                    }
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = pass => {}
            }
            let now = Instant::now();
            let wait = self
                .issuers
                .iter()
                .filter_map(next_due)
                .map(|due| due.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_secs(1))
                .max(Duration::from_millis(100));
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn refresh_on_demand(&self, issuer: &Issuer, seen_attempts: u64) {
        let _flight = issuer.fetching.lock().await;
        if issuer.attempts.load(Ordering::Acquire) != seen_attempts {
            return; // another task fetched while we waited: its result is what we would get
        }
        {
            let mut sched = issuer.schedule.lock().unwrap_or_else(|p| p.into_inner());
            let min = issuer.settings.min_refresh_interval;
            if sched.last_on_demand.is_some_and(|t| t.elapsed() < min) {
                return;
            }
            sched.last_on_demand = Some(Instant::now());
        }
        let _ = fetch_keys(issuer).await;
    }

    /// Everything that needs no key: size, structure, header rules, issuer selection.
    fn parse<'t>(&self, token: &'t str) -> Result<Pending<'t>, AuthnError> {
        let max = self.issuers.iter().map(|i| i.settings.max_token_bytes).max().unwrap_or(0);
        if token.len() > max {
            return Err(AuthnError::TokenTooLarge);
        }
        let compact = jose::split_compact(token).map_err(AuthnError::Malformed)?;
        let header = &compact.header;
        let alg = header.get("alg").and_then(Value::as_str).ok_or(AuthnError::Malformed("the token has no alg"))?;
        let alg = Alg::from_header(alg)?;
        if compact.signature.is_empty() {
            return Err(AuthnError::Malformed("the token signature is missing"));
        }
        // RFC 7515 §4.1.11: we implement no extension, so any crit must be refused.
        if header.contains_key("crit") {
            return Err(AuthnError::CritUnsupported);
        }
        let iss = compact.payload.get("iss").and_then(Value::as_str).ok_or(AuthnError::MissingClaim("iss"))?;
        let index = self.issuers.iter().position(|i| i.settings.issuer == iss).ok_or(AuthnError::UnknownIssuer)?;
        let issuer = self.issuers.get(index).ok_or(AuthnError::UnknownIssuer)?;
        if token.len() > issuer.settings.max_token_bytes {
            return Err(AuthnError::TokenTooLarge);
        }
        if !issuer.algs.contains(&alg) {
            return Err(AuthnError::AlgNotAllowed);
        }
        if !issuer.typ.is_empty() {
            let typ = header.get("typ").and_then(Value::as_str).ok_or(AuthnError::TypNotAccepted)?;
            if !issuer.typ.contains(&jose::normalize_typ(typ)) {
                return Err(AuthnError::TypNotAccepted);
            }
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(AuthnError::Malformed("the token kid is not a string")),
        };
        Ok(Pending { issuer: index, alg, kid, compact })
    }

    /// Key lookup, signature, then claims.
    fn finish(&self, p: &Pending<'_>, now: u64) -> Result<VerifiedToken, AuthnError> {
        let issuer = self.issuers.get(p.issuer).ok_or(AuthnError::UnknownIssuer)?;
        let keys = issuer.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let keys = keys.ok_or_else(|| AuthnError::KeysUnavailable { issuer: issuer.settings.issuer.clone() })?;
        let key = match &p.kid {
            Some(kid) => {
                let mut named = keys.iter().filter(|k| k.kid.as_deref() == Some(kid.as_str())).peekable();
                if named.peek().is_none() {
                    return Err(AuthnError::UnknownKey);
                }
                named.find(|k| k.usable_for(p.alg)).ok_or(AuthnError::KeyAlgMismatch)?
            }
            None => {
                let mut usable = keys.iter().filter(|k| k.usable_for(p.alg));
                match (usable.next(), usable.next()) {
                    (Some(k), None) => k,
                    (None, _) => return Err(AuthnError::UnknownKey),
                    (Some(_), Some(_)) => return Err(AuthnError::AmbiguousKey),
                }
            }
        };
        if !key.key.verify(p.alg, p.compact.signing_input.as_bytes(), &p.compact.signature) {
            return Err(AuthnError::BadSignature);
        }
        let claims = &p.compact.payload;
        let leeway = issuer.settings.leeway.as_secs();
        let date = |name: &'static str| -> Result<Option<u64>, AuthnError> {
            claims.get(name).map(|v| jose::numeric_date(v).ok_or(AuthnError::InvalidClaim(name))).transpose()
        };
        let exp = date("exp")?.ok_or(AuthnError::MissingClaim("exp"))?;
        if now >= exp.saturating_add(leeway) {
            return Err(AuthnError::Expired);
        }
        if date("nbf")?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(AuthnError::NotYetValid);
        }
        if date("iat")?.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(AuthnError::IssuedInFuture);
        }
        let audiences = &issuer.settings.audiences;
        if !audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => audiences.contains(a),
                Some(Value::Array(list)) => {
                    list.iter().filter_map(Value::as_str).any(|a| audiences.iter().any(|x| x == a))
                }
                None => return Err(AuthnError::MissingClaim("aud")),
                Some(_) => return Err(AuthnError::InvalidClaim("aud")),
            };
            if !ok {
                return Err(AuthnError::AudienceMismatch);
            }
        }
        Ok(VerifiedToken {
            issuer: issuer.settings.issuer.clone(),
            expires_at: exp,
            confirmed: claims.contains_key("cnf"),
            claims: Arc::new(claims.clone()),
            derived: Arc::default(),
        })
    }
}

#[cfg(test)]
impl JwtAuthenticator {
    /// Install a JWKS document as if it had been fetched.
    pub(crate) fn install_jwks(&self, issuer: &str, doc: &Value) -> Result<(), String> {
        let issuer = self.issuers.iter().find(|i| i.settings.issuer == issuer).ok_or("no such issuer")?;
        let keys = parse_jwks(doc.as_object().ok_or("not an object")?)?;
        *issuer.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(keys));
        Ok(())
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;

fn never_tried(issuer: &Issuer) -> bool {
    issuer.schedule.lock().unwrap_or_else(|p| p.into_inner()).last_attempt.is_none()
}

fn next_due(issuer: &Issuer) -> Option<Instant> {
    let sched = issuer.schedule.lock().unwrap_or_else(|p| p.into_inner());
    let last = sched.last_attempt?;
    let every = if sched.last_ok { issuer.settings.refresh_interval } else { issuer.settings.min_refresh_interval };
    last.checked_add(every)
}

/// Discover the JWKS URI (unless configured), fetch and parse it, and swap it in. Callers hold
/// `issuer.fetching`. On failure the previous keys stay.
async fn fetch_keys(issuer: &Issuer) -> Result<(), AuthnError> {
    let result = async {
        let uri = jwks_uri(issuer).await?;
        let doc = fetch::get_json(&issuer.tls, &uri).await?;
        parse_jwks(&doc)
    }
    .await;
    {
        let mut sched = issuer.schedule.lock().unwrap_or_else(|p| p.into_inner());
        sched.last_attempt = Some(Instant::now());
        sched.last_ok = result.is_ok();
    }
    let outcome = match result {
        Ok(keys) => {
            *issuer.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(keys));
            Ok(())
        }
        Err(reason) => {
            tracing::warn!(issuer = %issuer.settings.issuer, %reason, "JWKS refresh failed; keeping cached keys");
            Err(AuthnError::KeyFetch { issuer: issuer.settings.issuer.clone(), reason })
        }
    };
    issuer.attempts.fetch_add(1, Ordering::Release);
    outcome
}

/// OpenID Connect Discovery 1.0 §4, then RFC 8414 metadata; the document's `issuer` must be
/// ours (OIDC Discovery §4.3, RFC 8414 §3.3) so that one issuer cannot point at another's keys.
async fn jwks_uri(issuer: &Issuer) -> Result<String, String> {
    if let Some(uri) = &issuer.settings.jwks_uri {
        return Ok(uri.clone());
    }
    let base = issuer.settings.issuer.trim_end_matches('/');
    let mut errors = Vec::new();
    for well_known in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
        let url = format!("{base}{well_known}");
        match fetch::get_json(&issuer.tls, &url).await {
            Ok(doc) => {
                let claimed = doc.get("issuer").and_then(Value::as_str).unwrap_or_default();
                if claimed.trim_end_matches('/') != base {
                    errors.push(format!("{url}: metadata names another issuer"));
                    continue;
                }
                match doc.get("jwks_uri").and_then(Value::as_str) {
                    Some(uri) if fetch::is_http_url(uri) => return Ok(uri.to_owned()),
                    _ => errors.push(format!("{url}: no http(s) jwks_uri")),
                }
            }
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

/// Keep the keys we can use for signatures; skip the others (encryption keys, unknown types),
/// but refuse a JWKS that leaves nothing usable, so a broken response never replaces good keys.
fn parse_jwks(doc: &Map<String, Value>) -> Result<Vec<CachedKey>, String> {
    let list = doc.get("keys").and_then(Value::as_array).ok_or("the JWKS has no keys array")?;
    let mut keys = Vec::new();
    for jwk in list.iter().take(MAX_KEYS).filter_map(Value::as_object) {
        if jwk.get("use").is_some_and(|u| u != "sig") {
            continue;
        }
        if let Some(ops) = jwk.get("key_ops") {
            if !ops.as_array().is_some_and(|ops| ops.iter().any(|o| o == "verify")) {
                continue;
            }
        }
        let alg = match jwk.get("alg") {
            None => None,
            Some(a) => match a.as_str().map(Alg::from_header) {
                Some(Ok(a)) => Some(a),
                _ => continue,
            },
        };
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => continue,
        };
        let Ok(key) = PublicKey::from_jwk(jwk) else { continue };
        if alg.is_some_and(|a| !key.fits(a)) {
            continue;
        }
        keys.push(CachedKey { kid, alg, key });
    }
    if keys.is_empty() {
        return Err("the JWKS contains no usable signing key".into());
    }
    Ok(keys)
}
