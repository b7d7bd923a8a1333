//! Discovery, JWKS, introspection (RFC 7662), revocation (RFC 7009), userinfo (OIDC Core §5.3)
//! and RP-initiated logout (OIDC RP-Initiated Logout 1.0).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use palisade_crypto::jwt;
use serde_json::{json, Map, Value};

use crate::authorize::{cookie, set_cookie, with_params, CSRF_COOKIE, SESSION_COOKIE};
use crate::error::{OAuthError, OAuthResult};
use crate::form::{split_scope, Params};
use crate::html;
use crate::model::{AuthMethod, GrantType, User};
use crate::secrets::{ct_eq, random_token, sha256_b64, sha256_hex};
use crate::token::no_store_json;
use crate::tokens::{lookup_hash, UserGrant};
use crate::{peer_of, Idp, Peer};

pub async fn discovery(State(idp): State<Arc<Idp>>) -> Response {
    let u = |p: &str| idp.cfg.url(p);
    let keys = idp.keys.keyset();
    let now = u64::try_from(palisade_store::now()).unwrap_or(0);
    let mut algs: Vec<&str> = keys.1.published(now).map(|k| k.alg.name()).collect();
    algs.sort_unstable();
    algs.dedup();
    let auth_methods: Vec<&str> = AuthMethod::ALL.iter().map(|m| m.name()).collect();
    let doc = json!({
        "issuer": idp.cfg.issuer,
        "authorization_endpoint": u("/oauth2/authorize"),
        "token_endpoint": u("/oauth2/token"),
        "jwks_uri": u("/jwks.json"),
        "userinfo_endpoint": u("/userinfo"),
        "introspection_endpoint": u("/oauth2/introspect"),
        "revocation_endpoint": u("/oauth2/revoke"),
        "end_session_endpoint": u("/oauth2/logout"),
        "scopes_supported": ["openid", "profile", "email", "roles", "offline_access"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": GrantType::ALL.iter().map(|g| g.name()).collect::<Vec<_>>(),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "ES384", "EdDSA", "RS256", "PS256"],
        "introspection_endpoint_auth_methods_supported": &auth_methods[..4],
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "azp", "name", "email", "preferred_username", "roles"],
        "tls_client_certificate_bound_access_tokens": true,
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
    });
    let mut r = Json(doc).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    r
}

pub async fn jwks(State(idp): State<Arc<Idp>>) -> Response {
    let now = u64::try_from(palisade_store::now()).unwrap_or(0);
    let mut r = Json(idp.keys.keyset().1.jwks(now)).into_response();
    // Short cache: a pre-published key must reach relying parties before it signs.
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    r
}

/// The claims `scope` releases (OIDC Core §5.4), plus roles.
pub(crate) fn profile_claims(user: &User, scope: &[String]) -> Map<String, Value> {
    let mut m = Map::new();
    let has = |s: &str| scope.iter().any(|x| x == s);
    if has("profile") {
        m.insert("preferred_username".into(), json!(user.username));
        if let Some(n) = &user.profile.name {
            m.insert("name".into(), json!(n));
        }
    }
    if has("email") {
        if let Some(e) = &user.profile.email {
            m.insert("email".into(), json!(e));
        }
    }
    if has("roles") || has("profile") {
        m.insert("roles".into(), json!(user.roles));
    }
    m
}

pub async fn introspect(
    State(idp): State<Arc<Idp>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match do_introspect(&idp, &peer_of(peer), &headers, &body).await {
        Ok(v) => no_store_json(v),
        Err(e) => e.into_response(),
    }
}

async fn do_introspect(idp: &Idp, peer: &Peer, headers: &HeaderMap, body: &[u8]) -> OAuthResult<Value> {
    let p = Params::from_form(headers, body)?;
    let auth = idp.authenticate_client(headers, &p, peer).await?;
    if auth.client.spec.is_public() {
        return Err(OAuthError::unauthorized_client("public clients cannot introspect tokens"));
    }
    let token = p.require("token")?;
    let inactive = json!({ "active": false });
    if token.contains('.') {
        return Ok(match idp.verify_access(token).await {
            Ok(claims) => {
                let mut m = Map::new();
                m.insert("active".into(), json!(true));
                m.insert("token_type".into(), json!("Bearer"));
                for k in [
                    "scope",
                    "client_id",
                    "sub",
                    "aud",
                    "iss",
                    "exp",
                    "iat",
                    "nbf",
                    "jti",
                    "cnf",
                    "act",
                    "roles",
                    "auth_time",
                ] {
                    if let Some(v) = claims.get(k) {
                        m.insert(k.into(), v.clone());
                    }
                }
                Value::Object(m)
            }
            Err(_) => inactive,
        });
    }
    let now = palisade_store::now();
    let Some((stored, used_at)) = idp.repo.peek_refresh(&lookup_hash(token)).await? else { return Ok(inactive) };
    // A refresh token is only described to the client that holds it.
    if used_at.is_some() || stored.expires_at <= now || stored.client_id != auth.client.spec.client_id {
        return Ok(inactive);
    }
    if idp.is_revoked(&stored.grant_id, None) {
        return Ok(inactive);
    }
    let grant: UserGrant = serde_json::from_str(&stored.data).map_err(OAuthError::server_error)?;
    Ok(json!({
        "active": true,
        "token_type": "refresh_token",
        "client_id": stored.client_id,
        "sub": grant.subject,
        "scope": grant.scope.join(" "),
        "exp": stored.expires_at,
        "iss": idp.cfg.issuer,
    }))
}

pub async fn revoke(
    State(idp): State<Arc<Idp>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match do_revoke(&idp, &peer_of(peer), &headers, &body).await {
        Ok(()) => no_store_json(json!({})),
        Err(e) => e.into_response(),
    }
}

async fn do_revoke(idp: &Idp, peer: &Peer, headers: &HeaderMap, body: &[u8]) -> OAuthResult<()> {
    let p = Params::from_form(headers, body)?;
    let auth = idp.authenticate_client(headers, &p, peer).await?;
    let token = p.require("token")?;
    let client_id = &auth.client.spec.client_id;
    let now = palisade_store::now();
    if token.contains('.') {
        // RFC 7009 §2.2: an invalid or unknown token is not an error.
        let Ok(claims) = idp.verify_access(token).await else { return Ok(()) };
        if claims.get("client_id").and_then(Value::as_str) != Some(client_id) {
            return Err(OAuthError::unauthorized_client("the token was issued to another client"));
        }
        let jti = claims.get("jti").and_then(Value::as_str).unwrap_or_default();
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(now);
        idp.revoke_jti(jti, exp).await?;
        tracing::info!(client_id = %client_id, "access token revoked");
        return Ok(());
    }
    let Some((stored, _)) = idp.repo.peek_refresh(&lookup_hash(token)).await? else { return Ok(()) };
    if &stored.client_id != client_id {
        return Err(OAuthError::unauthorized_client("the token was issued to another client"));
    }
    idp.revoke_grant(&stored.grant_id).await?;
    tracing::info!(client_id = %client_id, "refresh token family revoked");
    Ok(())
}

pub async fn userinfo(
    State(idp): State<Arc<Idp>>,
    peer: Option<Extension<Peer>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match do_userinfo(&idp, &peer_of(peer), &method, &headers, &body).await {
        Ok(v) => no_store_json(v),
        Err(e) => e.into_response(),
    }
}

async fn do_userinfo(idp: &Idp, peer: &Peer, method: &Method, headers: &HeaderMap, body: &[u8]) -> OAuthResult<Value> {
    let from_header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
    });
    let from_body = if *method == Method::POST && !body.is_empty() {
        Params::from_form(headers, body)?.get("access_token").map(str::to_owned)
    } else {
        None
    };
    let token = match (from_header, from_body) {
        (Some(_), Some(_)) => return Err(OAuthError::invalid_request("send the token once")),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => {
            let mut e = OAuthError::invalid_token("a bearer token is required");
            e.challenge = Some("Bearer realm=\"palisade\"".into());
            return Err(e);
        }
    };
    let claims = idp.verify_access(&token).await.map_err(OAuthError::invalid_token)?;
    check_binding(&claims, peer)?;
    let scope = claims.get("scope").and_then(Value::as_str).map(split_scope).unwrap_or_default();
    if !scope.iter().any(|s| s == "openid") {
        return Err(OAuthError::insufficient_scope("the token lacks the openid scope"));
    }
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
    let user =
        idp.repo.user_by_subject(sub).await?.ok_or_else(|| OAuthError::invalid_token("the user no longer exists"))?;
    let mut m = Map::new();
    m.insert("sub".into(), json!(user.subject));
    m.extend(profile_claims(&user, &scope));
    Ok(Value::Object(m))
}

/// RFC 8705 §3: a certificate-bound token is only good with the same client certificate.
fn check_binding(claims: &Map<String, Value>, peer: &Peer) -> OAuthResult<()> {
    let Some(bound) = claims.get("cnf").and_then(|c| c.get("x5t#S256")).and_then(Value::as_str) else { return Ok(()) };
    let presented = peer.client_cert.as_ref().map(|c| sha256_b64(c));
    if presented.as_deref().is_some_and(|p| ct_eq(p.as_bytes(), bound.as_bytes())) {
        Ok(())
    } else {
        Err(OAuthError::invalid_token("the token is bound to a client certificate that was not presented"))
    }
}

pub async fn logout(
    State(idp): State<Arc<Idp>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = if method == Method::POST { Params::from_form(&headers, &body) } else { Params::from_query(uri.query()) };
    let p = match p {
        Ok(p) => p,
        Err(e) => return html::error_page(StatusCode::BAD_REQUEST, &e.description),
    };
    // The hint may be expired (OIDC RP-Initiated Logout §2), so allow a day of lateness.
    let hint = match p.get("id_token_hint") {
        Some(t) => {
            let keys = idp.keys.keyset();
            let now = u64::try_from(palisade_store::now()).unwrap_or(0);
            let expect = jwt::Expect { issuer: &idp.cfg.issuer, audience: None, typ: "JWT", leeway: 86_400 };
            match jwt::verify::<Map<String, Value>>(&keys.1, now, t, &expect) {
                Ok(c) => Some(c),
                Err(_) => return html::error_page(StatusCode::BAD_REQUEST, "The id_token_hint is not valid."),
            }
        }
        None => None,
    };
    let hint_client = hint.as_ref().and_then(|c| c.get("aud")).and_then(Value::as_str);
    let client_id = match (p.get("client_id"), hint_client) {
        (Some(a), Some(b)) if a != b => {
            return html::error_page(StatusCode::BAD_REQUEST, "client_id does not match the id_token_hint.")
        }
        (a, b) => a.or(b),
    };
    let target = match p.get("post_logout_redirect_uri") {
        Some(uri) => {
            let Some(cid) = client_id else {
                return html::error_page(
                    StatusCode::BAD_REQUEST,
                    "post_logout_redirect_uri needs client_id or id_token_hint.",
                );
            };
            match idp.client(cid).await {
                Ok(Some(c)) if c.spec.post_logout_redirect_uris.iter().any(|u| u == uri) => Some(uri.to_owned()),
                Ok(_) => {
                    return html::error_page(
                        StatusCode::BAD_REQUEST,
                        "The post_logout_redirect_uri is not registered for this client.",
                    )
                }
                Err(e) => return OAuthError::from(e).into_response(),
            }
        }
        None => None,
    };
    // Without a valid hint the user confirms (a cross-site link must not sign anyone out).
    let confirmed = hint.is_some() || {
        let form = p.get("csrf").unwrap_or_default();
        method == Method::POST
            && p.get("action") == Some("logout")
            && !form.is_empty()
            && cookie(&headers, CSRF_COOKIE).is_some_and(|c| ct_eq(c.as_bytes(), form.as_bytes()))
    };
    if !confirmed {
        let csrf = cookie(&headers, CSRF_COOKIE)
            .filter(|c| c.len() == 43)
            .map(str::to_owned)
            .unwrap_or_else(|| random_token(32));
        let carry: Vec<(&str, &str)> = ["client_id", "post_logout_redirect_uri", "state"]
            .iter()
            .filter_map(|k| p.get(k).map(|v| (*k, v)))
            .collect();
        let mut r = html::logout_confirm(&csrf, &carry);
        set_cookie(&mut r, CSRF_COOKIE, &csrf, "/oauth2", None, idp.cfg.secure_cookies());
        return r;
    }
    if let Some(s) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = idp.repo.delete_session(&sha256_hex(s)).await {
            return OAuthError::from(e).into_response();
        }
    }
    let mut r = match target {
        Some(uri) => {
            let params: Vec<(&str, &str)> = p.get("state").map(|s| vec![("state", s)]).unwrap_or_default();
            let loc = if params.is_empty() { uri } else { with_params(&uri, &params) };
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        None => html::logged_out(),
    };
    set_cookie(&mut r, SESSION_COOKIE, "", "/", Some(0), idp.cfg.secure_cookies());
    r
}
