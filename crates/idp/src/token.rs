//! `POST /oauth2/token`: the grants.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue};
use serde_json::{json, Map, Value};

use crate::client_auth::Authenticated;
use crate::error::{OAuthError, OAuthResult};
use crate::form::{split_scope, Params};
use crate::model::{Client, GrantType};
use crate::repo::Take;
use crate::secrets::{ct_eq, sha256_b64};
use crate::tokens::{lookup_hash, Grant, UserGrant, ACCESS_TOKEN_TYPE};
use crate::{peer_of, Idp, Peer};
use palisade_core::audit::Stage;

pub async fn token(
    State(idp): State<Arc<Idp>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer_of(peer);
    match handle(&idp, &peer, &headers, &body).await {
        Ok(v) => no_store_json(v),
        Err(e) => {
            // Refused grants: failed client authentication, replayed codes and refresh tokens.
            let client_id = form_urlencoded::parse(&body).find(|(k, _)| k == "client_id").map(|(_, v)| v.into_owned());
            let principal = client_id.as_ref().map_or_else(
                || "Anonymous".to_owned(),
                |c| {
                    format!(
                        "Client::\"{}\"",
                        c.chars().filter(|c| !c.is_control() && *c != '"').take(128).collect::<String>()
                    )
                },
            );
            idp.audit(
                Stage::Token,
                true,
                principal,
                client_id.as_deref(),
                &peer,
                "/oauth2/token",
                e.status.as_u16(),
                &format!("{}: {}", e.code, e.description),
            );
            e.into_response()
        }
    }
}

pub(crate) fn no_store_json(v: Value) -> Response {
    let mut r = axum::Json(v).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

async fn handle(idp: &Idp, peer: &Peer, headers: &HeaderMap, body: &[u8]) -> OAuthResult<Value> {
    let p = Params::from_form(headers, body)?;
    let grant_type = p.require("grant_type")?;
    let Some(grant) = GrantType::parse(grant_type).filter(|_| grant_type != "token-exchange") else {
        return Err(OAuthError::unsupported_grant_type(format!("grant_type {grant_type:?} is not supported")));
    };
    let auth = idp.authenticate_client(headers, &p, peer).await?;
    if !auth.client.spec.allows(grant) {
        return Err(OAuthError::unauthorized_client(format!("the client may not use {}", grant.name())));
    }
    match grant {
        GrantType::ClientCredentials => client_credentials(idp, &auth, &p).await,
        GrantType::AuthorizationCode => authorization_code(idp, &auth, &p).await,
        GrantType::RefreshToken => refresh_token(idp, &auth, &p).await,
        GrantType::TokenExchange => token_exchange(idp, &auth, &p).await,
    }
}

/// Requested scope checked against what the client may ask for; none → the defaults.
fn scope_for(client: &Client, requested: Option<&str>) -> OAuthResult<Vec<String>> {
    match requested {
        None => Ok(client.spec.default_scopes.clone()),
        Some(s) => {
            let scope = split_scope(s);
            if let Some(bad) = scope.iter().find(|s| !client.spec.scopes.contains(s)) {
                return Err(OAuthError::invalid_scope(format!("scope {bad:?} is not allowed for this client")));
            }
            Ok(scope)
        }
    }
}

/// `resource` (RFC 8707) or `audience` (RFC 8693), checked against the client's audiences.
fn audience_for(idp: &Idp, client: &Client, p: &Params) -> OAuthResult<Vec<String>> {
    if p.contains("resource") && p.contains("audience") {
        return Err(OAuthError::invalid_request("use either resource or audience, not both"));
    }
    match p.get("resource").or_else(|| p.get("audience")) {
        Some(a) => {
            if !client.spec.audiences.iter().any(|x| x == a) {
                return Err(OAuthError::invalid_target(format!("audience {a:?} is not allowed for this client")));
            }
            Ok(vec![a.to_owned()])
        }
        None if client.spec.audiences.is_empty() => Ok(vec![idp.cfg.issuer.clone()]),
        None => Ok(client.spec.audiences.clone()),
    }
}

fn token_response(access: String, ttl: u64, scope: &[String]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("access_token".into(), json!(access));
    m.insert("token_type".into(), json!("Bearer"));
    m.insert("expires_in".into(), json!(ttl));
    if !scope.is_empty() {
        m.insert("scope".into(), json!(scope.join(" ")));
    }
    m
}

async fn client_credentials(idp: &Idp, auth: &Authenticated, p: &Params) -> OAuthResult<Value> {
    if auth.client.spec.is_public() {
        return Err(OAuthError::unauthorized_client("a public client cannot use client_credentials"));
    }
    let scope = scope_for(&auth.client, p.get("scope"))?;
    let aud = audience_for(idp, &auth.client, p)?;
    let id = &auth.client.spec.client_id;
    let grant = Grant {
        sub: id.clone(),
        client_id: id.clone(),
        aud,
        scope: scope.clone(),
        cert_thumbprint: auth.cert_thumbprint.clone(),
        ..Grant::default()
    };
    let (at, ttl) = idp.issue_access(&grant)?;
    Ok(Value::Object(token_response(at, ttl, &scope)))
}

/// RFC 7636 §4.1: 43–128 characters of `[A-Z a-z 0-9 - . _ ~]`.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

async fn authorization_code(idp: &Idp, auth: &Authenticated, p: &Params) -> OAuthResult<Value> {
    let code = p.require("code")?;
    let now = palisade_store::now();
    let client_id = &auth.client.spec.client_id;
    let stored = match idp.repo.take_code(&lookup_hash(code), now).await? {
        Take::Missing => return Err(OAuthError::invalid_grant("the code is invalid")),
        Take::Replayed(s) => {
            if &s.client_id == client_id {
                // RFC 6749 §4.1.2: a reused code revokes what it issued.
                idp.revoke_grant(&s.grant_id).await?;
                tracing::warn!(client_id = %client_id, "authorization code reused; its grant is revoked");
            }
            return Err(OAuthError::invalid_grant("the code was already used"));
        }
        Take::Fresh(s) => s,
    };
    if &stored.client_id != client_id {
        return Err(OAuthError::invalid_grant("the code was issued to another client"));
    }
    if stored.expires_at <= now {
        return Err(OAuthError::invalid_grant("the code has expired"));
    }
    let mut grant: UserGrant = serde_json::from_str(&stored.data).map_err(OAuthError::server_error)?;
    if p.get("redirect_uri") != grant.redirect_uri.as_deref() {
        return Err(OAuthError::invalid_grant("redirect_uri does not match the authorization request"));
    }
    match (&grant.code_challenge, p.get("code_verifier")) {
        (Some(challenge), Some(verifier)) => {
            if !valid_verifier(verifier) || !ct_eq(sha256_b64(verifier.as_bytes()).as_bytes(), challenge.as_bytes()) {
                return Err(OAuthError::invalid_grant("code_verifier does not match the code_challenge"));
            }
        }
        (Some(_), None) => return Err(OAuthError::invalid_grant("code_verifier is required")),
        // RFC 9700 §2.1.1: a verifier without a challenge is a downgrade attempt.
        (None, Some(_)) => return Err(OAuthError::invalid_grant("no code_challenge was sent for this code")),
        (None, None) => {}
    }
    let user = idp
        .repo
        .user_by_subject(&grant.subject)
        .await?
        .ok_or_else(|| OAuthError::invalid_grant("the user no longer exists"))?;
    grant.cert_thumbprint = auth.cert_thumbprint.clone();
    grant.aud = audience_for(idp, &auth.client, p)?;
    issue_user_tokens(idp, auth, &stored.grant_id, &grant, &user.roles, true).await
}

async fn issue_user_tokens(
    idp: &Idp,
    auth: &Authenticated,
    grant_id: &str,
    grant: &UserGrant,
    roles: &[String],
    with_id_token: bool,
) -> OAuthResult<Value> {
    let client_id = &auth.client.spec.client_id;
    let at_grant = Grant {
        sub: grant.subject.clone(),
        client_id: client_id.clone(),
        aud: grant.aud.clone(),
        scope: grant.scope.clone(),
        roles: roles.to_vec(),
        auth_time: Some(grant.auth_time),
        cert_thumbprint: grant.cert_thumbprint.clone(),
        act: None,
        grant_id: Some(grant_id.to_owned()),
    };
    let (at, ttl) = idp.issue_access(&at_grant)?;
    let mut resp = token_response(at.clone(), ttl, &grant.scope);
    if auth.client.spec.allows(GrantType::RefreshToken) {
        let rt = idp
            .issue_refresh(
                grant_id,
                client_id,
                &UserGrant { nonce: None, redirect_uri: None, code_challenge: None, ..grant.clone() },
            )
            .await?;
        resp.insert("refresh_token".into(), json!(rt));
    }
    if with_id_token && grant.scope.iter().any(|s| s == "openid") {
        resp.insert("id_token".into(), json!(idp.issue_id_token(client_id, grant, &at).await?));
    }
    Ok(Value::Object(resp))
}

async fn refresh_token(idp: &Idp, auth: &Authenticated, p: &Params) -> OAuthResult<Value> {
    let token = p.require("refresh_token")?;
    let now = palisade_store::now();
    let client_id = &auth.client.spec.client_id;
    let hash = lookup_hash(token);
    // Validate before spending: a request refused for its parameters leaves the token usable.
    let Some((stored, used_at)) = idp.repo.peek_refresh(&hash).await? else {
        return Err(OAuthError::invalid_grant("the refresh token is invalid"));
    };
    if &stored.client_id != client_id {
        return Err(OAuthError::invalid_grant("the refresh token was issued to another client"));
    }
    let mut grant: UserGrant = serde_json::from_str(&stored.data).map_err(OAuthError::server_error)?;
    if used_at.is_none() {
        if stored.expires_at <= now {
            return Err(OAuthError::invalid_grant("the refresh token has expired"));
        }
        if let Some(requested) = p.get("scope") {
            let requested = split_scope(requested);
            if let Some(bad) = requested.iter().find(|s| !grant.scope.contains(s)) {
                return Err(OAuthError::invalid_scope(format!("scope {bad:?} was not granted")));
            }
            grant.scope = requested;
        }
        if grant.cert_thumbprint.is_some() && grant.cert_thumbprint != auth.cert_thumbprint {
            return Err(OAuthError::invalid_grant("the refresh token is bound to another client certificate"));
        }
    }
    match idp.repo.take_refresh(&hash, now).await? {
        Take::Fresh(_) => {}
        Take::Replayed(s) => {
            // RFC 9700 §4.14.2: a rotated-out token came back; someone holds a copy. Revoke the family.
            idp.revoke_grant(&s.grant_id).await?;
            tracing::warn!(client_id = %client_id, "refresh token reused; the token family is revoked");
            return Err(OAuthError::invalid_grant("the refresh token was already used or revoked"));
        }
        Take::Missing => return Err(OAuthError::invalid_grant("the refresh token is invalid")),
    }
    let user = idp
        .repo
        .user_by_subject(&grant.subject)
        .await?
        .ok_or_else(|| OAuthError::invalid_grant("the user no longer exists"))?;
    issue_user_tokens(idp, auth, &stored.grant_id, &grant, &user.roles, true).await
}

/// RFC 8693: a service presents a token it received (the subject token) and gets one for
/// another audience, acting for the same subject; `act` names the service.
async fn token_exchange(idp: &Idp, auth: &Authenticated, p: &Params) -> OAuthResult<Value> {
    let subject_token = p.require("subject_token")?;
    let stt = p.require("subject_token_type")?;
    if stt != ACCESS_TOKEN_TYPE {
        return Err(OAuthError::invalid_request(format!("subject_token_type must be {ACCESS_TOKEN_TYPE}")));
    }
    if let Some(rtt) = p.get("requested_token_type") {
        if rtt != ACCESS_TOKEN_TYPE {
            return Err(OAuthError::invalid_request(format!("requested_token_type must be {ACCESS_TOKEN_TYPE}")));
        }
    }
    let subject = idp
        .verify_access(subject_token)
        .await
        .map_err(|why| OAuthError::invalid_grant(format!("subject_token: {why}")))?;
    let client_id = &auth.client.spec.client_id;
    // Only a service the token was meant for may exchange it.
    let aud_ok = match subject.get("aud") {
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(client_id)),
        _ => false,
    };
    if !aud_ok && subject.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err(OAuthError::invalid_grant("subject_token was not issued to or for this client"));
    }
    let mut actor = json!({ "sub": client_id });
    if let Some(actor_token) = p.get("actor_token") {
        if p.get("actor_token_type") != Some(ACCESS_TOKEN_TYPE) {
            return Err(OAuthError::invalid_request(format!("actor_token_type must be {ACCESS_TOKEN_TYPE}")));
        }
        let a = idp
            .verify_access(actor_token)
            .await
            .map_err(|why| OAuthError::invalid_grant(format!("actor_token: {why}")))?;
        let sub = a.get("sub").cloned().unwrap_or(Value::Null);
        actor = json!({ "sub": sub });
    }
    if let Some(prior) = subject.get("act") {
        actor["act"] = prior.clone();
    }
    let held: Vec<String> = subject.get("scope").and_then(Value::as_str).map(split_scope).unwrap_or_default();
    let scope = match p.get("scope") {
        Some(s) => {
            let s = split_scope(s);
            if let Some(bad) = s.iter().find(|x| !held.contains(x) || !auth.client.spec.scopes.contains(x)) {
                return Err(OAuthError::invalid_scope(format!(
                    "scope {bad:?} is not held by the subject token or not allowed for this client"
                )));
            }
            s
        }
        None => held.into_iter().filter(|s| auth.client.spec.scopes.contains(s)).collect(),
    };
    let aud = audience_for(idp, &auth.client, p)?;
    let roles = subject
        .get("roles")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let grant = Grant {
        sub: subject.get("sub").and_then(Value::as_str).unwrap_or_default().to_owned(),
        client_id: client_id.clone(),
        aud,
        scope: scope.clone(),
        roles,
        auth_time: subject.get("auth_time").and_then(Value::as_i64),
        cert_thumbprint: auth.cert_thumbprint.clone(),
        act: Some(actor),
        grant_id: subject.get("gid").and_then(Value::as_str).map(str::to_owned),
    };
    let (at, ttl) = idp.issue_access(&grant)?;
    let mut resp = token_response(at, ttl, &scope);
    resp.insert("issued_token_type".into(), json!(ACCESS_TOKEN_TYPE));
    Ok(Value::Object(resp))
}

impl Idp {
    /// How long a grant revocation must be remembered: until every access token of it expired.
    pub(crate) fn revocation_window(&self) -> i64 {
        i64::try_from(self.cfg.access_token_ttl.max(self.cfg.refresh_token_ttl)).unwrap_or(i64::MAX / 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_syntax() {
        assert!(valid_verifier(&"a".repeat(43)));
        assert!(!valid_verifier(&"a".repeat(42)));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(43))));
    }
}
