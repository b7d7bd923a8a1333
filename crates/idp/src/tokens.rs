//! Access tokens (RFC 9068 JWTs), ID tokens (OIDC Core §2) and refresh tokens (opaque, stored
//! as SHA-256), and the verification every endpoint that accepts an access token shares.

use std::sync::Arc;

use palisade_crypto::{jwt, Alg};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{OAuthError, OAuthResult};
use crate::repo::Stored;
use crate::secrets::{random_token, sha256_hex};
use crate::Idp;

pub const AT_TYP: &str = "at+jwt";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// What an access token says.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    pub sub: String,
    pub client_id: String,
    pub aud: Vec<String>,
    pub scope: Vec<String>,
    pub roles: Vec<String>,
    pub auth_time: Option<i64>,
    /// `cnf.x5t#S256` of the client certificate the token is bound to (RFC 8705).
    pub cert_thumbprint: Option<String>,
    /// RFC 8693 `act` (the actor chain).
    pub act: Option<Value>,
    /// The grant (code / refresh family) the token came from; revoking it revokes the token.
    pub grant_id: Option<String>,
}

/// Refresh-token record (JSON in `idp_refresh_tokens.data`) and code record (`idp_codes.data`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserGrant {
    pub subject: String,
    pub scope: Vec<String>,
    pub aud: Vec<String>,
    pub auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_thumbprint: Option<String>,
}

fn aud_value(aud: &[String]) -> Value {
    match aud {
        [one] => Value::String(one.clone()),
        many => json!(many),
    }
}

impl Idp {
    fn now_u64(&self) -> u64 {
        u64::try_from(palisade_store::now()).unwrap_or(0)
    }

    /// Sign an access token; returns it with its lifetime.
    pub(crate) fn issue_access(&self, g: &Grant) -> OAuthResult<(String, u64)> {
        let now = self.now_u64();
        let ttl = self.cfg.access_token_ttl;
        let mut c = Map::new();
        c.insert("iss".into(), json!(self.cfg.issuer));
        c.insert("sub".into(), json!(g.sub));
        c.insert("aud".into(), aud_value(&g.aud));
        c.insert("exp".into(), json!(now + ttl));
        c.insert("iat".into(), json!(now));
        c.insert("nbf".into(), json!(now));
        c.insert("jti".into(), json!(random_token(16)));
        c.insert("client_id".into(), json!(g.client_id));
        if !g.scope.is_empty() {
            c.insert("scope".into(), json!(g.scope.join(" ")));
        }
        if !g.roles.is_empty() {
            c.insert("roles".into(), json!(g.roles));
        }
        if let Some(t) = g.auth_time {
            c.insert("auth_time".into(), json!(t));
        }
        if let Some(x5t) = &g.cert_thumbprint {
            c.insert("cnf".into(), json!({ "x5t#S256": x5t }));
        }
        if let Some(act) = &g.act {
            c.insert("act".into(), act.clone());
        }
        if let Some(gid) = &g.grant_id {
            c.insert("gid".into(), json!(gid));
        }
        let keys = self.keys.keyset();
        let token = jwt::sign(&keys.1, now, AT_TYP, &c).map_err(OAuthError::server_error)?;
        Ok((token, ttl))
    }

    /// Sign an ID token for `client_id` (OIDC Core §2, §3.1.3.6).
    pub(crate) async fn issue_id_token(
        &self,
        client_id: &str,
        grant: &UserGrant,
        access_token: &str,
    ) -> OAuthResult<String> {
        let now = self.now_u64();
        let keys = self.keys.keyset();
        let alg = keys.1.signing_key(now).map(|k| k.alg).unwrap_or(Alg::ES256);
        let mut c = Map::new();
        c.insert("iss".into(), json!(self.cfg.issuer));
        c.insert("sub".into(), json!(grant.subject));
        c.insert("aud".into(), json!(client_id));
        c.insert("azp".into(), json!(client_id));
        c.insert("exp".into(), json!(now + self.cfg.id_token_ttl));
        c.insert("iat".into(), json!(now));
        c.insert("auth_time".into(), json!(grant.auth_time));
        c.insert("at_hash".into(), json!(half_hash(alg, access_token)));
        if let Some(n) = &grant.nonce {
            c.insert("nonce".into(), json!(n));
        }
        if let Some(user) = self.repo.user_by_subject(&grant.subject).await? {
            for (k, v) in crate::endpoints::profile_claims(&user, &grant.scope) {
                c.entry(k).or_insert(v);
            }
        }
        jwt::sign(&keys.1, now, "JWT", &c).map_err(OAuthError::server_error)
    }

    /// Store a new refresh token of `grant_id`'s family; returns the token.
    pub(crate) async fn issue_refresh(
        &self,
        grant_id: &str,
        client_id: &str,
        grant: &UserGrant,
    ) -> OAuthResult<String> {
        let token = random_token(32);
        let now = palisade_store::now();
        let stored = Stored {
            grant_id: grant_id.to_owned(),
            client_id: client_id.to_owned(),
            data: serde_json::to_string(grant).map_err(OAuthError::server_error)?,
            expires_at: now + i64::try_from(self.cfg.refresh_token_ttl).unwrap_or(i64::MAX / 2),
        };
        self.repo.insert_refresh(&sha256_hex(&token), &stored, now).await?;
        Ok(token)
    }

    /// Verify one of our access tokens: signature with a published key, `typ`, issuer, expiry,
    /// and that neither its jti nor its grant was revoked. Returns the claims.
    pub(crate) async fn verify_access(&self, token: &str) -> Result<Arc<Map<String, Value>>, &'static str> {
        let now = palisade_store::now();
        let cache_key = crate::cache::Verified::key(token);
        let keys = self.keys.keyset();
        let claims = match self.verified.get(&cache_key, now) {
            // The key that signed it must still be published (a retired key ends its tokens).
            Some((kid, c)) if keys.1.find(&kid, self.now_u64()).is_some() => c,
            _ => {
                let expect = jwt::Expect { issuer: &self.cfg.issuer, audience: None, typ: AT_TYP, leeway: 0 };
                let claims: Map<String, Value> = jwt::verify(&keys.1, self.now_u64(), token, &expect)
                    .map_err(|_| "the token is invalid or expired")?;
                let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid).unwrap_or_default();
                let claims = Arc::new(claims);
                self.verified.insert(cache_key, kid, claims.clone(), now);
                claims
            }
        };
        if claims.get("exp").and_then(Value::as_i64).is_none_or(|exp| exp <= now) {
            return Err("the token is invalid or expired");
        }
        let jti = claims.get("jti").and_then(Value::as_str).ok_or("the token has no jti")?;
        let gid = claims.get("gid").and_then(Value::as_str);
        if self.is_revoked(jti, gid) {
            return Err("the token was revoked");
        }
        Ok(claims)
    }
}

/// `at_hash`: base64url of the left half of the hash the signing alg uses (SHA-256 for ES256
/// and RS256, SHA-512 for EdDSA/Ed25519).
pub fn half_hash(alg: Alg, token: &str) -> String {
    use base64::Engine;
    let algo = match alg {
        Alg::EdDSA => &ring::digest::SHA512,
        _ => &ring::digest::SHA256,
    };
    let d = ring::digest::digest(algo, token.as_bytes());
    let half = &d.as_ref()[..d.as_ref().len() / 2];
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(half)
}

/// The refresh-family id of a newly issued code grant.
pub fn new_grant_id() -> String {
    random_token(16)
}

/// Lookup key of a code / refresh token.
pub fn lookup_hash(token: &str) -> String {
    sha256_hex(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_oidc_example() {
        // Cross-checked with Python: base64url(sha256(token)[:16]) and base64url(sha512(token)[:32]).
        assert_eq!(half_hash(Alg::ES256, "jHkWEdUXMU1BwAsC4vtUsZwnNX3e6bXB"), "MwGPZWlQ1gpuKSW8jyoHkw");
        assert_eq!(
            half_hash(Alg::EdDSA, "jHkWEdUXMU1BwAsC4vtUsZwnNX3e6bXB"),
            "xFHiXeqkF7f6U5-4TBfMmtlj0ZY7bNR-_GQtMz5ir8Y"
        );
    }
}
