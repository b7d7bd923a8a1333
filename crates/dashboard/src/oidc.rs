//! OIDC relying party for the dashboard: authorization code + PKCE (S256) + state + nonce as a
//! public client. Discovery is cached once it succeeds; the JWKS is cached and refetched (at
//! most every 30 s) when an ID token names a key we do not hold. Only asymmetric algorithms
//! are accepted, and a key only verifies the algorithm family it belongs to.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::error::OidcError;
use crate::DashboardConfig;

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BODY: usize = 1 << 20;
const JWKS_REFRESH: Duration = Duration::from_secs(30);
const MAX_ID_TOKEN: usize = 16 * 1024;
/// Clock skew tolerated on `exp`/`nbf`.
const LEEWAY_SECS: u64 = 60;

/// The issuer's endpoints, from its discovery document.
#[derive(Debug, Clone)]
pub(crate) struct Discovery {
    pub(crate) issuer: String,
    pub(crate) authorization_endpoint: String,
    pub(crate) token_endpoint: String,
    pub(crate) jwks_uri: String,
}

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    family: Family,
    key: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    P256,
    P384,
    Ed25519,
}

/// Verified ID-token claims; only [`Oidc::verify_id_token`] makes them.
#[derive(Debug, Clone)]
pub(crate) struct IdClaims {
    claims: Map<String, Value>,
}

impl IdClaims {
    /// `preferred_username`, else `sub`.
    pub(crate) fn subject(&self) -> String {
        ["preferred_username", "sub"]
            .iter()
            .find_map(|k| self.claims.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .unwrap_or("unknown")
            .to_owned()
    }

    /// Whether the `roles` claim (an array of strings, or one string) holds one of `allowed`.
    pub(crate) fn has_role(&self, allowed: &[String]) -> bool {
        let roles: Vec<&str> = match self.claims.get("roles") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => vec![s.as_str()],
            _ => Vec::new(),
        };
        roles.iter().any(|r| allowed.iter().any(|a| a == r))
    }
}

pub(crate) struct Oidc {
    issuer: String,
    client_id: String,
    pub(crate) redirect_uri: String,
    discovery: Mutex<Option<Arc<Discovery>>>,
    jwks: Mutex<Option<(Arc<Vec<Key>>, Instant)>>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()))
}

fn trim_slash(s: &str) -> &str {
    s.trim_end_matches('/')
}

fn is_http_url(s: &str) -> bool {
    let lower = s.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    (lower.starts_with("https://") && s.len() > 8) || (lower.starts_with("http://") && s.len() > 7)
}

impl Oidc {
    pub(crate) fn new(cfg: &DashboardConfig) -> Oidc {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .ok()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()));
        Oidc {
            issuer: cfg.issuer.clone(),
            client_id: cfg.client_id.clone(),
            redirect_uri: format!("{}/ui/callback", trim_slash(&cfg.public_url)),
            discovery: Mutex::new(None),
            jwks: Mutex::new(None),
            tls,
        }
    }

    /// One HTTP exchange with a deadline and a body cap; errors name the URI, never a body.
    async fn fetch(&self, uri: &str, form: Option<String>) -> Result<(u16, Bytes), String> {
        let tls = self.tls.as_ref().ok_or("no TLS configuration")?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((**tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        let client: Client<_, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
        let builder = http::Request::builder().uri(uri).header(http::header::ACCEPT, "application/json");
        let req = match form {
            Some(body) => builder
                .method(http::Method::POST)
                .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(body))),
            None => builder.method(http::Method::GET).body(Full::new(Bytes::new())),
        }
        .map_err(|_| format!("{uri}: not a valid request URI"))?;
        let exchange = async {
            let resp = client.request(req).await.map_err(|e| format!("{uri}: {e}"))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("{uri}: reading the body failed: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{uri}: no complete response within {} s", FETCH_TIMEOUT.as_secs()))?
    }

    async fn get_json(&self, uri: &str) -> Result<Map<String, Value>, String> {
        let (status, body) = self.fetch(uri, None).await?;
        if status != 200 {
            return Err(format!("{uri}: HTTP status {status}"));
        }
        serde_json::from_slice(&body).map_err(|_| format!("{uri}: the body is not a JSON object"))
    }

    pub(crate) async fn discovery(&self) -> Result<Arc<Discovery>, OidcError> {
        if let Some(d) = self.discovery.lock().ok().and_then(|d| d.clone()) {
            return Ok(d);
        }
        let uri = format!("{}/.well-known/openid-configuration", trim_slash(&self.issuer));
        let doc = self.get_json(&uri).await.map_err(OidcError::Discovery)?;
        let field = |name: &str| -> Result<String, OidcError> {
            doc.get(name)
                .and_then(Value::as_str)
                .filter(|s| is_http_url(s))
                .map(str::to_owned)
                .ok_or_else(|| OidcError::Discovery(format!("{uri}: \"{name}\" is missing or not an http(s) URL")))
        };
        let issuer = field("issuer")?;
        if trim_slash(&issuer) != trim_slash(&self.issuer) {
            return Err(OidcError::Discovery(format!("{uri}: \"issuer\" is not the configured issuer")));
        }
        let d = Arc::new(Discovery {
            issuer,
            authorization_endpoint: field("authorization_endpoint")?,
            token_endpoint: field("token_endpoint")?,
            jwks_uri: field("jwks_uri")?,
        });
        if let Ok(mut slot) = self.discovery.lock() {
            *slot = Some(d.clone());
        }
        Ok(d)
    }

    /// The URL to send the browser to.
    pub(crate) async fn authorize_url(&self, state: &str, nonce: &str, verifier: &str) -> Result<String, OidcError> {
        let d = self.discovery().await?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", "openid profile roles")
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &pkce_challenge(verifier))
            .append_pair("code_challenge_method", "S256")
            .finish();
        let sep = if d.authorization_endpoint.contains('?') { '&' } else { '?' };
        Ok(format!("{}{sep}{query}", d.authorization_endpoint))
    }

    /// Redeem the code; returns the raw ID token.
    pub(crate) async fn exchange(&self, code: &str, verifier: &str) -> Result<String, OidcError> {
        let d = self.discovery().await?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("client_id", &self.client_id)
            .append_pair("code_verifier", verifier)
            .finish();
        let (status, body) = self.fetch(&d.token_endpoint, Some(form)).await.map_err(OidcError::Token)?;
        let doc: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|_| OidcError::Token(format!("HTTP status {status} with a body that is not a JSON object")))?;
        if status != 200 {
            // The OAuth error code is a short ASCII token (RFC 6749 §5.2), safe to show.
            let code = doc
                .get("error")
                .and_then(Value::as_str)
                .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                .unwrap_or("unknown");
            return Err(OidcError::Token(format!("HTTP status {status}, error {code}")));
        }
        doc.get("id_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| OidcError::Token("the response has no id_token".into()))
    }

    async fn keys(&self, jwks_uri: &str, force: bool) -> Result<Arc<Vec<Key>>, OidcError> {
        let cached = self.jwks.lock().ok().and_then(|j| j.clone());
        if let Some((keys, at)) = &cached {
            if !force || at.elapsed() < JWKS_REFRESH {
                return Ok(keys.clone());
            }
        }
        let doc = self.get_json(jwks_uri).await.map_err(OidcError::Discovery)?;
        let list = doc.get("keys").and_then(Value::as_array).cloned().unwrap_or_default();
        let keys: Vec<Key> = list.into_iter().filter_map(parse_jwk).collect();
        let keys = Arc::new(keys);
        if let Ok(mut slot) = self.jwks.lock() {
            *slot = Some((keys.clone(), Instant::now()));
        }
        Ok(keys)
    }

    /// Verify signature, `iss`, `aud` (= our client id; `azp` too when several audiences),
    /// `exp`, `nbf` and `nonce`.
    pub(crate) async fn verify_id_token(&self, token: &str, nonce: &str) -> Result<IdClaims, OidcError> {
        if token.len() > MAX_ID_TOKEN {
            return Err(OidcError::IdToken("too long"));
        }
        let d = self.discovery().await?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| OidcError::IdToken("malformed header"))?;
        let family = match header.alg {
            Algorithm::ES256 => Family::P256,
            Algorithm::ES384 => Family::P384,
            Algorithm::EdDSA => Family::Ed25519,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Family::Rsa,
            _ => return Err(OidcError::IdToken("alg is not an accepted asymmetric algorithm")),
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&d.issuer]);
        validation.set_audience(&[&self.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let fits = |k: &&Key| k.family == family && (header.kid.is_none() || k.kid == header.kid);
        let mut keys = self.keys(&d.jwks_uri, false).await?;
        if !keys.iter().any(|k| fits(&k)) {
            keys = self.keys(&d.jwks_uri, true).await?;
        }
        let mut last = OidcError::IdToken("no key in the issuer's JWKS matches the token's kid and alg");
        let mut claims = None;
        for k in keys.iter().filter(fits) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = OidcError::IdToken(match e.kind() {
                        K::InvalidSignature => "signature does not verify",
                        K::ExpiredSignature => "expired",
                        K::ImmatureSignature => "not yet valid (nbf)",
                        K::InvalidIssuer => "wrong issuer",
                        K::InvalidAudience => "wrong audience",
                        K::MissingRequiredClaim(_) => "exp, iss, aud or sub missing",
                        _ => "malformed",
                    });
                    // Only a signature mismatch can be cured by another key.
                    if !matches!(e.kind(), K::InvalidSignature) {
                        break;
                    }
                }
            }
        }
        let claims = claims.ok_or(last)?;
        if let Some(Value::Array(aud)) = claims.get("aud") {
            if aud.len() > 1 && claims.get("azp").and_then(Value::as_str) != Some(self.client_id.as_str()) {
                return Err(OidcError::IdToken("several audiences and azp is not our client"));
            }
        }
        let got = claims.get("nonce").and_then(Value::as_str).unwrap_or_default();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(got.as_bytes(), nonce.as_bytes())) {
            return Err(OidcError::IdToken("nonce does not match the sign-in request"));
        }
        Ok(IdClaims { claims })
    }
}

/// A JWK we can verify with, or `None` (skipped: symmetric, unknown curve, malformed).
fn parse_jwk(raw: Value) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(raw).ok()?;
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Family::Rsa,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Family::P256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P384 => Family::P384,
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => Family::Ed25519,
        _ => return None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key { kid: jwk.common.key_id.clone(), family, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn symmetric_jwks_are_skipped() {
        assert!(parse_jwk(serde_json::json!({"kty": "oct", "k": "c2VjcmV0"})).is_none());
        assert!(parse_jwk(serde_json::json!({"kty": "EC", "crv": "P-256"})).is_none());
    }

    #[test]
    fn roles_claim_array_or_string() {
        let c = |v: Value| IdClaims { claims: v.as_object().cloned().unwrap() };
        let allowed = vec!["admin".to_owned()];
        assert!(c(serde_json::json!({"roles": ["viewer", "admin"]})).has_role(&allowed));
        assert!(c(serde_json::json!({"roles": "admin"})).has_role(&allowed));
        assert!(!c(serde_json::json!({"roles": ["administrator"]})).has_role(&allowed));
        assert!(!c(serde_json::json!({})).has_role(&allowed));
        assert_eq!(c(serde_json::json!({"sub": "u1", "preferred_username": "alice"})).subject(), "alice");
        assert_eq!(c(serde_json::json!({"sub": "u1"})).subject(), "u1");
    }
}
