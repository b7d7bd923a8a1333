//! Attestation of a workload before it gets an SVID: one-time join tokens (stored as SHA-256)
//! and Kubernetes projected service-account tokens verified against a static JWKS. Only RS256
//! and ES256 are accepted; a token's `alg` must match its key's type (no `none`, no HMAC).

use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use palisade_core::mesh::SpiffeId;
use serde_json::Value;

use crate::CaError;

/// Tokens longer than this are refused before parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// SHA-256 (hex) of a join token: the only form stored.
pub(crate) fn token_hash(token: &str) -> String {
    crate::pki::hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// Kubernetes service-account token attestation settings.
#[derive(Debug, Clone)]
pub struct K8sConfig {
    /// Exact `iss` of the cluster's tokens (`kubectl get --raw /.well-known/openid-configuration`).
    pub issuer: String,
    /// Required `aud` (the projected token's audience), e.g. `palisade`.
    pub audience: String,
    /// The cluster's JWKS document (`kubectl get --raw /openid/v1/jwks`).
    pub jwks_json: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

pub(crate) struct K8sVerifier {
    issuer: String,
    audience: String,
    leeway: u64,
    keys: Vec<Key>,
}

impl K8sVerifier {
    /// Parse the JWKS: RSA keys verify RS256, P-256 keys ES256; other keys are skipped. At
    /// least one usable key is required.
    pub fn new(cfg: &K8sConfig) -> Result<K8sVerifier, CaError> {
        let bad = |why: String| CaError::Config(format!("Kubernetes JWKS: {why}"));
        let doc: Value = serde_json::from_str(&cfg.jwks_json).map_err(|e| bad(format!("not JSON: {e}")))?;
        let list = doc.get("keys").and_then(Value::as_array).ok_or_else(|| bad("no \"keys\" array".into()))?;
        let mut keys = Vec::new();
        for raw in list {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else { continue };
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
                _ => continue,
            };
            if let Some(named) = jwk.common.key_algorithm {
                if format!("{named:?}") != format!("{alg:?}") {
                    continue;
                }
            }
            let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
            keys.push(Key { kid: jwk.common.key_id.clone(), alg, key });
        }
        if keys.is_empty() {
            return Err(bad("no RS256 (RSA) or ES256 (P-256) key".into()));
        }
        if cfg.issuer.is_empty() || cfg.audience.is_empty() {
            return Err(CaError::Config("Kubernetes attestation needs an issuer and an audience".into()));
        }
        Ok(K8sVerifier {
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway: cfg.leeway.as_secs(),
            keys,
        })
    }

    /// Verify a projected service-account token and map it to
    /// `spiffe://<td>/ns/<namespace>/sa/<serviceaccount>`.
    pub fn verify(&self, token: &str, trust_domain: &str) -> Result<SpiffeId, CaError> {
        let invalid = |why: &str| CaError::InvalidToken(format!("Kubernetes token: {why}"));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("too long"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed or unsupported header"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(invalid("alg must be RS256 or ES256"));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let candidates =
            self.keys.iter().filter(|k| k.alg == header.alg && (header.kid.is_none() || k.kid == header.kid));
        let mut last = invalid("no key in the JWKS matches the token's kid and alg");
        for k in candidates {
            match jsonwebtoken::decode::<Value>(token, &k.key, &validation) {
                Ok(data) => return identity(&data.claims, trust_domain),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = invalid(match e.kind() {
                        K::InvalidSignature => "signature does not verify",
                        K::ExpiredSignature => "expired",
                        K::ImmatureSignature => "not yet valid (nbf)",
                        K::InvalidIssuer => "wrong issuer",
                        K::InvalidAudience => "wrong audience",
                        K::MissingRequiredClaim(_) => "exp, iss or aud missing",
                        _ => "malformed",
                    });
                    // Only a signature mismatch can be cured by another key.
                    if !matches!(e.kind(), K::InvalidSignature) {
                        break;
                    }
                }
            }
        }
        Err(last)
    }
}

/// The workload identity of verified claims: the `kubernetes.io` claim, else
/// `sub = system:serviceaccount:<ns>:<sa>`.
fn identity(claims: &Value, trust_domain: &str) -> Result<SpiffeId, CaError> {
    let invalid = |why: &str| CaError::InvalidToken(format!("Kubernetes token: {why}"));
    let k8s = claims.get("kubernetes.io");
    let from_claim = k8s.and_then(|k| {
        let ns = k.get("namespace")?.as_str()?;
        let sa = k.get("serviceaccount")?.get("name")?.as_str()?;
        Some((ns.to_owned(), sa.to_owned()))
    });
    let (ns, sa) = match from_claim {
        Some(pair) => pair,
        None => {
            let sub = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
            let rest =
                sub.strip_prefix("system:serviceaccount:").ok_or_else(|| invalid("no service account identity"))?;
            let (ns, sa) = rest.split_once(':').ok_or_else(|| invalid("no service account identity"))?;
            (ns.to_owned(), sa.to_owned())
        }
    };
    SpiffeId::workload(trust_domain, &ns, &sa)
        .ok()
        .filter(|id| id.ns_service().is_some())
        .ok_or_else(|| invalid("namespace or service account name is not a valid SPIFFE path segment"))
}
