//! Clients and users as stored, and the specs the admin CLI/REST API create them from.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::form::valid_scope_token;

/// `token_endpoint_auth_method` (RFC 7591 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    TlsClientAuth,
    /// A public client (browser or native app): no secret, PKCE required.
    None,
}

impl AuthMethod {
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::TlsClientAuth => "tls_client_auth",
            AuthMethod::None => "none",
        }
    }
    pub fn uses_secret(self) -> bool {
        matches!(self, AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost)
    }
    pub const ALL: [AuthMethod; 5] = [
        AuthMethod::ClientSecretBasic,
        AuthMethod::ClientSecretPost,
        AuthMethod::PrivateKeyJwt,
        AuthMethod::TlsClientAuth,
        AuthMethod::None,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantType {
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    #[serde(rename = "authorization_code")]
    AuthorizationCode,
    #[serde(rename = "refresh_token")]
    RefreshToken,
    #[serde(rename = "urn:ietf:params:oauth:grant-type:token-exchange")]
    TokenExchange,
}

impl GrantType {
    pub const ALL: [GrantType; 4] =
        [GrantType::ClientCredentials, GrantType::AuthorizationCode, GrantType::RefreshToken, GrantType::TokenExchange];
    pub fn name(self) -> &'static str {
        match self {
            GrantType::ClientCredentials => "client_credentials",
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::TokenExchange => TOKEN_EXCHANGE,
        }
    }
    pub fn parse(s: &str) -> Option<GrantType> {
        match s {
            "token-exchange" => Some(GrantType::TokenExchange),
            _ => GrantType::ALL.into_iter().find(|g| g.name() == s),
        }
    }
}

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// A client registration (everything but the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    pub client_id: String,
    #[serde(default)]
    pub name: String,
    pub token_endpoint_auth_method: AuthMethod,
    pub grant_types: Vec<GrantType>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Scopes the client may request.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Scopes granted when a request names none.
    #[serde(default)]
    pub default_scopes: Vec<String>,
    /// Audiences (RFC 8707 resources) its tokens may be issued for; the first ones form the
    /// default `aud` when a request names none.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Public keys for `private_key_jwt` (a JWK Set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Value>,
    /// Expected subject DN of the client certificate for `tls_client_auth` (RFC 4514 form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_subject_dn: Option<String>,
    /// First-party client: no consent page.
    #[serde(default)]
    pub skip_consent: bool,
}

impl ClientSpec {
    pub fn is_public(&self) -> bool {
        self.token_endpoint_auth_method == AuthMethod::None
    }

    pub fn allows(&self, g: GrantType) -> bool {
        self.grant_types.contains(&g)
    }

    /// Every rule a registration must satisfy; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let id_ok = !self.client_id.is_empty()
            && self.client_id.len() <= 128
            && self.client_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        if !id_ok {
            return Err("client_id: 1-128 characters of A-Z a-z 0-9 - . _ ~".into());
        }
        if self.grant_types.is_empty() {
            return Err("grant_types: at least one grant is required".into());
        }
        if self.is_public() {
            for g in [GrantType::ClientCredentials, GrantType::TokenExchange] {
                if self.allows(g) {
                    return Err(format!("grant_types: a public client cannot use {}", g.name()));
                }
            }
        }
        if self.allows(GrantType::AuthorizationCode) && self.redirect_uris.is_empty() {
            return Err("redirect_uris: authorization_code needs at least one redirect URI".into());
        }
        for (field, uris) in
            [("redirect_uris", &self.redirect_uris), ("post_logout_redirect_uris", &self.post_logout_redirect_uris)]
        {
            for u in uris {
                check_redirect_uri(u).map_err(|e| format!("{field}: {u:?}: {e}"))?;
            }
        }
        for s in self.scopes.iter().chain(&self.default_scopes) {
            if !valid_scope_token(s) {
                return Err(format!("scopes: {s:?} is not a valid scope token"));
            }
        }
        if let Some(s) = self.default_scopes.iter().find(|s| !self.scopes.contains(s)) {
            return Err(format!("default_scopes: {s:?} is not in scopes"));
        }
        match self.token_endpoint_auth_method {
            AuthMethod::PrivateKeyJwt => {
                let keys = self.jwks.as_ref().and_then(|j| j.get("keys")).and_then(Value::as_array);
                if keys.is_none_or(|k| k.is_empty()) {
                    return Err("jwks: private_key_jwt needs a JWK Set with at least one key".into());
                }
                if let Some(keys) = keys {
                    for k in keys {
                        serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone())
                            .map_err(|e| format!("jwks: not a usable public JWK: {e}"))?;
                        if k.get("d").is_some() {
                            return Err("jwks: contains a private key (\"d\"); register the public key only".into());
                        }
                    }
                }
            }
            AuthMethod::TlsClientAuth if self.tls_client_auth_subject_dn.as_deref().is_none_or(str::is_empty) => {
                return Err("tls_client_auth_subject_dn: required for tls_client_auth".into());
            }
            _ => {}
        }
        Ok(())
    }
}

/// RFC 9700 §4.1: absolute URIs, no fragment; plain http only for loopback hosts.
fn check_redirect_uri(u: &str) -> Result<(), &'static str> {
    if u.contains('#') {
        return Err("must not contain a fragment");
    }
    let (scheme, rest) = u.split_once("://").ok_or("must be an absolute URI")?;
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let hostname = if host.starts_with('[') {
        host.split(']').next().unwrap_or("").trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or("")
    };
    if hostname.is_empty() {
        return Err("must have a host");
    }
    match scheme {
        "https" => Ok(()),
        "http" if matches!(hostname, "localhost" | "127.0.0.1" | "::1") => Ok(()),
        "http" => Err("plain http is only allowed for loopback hosts"),
        s if s.contains('.') => Ok(()), // private-use scheme of a native app (RFC 8252 §7.1)
        _ => Err("unsupported scheme"),
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    pub spec: ClientSpec,
    pub secret_hash: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub username: String,
    /// The stable, opaque `sub`.
    pub subject: String,
    #[serde(skip)]
    pub password_hash: String,
    pub roles: Vec<String>,
    #[serde(flatten)]
    pub profile: Profile,
}

pub fn valid_username(u: &str) -> bool {
    !u.is_empty() && u.len() <= 128 && u.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._@+".contains(&b))
}

pub fn valid_role(r: &str) -> bool {
    !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ClientSpec {
        ClientSpec {
            client_id: "web".into(),
            name: String::new(),
            token_endpoint_auth_method: AuthMethod::None,
            grant_types: vec![GrantType::AuthorizationCode],
            redirect_uris: vec!["http://127.0.0.1:3000/cb".into()],
            post_logout_redirect_uris: vec![],
            scopes: vec!["openid".into()],
            default_scopes: vec![],
            audiences: vec![],
            jwks: None,
            tls_client_auth_subject_dn: None,
            skip_consent: false,
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(spec().validate(), Ok(()));
        let mut s = spec();
        s.grant_types.push(GrantType::ClientCredentials);
        assert_eq!(s.validate().unwrap_err(), "grant_types: a public client cannot use client_credentials");
        let mut s = spec();
        s.redirect_uris = vec!["http://evil.example/cb".into()];
        assert_eq!(
            s.validate().unwrap_err(),
            "redirect_uris: \"http://evil.example/cb\": plain http is only allowed for loopback hosts"
        );
        let mut s = spec();
        s.redirect_uris = vec!["https://app.example/cb#x".into()];
        assert!(s.validate().unwrap_err().contains("fragment"));
        let mut s = spec();
        s.default_scopes = vec!["admin".into()];
        assert_eq!(s.validate().unwrap_err(), "default_scopes: \"admin\" is not in scopes");
        let mut s = spec();
        s.token_endpoint_auth_method = AuthMethod::PrivateKeyJwt;
        assert!(s.validate().unwrap_err().starts_with("jwks:"));
        let mut s = spec();
        s.client_id = "bad id".into();
        assert!(s.validate().unwrap_err().starts_with("client_id:"));
    }

    #[test]
    fn grant_names_round_trip() {
        for g in GrantType::ALL {
            assert_eq!(GrantType::parse(g.name()), Some(g));
            assert_eq!(serde_json::to_value(g).unwrap(), Value::String(g.name().into()));
        }
        assert_eq!(GrantType::parse("token-exchange"), Some(GrantType::TokenExchange));
        assert_eq!(GrantType::parse("password"), None);
    }
}
