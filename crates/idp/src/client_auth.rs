//! Client authentication at the token, introspection and revocation endpoints:
//! `client_secret_basic`, `client_secret_post` (RFC 6749 §2.3.1), `private_key_jwt` (RFC 7523,
//! with jti replay protection), `tls_client_auth` (RFC 8705), and public clients (`none`).
//! Every failure is `invalid_client` (401) without saying which part was wrong.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{header, HeaderMap};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use serde_json::Value;

use crate::error::{OAuthError, OAuthResult};
use crate::form::Params;
use crate::model::{AuthMethod, Client};
use crate::secrets::{dummy_hash, sha256_b64, verify_secret_blocking};
use crate::{Idp, Peer};

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Longest accepted client-assertion lifetime: bounds the replay table.
const MAX_ASSERTION_LIFETIME: i64 = 600;

#[derive(Debug)]
pub struct Authenticated {
    pub client: Arc<Client>,
    /// `x5t#S256` of the client certificate when authenticated by `tls_client_auth`.
    pub cert_thumbprint: Option<String>,
}

fn fail() -> OAuthError {
    OAuthError::invalid_client("client authentication failed")
}

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> OAuthResult<Option<(String, String)>> {
    let Some(v) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let v = v.to_str().map_err(|_| fail())?;
    let Some((scheme, rest)) = v.split_once(' ') else { return Err(fail()) };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client("unsupported Authorization scheme"));
    }
    let raw = STANDARD.decode(rest.trim()).map_err(|_| fail())?;
    let raw = String::from_utf8(raw).map_err(|_| fail())?;
    let (id, secret) = raw.split_once(':').ok_or_else(fail)?;
    let dec = |s: &str| -> OAuthResult<String> {
        let s = s.replace('&', "%26");
        Ok(form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default())
    };
    Ok(Some((dec(id)?, dec(secret)?)))
}

impl Idp {
    pub(crate) async fn authenticate_client(
        &self,
        headers: &HeaderMap,
        p: &Params,
        peer: &Peer,
    ) -> OAuthResult<Authenticated> {
        let basic = basic_credentials(headers)?;
        let methods = usize::from(basic.is_some())
            + usize::from(p.contains("client_secret"))
            + usize::from(p.contains("client_assertion") || p.contains("client_assertion_type"));
        if methods > 1 {
            return Err(OAuthError::invalid_request("use exactly one client authentication method"));
        }
        if let Some((id, secret)) = basic {
            if p.get("client_id").is_some_and(|c| c != id) {
                return Err(OAuthError::invalid_request("client_id does not match the Authorization header"));
            }
            return self.by_secret(&id, secret, AuthMethod::ClientSecretBasic).await;
        }
        if let Some(secret) = p.get("client_secret") {
            let id = p.get("client_id").ok_or_else(fail)?;
            return self.by_secret(id, secret.to_owned(), AuthMethod::ClientSecretPost).await;
        }
        if p.contains("client_assertion") || p.contains("client_assertion_type") {
            if p.get("client_assertion_type") != Some(JWT_BEARER) {
                return Err(OAuthError::invalid_request(format!("client_assertion_type must be {JWT_BEARER}")));
            }
            return self.by_assertion(p.require("client_assertion")?, p.get("client_id")).await;
        }
        let Some(id) = p.get("client_id") else {
            return Err(OAuthError::invalid_client("client authentication is required"));
        };
        let client = self.client(id).await?.ok_or_else(fail)?;
        match client.spec.token_endpoint_auth_method {
            AuthMethod::None => Ok(Authenticated { client, cert_thumbprint: None }),
            AuthMethod::TlsClientAuth => {
                let cert = peer.client_cert.as_ref().ok_or_else(fail)?;
                let expected = client.spec.tls_client_auth_subject_dn.as_deref().unwrap_or("");
                if !subject_matches(cert, expected) {
                    return Err(fail());
                }
                Ok(Authenticated { client, cert_thumbprint: Some(sha256_b64(cert)) })
            }
            _ => Err(fail()),
        }
    }

    async fn by_secret(&self, id: &str, secret: String, used: AuthMethod) -> OAuthResult<Authenticated> {
        let client = self.client(id).await?;
        let Some(client) = client.filter(|c| c.spec.token_endpoint_auth_method.uses_secret()) else {
            // Same cost as a real check, so the answer does not tell which clients exist.
            verify_secret_blocking(dummy_hash().to_owned(), secret).await;
            return Err(fail());
        };
        let _ = used; // basic and post are interchangeable for a secret client
        let hash = client.secret_hash.clone().ok_or_else(fail)?;
        if self.secret_cache.hit(id, &hash, &secret) {
            return Ok(Authenticated { client, cert_thumbprint: None });
        }
        if verify_secret_blocking(hash.clone(), secret.clone()).await {
            self.secret_cache.remember(id, &hash, &secret);
            Ok(Authenticated { client, cert_thumbprint: None })
        } else {
            Err(fail())
        }
    }

    async fn by_assertion(&self, assertion: &str, claimed_id: Option<&str>) -> OAuthResult<Authenticated> {
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| fail())?;
        let id = unverified_subject(assertion).ok_or_else(fail)?;
        if claimed_id.is_some_and(|c| c != id) {
            return Err(fail());
        }
        let client = self.client(&id).await?.ok_or_else(fail)?;
        if client.spec.token_endpoint_auth_method != AuthMethod::PrivateKeyJwt {
            return Err(fail());
        }
        use jsonwebtoken::Algorithm as A;
        if !matches!(
            header.alg,
            A::ES256 | A::ES384 | A::EdDSA | A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512
        ) {
            return Err(fail());
        }
        let set: JwkSet = client.spec.jwks.clone().and_then(|j| serde_json::from_value(j).ok()).ok_or_else(fail)?;
        let jwk: &Jwk = match &header.kid {
            Some(kid) => set.find(kid).ok_or_else(fail)?,
            None if set.keys.len() == 1 => &set.keys[0],
            None => return Err(fail()),
        };
        if jwk.common.key_algorithm.is_some_and(|a| a.to_string() != format!("{:?}", header.alg)) {
            return Err(fail());
        }
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|_| fail())?;
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.set_issuer(&[&id]);
        v.sub = Some(id.clone());
        v.set_audience(&[self.cfg.url("/oauth2/token"), self.cfg.issuer.clone()]);
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        v.leeway = 5;
        let claims: Value = jsonwebtoken::decode(assertion, &key, &v).map_err(|_| fail())?.claims;
        let jti = claims.get("jti").and_then(Value::as_str).filter(|j| !j.is_empty()).ok_or_else(fail)?;
        let exp = claims.get("exp").and_then(Value::as_i64).ok_or_else(fail)?;
        let now = palisade_store::now();
        if exp - now > MAX_ASSERTION_LIFETIME {
            return Err(OAuthError::invalid_client("client assertion lifetime is too long"));
        }
        if !self.repo.record_assertion(&id, jti, exp).await? {
            return Err(OAuthError::invalid_client("client assertion was already used"));
        }
        Ok(Authenticated { client, cert_thumbprint: None })
    }
}

/// The `sub` of a JWS, read without verifying it: only to find whose keys verify it.
pub(crate) fn unverified_subject(jws: &str) -> Option<String> {
    let payload = jws.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("sub").and_then(Value::as_str).map(str::to_owned)
}

/// Compare a certificate's subject DN with the registered one, ignoring spaces after separators
/// and attribute-type case (`CN=a, O=b` equals `cn=a,o=b`).
pub(crate) fn subject_matches(der: &[u8], expected: &str) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return false };
    let Ok(actual) =
        x509_parser::x509::X509Name::to_string_with_registry(cert.subject(), x509_parser::objects::oid_registry())
    else {
        return false;
    };
    normalize_dn(&actual) == normalize_dn(expected)
}

fn normalize_dn(dn: &str) -> Vec<(String, String)> {
    dn.split(',')
        .filter_map(|rdn| rdn.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_uppercase(), v.trim().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_url_decoded() {
        let mut h = HeaderMap::new();
        // id "a b", secret "p:w%" → urlencoded "a+b" and "p%3Aw%25"
        h.insert(header::AUTHORIZATION, format!("Basic {}", STANDARD.encode("a+b:p%3Aw%25")).parse().unwrap());
        assert_eq!(basic_credentials(&h).unwrap(), Some(("a b".into(), "p:w%".into())));
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(basic_credentials(&h).unwrap_err().code, "invalid_client");
        h.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(basic_credentials(&h).unwrap_err().status, 401);
    }

    #[test]
    fn dn_normalization() {
        assert_eq!(normalize_dn("CN=svc, O=Acme"), normalize_dn("cn=svc,o=Acme"));
        assert_ne!(normalize_dn("CN=svc,O=Acme"), normalize_dn("CN=svc,O=Evil"));
    }
}
