//! `/oauth2/authorize`: the authorization request (RFC 6749 §4.1, OIDC Core §3.1.2), the
//! login and consent pages, and the code. Errors about the client or redirect URI are shown on
//! a page (never redirected to an unverified URI); every other error goes back to the client.
//!
//! CSRF: the first visit sets a random `palisade_csrf` cookie; every form carries the same value
//! and the pending request stores its hash, so a form posted from another site or another
//! browser is refused.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use serde::{Deserialize, Serialize};

use crate::error::OAuthError;
use crate::form::{split_scope, Params};
use crate::html;
use crate::model::{Client, GrantType};
use crate::repo::AuthRequestRow;
use crate::secrets::{ct_eq, dummy_hash, random_token, sha256_hex, verify_secret_blocking};
use crate::throttle::{IP_THRESHOLD, USER_THRESHOLD};
use crate::tokens::{lookup_hash, new_grant_id, UserGrant};
use crate::{peer_of, Idp, Peer};
use palisade_core::audit::Stage;

pub const CSRF_COOKIE: &str = "palisade_csrf";
pub const SESSION_COOKIE: &str = "palisade_session";
const REQUEST_TTL: i64 = 600;
const CODE_TTL: i64 = 60;

/// A validated authorization request, kept server-side while the user signs in.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuthzRequest {
    client_id: String,
    redirect_uri: String,
    scope: Vec<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    code_challenge: Option<String>,
    #[serde(default)]
    prompt: Vec<String>,
    #[serde(default)]
    max_age: Option<i64>,
}

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub fn set_cookie(resp: &mut Response, name: &str, value: &str, path: &str, max_age: Option<i64>, secure: bool) {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut r = status.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `redirect_uri` with response parameters appended (RFC 6749 §4.1.2, RFC 9207 `iss`).
pub fn with_params(base: &str, params: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{}", ser.finish())
}

impl Idp {
    fn error_redirect(&self, req: &AuthzRequest, error: &str, description: &str, status: StatusCode) -> Response {
        let mut p = vec![("error", error), ("error_description", description), ("iss", self.cfg.issuer.as_str())];
        if let Some(s) = &req.state {
            p.push(("state", s));
        }
        redirect(status, &with_params(&req.redirect_uri, &p))
    }
}

pub async fn get(State(idp): State<Arc<Idp>>, uri: Uri, headers: HeaderMap) -> Response {
    match Params::from_query(uri.query()) {
        Ok(p) => start(&idp, &headers, p, StatusCode::FOUND).await,
        Err(e) => html::error_page(StatusCode::BAD_REQUEST, &e.description),
    }
}

/// A form post of the login or consent page (it carries `request_id`), or an authorization
/// request sent by POST (OIDC Core §3.1.2.1).
pub async fn post(
    State(idp): State<Arc<Idp>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match Params::from_form(&headers, &body) {
        Ok(p) => p,
        Err(e) => return html::error_page(StatusCode::BAD_REQUEST, &e.description),
    };
    if p.contains("request_id") {
        submit(&idp, &peer_of(peer), &headers, &p).await.unwrap_or_else(|r| r)
    } else {
        start(&idp, &headers, p, StatusCode::SEE_OTHER).await
    }
}

/// Validate the request, remember it, and show the login page (or skip it with a live session).
async fn start(idp: &Idp, headers: &HeaderMap, p: Params, status: StatusCode) -> Response {
    let bad = |m: &str| html::error_page(StatusCode::BAD_REQUEST, m);
    let Some(client_id) = p.get("client_id") else { return bad("The request has no client_id.") };
    let client = match idp.client(client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return bad("Unknown client."),
        Err(e) => return OAuthError::from(e).into_response(),
    };
    let Some(redirect_uri) = p.get("redirect_uri") else { return bad("The request has no redirect_uri.") };
    // RFC 9700 §2.1: exact string match, no patterns, no normalisation.
    if !client.spec.redirect_uris.iter().any(|u| u == redirect_uri) {
        return bad("The redirect_uri is not registered for this client.");
    }
    let mut req = AuthzRequest {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        scope: Vec::new(),
        state: p.get("state").map(str::to_owned),
        nonce: p.get("nonce").map(str::to_owned),
        code_challenge: None,
        prompt: p.get("prompt").map(split_scope).unwrap_or_default(),
        max_age: None,
    };
    if let Err((error, description)) = validate(&client, &p, &mut req) {
        return idp.error_redirect(&req, error, &description, status);
    }
    let now = palisade_store::now();
    // A live session skips the login page unless the client asked for a fresh login.
    let session = match cookie(headers, SESSION_COOKIE) {
        Some(s) => idp.repo.session(&sha256_hex(s), now).await.ok().flatten(),
        None => None,
    };
    let session = session.filter(|(_, auth_time)| {
        !req.prompt.iter().any(|p| p == "login") && req.max_age.is_none_or(|m| now - auth_time <= m)
    });
    if session.is_none() && req.prompt.iter().any(|p| p == "none") {
        return idp.error_redirect(&req, "login_required", "the user is not signed in", status);
    }
    let csrf =
        cookie(headers, CSRF_COOKIE).filter(|c| c.len() == 43).map(str::to_owned).unwrap_or_else(|| random_token(32));
    let request_id = random_token(24);
    let params = match serde_json::to_string(&req) {
        Ok(s) => s,
        Err(e) => return OAuthError::server_error(e).into_response(),
    };
    if let Err(e) = idp.repo.insert_auth_request(&request_id, &sha256_hex(&csrf), &params, now + REQUEST_TTL).await {
        return OAuthError::from(e).into_response();
    }
    let mut resp = match session {
        Some((subject, auth_time)) => {
            if let Err(e) = idp.repo.set_auth_request_subject(&request_id, &subject, auth_time).await {
                return OAuthError::from(e).into_response();
            }
            let row = AuthRequestRow {
                csrf_hash: String::new(),
                params,
                subject: Some(subject),
                auth_time: Some(auth_time),
                expires_at: now + REQUEST_TTL,
            };
            consent_or_code(idp, &client, &request_id, &csrf, &row, status).await
        }
        None => html::login(StatusCode::OK, display_name(&client), &request_id, &csrf, "", None),
    };
    set_cookie(&mut resp, CSRF_COOKIE, &csrf, "/oauth2", None, idp.cfg.secure_cookies());
    resp
}

fn display_name(client: &Client) -> &str {
    if client.spec.name.is_empty() {
        &client.spec.client_id
    } else {
        &client.spec.name
    }
}

/// Everything after client and redirect URI are known good; errors go back to the client.
fn validate(client: &Client, p: &Params, req: &mut AuthzRequest) -> Result<(), (&'static str, String)> {
    if p.contains("request") || p.contains("request_uri") {
        let which = if p.contains("request") { "request_not_supported" } else { "request_uri_not_supported" };
        return Err((which, "request objects are not supported".into()));
    }
    match p.get("response_type") {
        Some("code") => {}
        None => return Err(("invalid_request", "missing parameter response_type".into())),
        Some(other) => {
            return Err(("unsupported_response_type", format!("response_type {other:?} is not supported; use code")))
        }
    }
    if p.get("response_mode").is_some_and(|m| m != "query") {
        return Err(("invalid_request", "only response_mode=query is supported".into()));
    }
    if !client.spec.allows(GrantType::AuthorizationCode) {
        return Err(("unauthorized_client", "the client may not use the authorization code grant".into()));
    }
    req.scope = match p.get("scope") {
        Some(s) => {
            let scope = split_scope(s);
            if let Some(bad) = scope.iter().find(|s| !client.spec.scopes.contains(s)) {
                return Err(("invalid_scope", format!("scope {bad:?} is not allowed for this client")));
            }
            scope
        }
        None => client.spec.default_scopes.clone(),
    };
    match (p.get("code_challenge"), p.get("code_challenge_method")) {
        (Some(c), Some("S256")) => {
            if c.len() != 43 || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(("invalid_request", "code_challenge must be a base64url SHA-256 (43 characters)".into()));
            }
            req.code_challenge = Some(c.to_owned());
        }
        (Some(_), m) => {
            return Err((
                "invalid_request",
                format!("code_challenge_method must be S256, not {:?}", m.unwrap_or("plain")),
            ));
        }
        (None, Some(_)) => return Err(("invalid_request", "code_challenge_method without code_challenge".into())),
        (None, None) if client.spec.is_public() => {
            return Err(("invalid_request", "PKCE (code_challenge with S256) is required for public clients".into()));
        }
        (None, None) => {}
    }
    if let Some(m) = p.get("max_age") {
        req.max_age = Some(
            m.parse::<i64>()
                .ok()
                .filter(|m| *m >= 0)
                .ok_or(("invalid_request", "max_age must be a non-negative integer".to_owned()))?,
        );
    }
    if req.prompt.iter().any(|p| p == "none") && req.prompt.len() > 1 {
        return Err(("invalid_request", "prompt=none cannot be combined with other values".into()));
    }
    Ok(())
}

/// Skip consent for first-party clients and for scopes already consented to; else ask.
async fn consent_or_code(
    idp: &Idp,
    client: &Client,
    request_id: &str,
    csrf: &str,
    row: &AuthRequestRow,
    status: StatusCode,
) -> Response {
    let Ok(req) = serde_json::from_str::<AuthzRequest>(&row.params) else {
        return html::error_page(StatusCode::BAD_REQUEST, "The sign-in request is damaged; start again.");
    };
    let Some(subject) = &row.subject else {
        return html::error_page(StatusCode::BAD_REQUEST, "Sign in first.");
    };
    let consented = match idp.repo.consent(subject, &client.spec.client_id).await {
        Ok(c) => c.map(|s| split_scope(&s)).unwrap_or_default(),
        Err(e) => return OAuthError::from(e).into_response(),
    };
    let covered = req.scope.iter().all(|s| consented.contains(s));
    if client.spec.skip_consent || (covered && !req.prompt.iter().any(|p| p == "consent")) {
        return issue_code(idp, request_id, &req, subject, row.auth_time.unwrap_or(0), status).await;
    }
    if req.prompt.iter().any(|p| p == "none") {
        return idp.error_redirect(&req, "consent_required", "the user has not consented to these scopes", status);
    }
    html::consent(display_name(client), &req.scope, request_id, csrf)
}

async fn issue_code(
    idp: &Idp,
    request_id: &str,
    req: &AuthzRequest,
    subject: &str,
    auth_time: i64,
    status: StatusCode,
) -> Response {
    // Deleting the pending request makes the code single-issue even on a double submit.
    match idp.repo.delete_auth_request(request_id).await {
        Ok(true) => {}
        Ok(false) => return html::error_page(StatusCode::BAD_REQUEST, "This sign-in request was already completed."),
        Err(e) => return OAuthError::from(e).into_response(),
    }
    let code = random_token(32);
    let grant = UserGrant {
        subject: subject.to_owned(),
        scope: req.scope.clone(),
        aud: Vec::new(),
        auth_time,
        nonce: req.nonce.clone(),
        redirect_uri: Some(req.redirect_uri.clone()),
        code_challenge: req.code_challenge.clone(),
        cert_thumbprint: None,
    };
    let data = match serde_json::to_string(&grant) {
        Ok(d) => d,
        Err(e) => return OAuthError::server_error(e).into_response(),
    };
    let now = palisade_store::now();
    if let Err(e) =
        idp.repo.insert_code(&lookup_hash(&code), &new_grant_id(), &req.client_id, &data, now + CODE_TTL).await
    {
        return OAuthError::from(e).into_response();
    }
    let mut p = vec![("code", code.as_str()), ("iss", idp.cfg.issuer.as_str())];
    if let Some(s) = &req.state {
        p.push(("state", s));
    }
    redirect(status, &with_params(&req.redirect_uri, &p))
}

/// A login or consent form post.
async fn submit(idp: &Idp, peer: &Peer, headers: &HeaderMap, p: &Params) -> Result<Response, Response> {
    let now = palisade_store::now();
    let request_id = p.get("request_id").unwrap_or_default();
    let row = match idp.repo.auth_request(request_id, now).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Err(html::error_page(
                StatusCode::BAD_REQUEST,
                "This sign-in request has expired or was already used. Start again from the application.",
            ))
        }
        Err(e) => return Err(OAuthError::from(e).into_response()),
    };
    let form_csrf = p.get("csrf").unwrap_or_default();
    let cookie_csrf = cookie(headers, CSRF_COOKIE).unwrap_or_default();
    if form_csrf.is_empty()
        || !ct_eq(form_csrf.as_bytes(), cookie_csrf.as_bytes())
        || !ct_eq(sha256_hex(form_csrf).as_bytes(), row.csrf_hash.as_bytes())
    {
        return Err(html::error_page(
            StatusCode::FORBIDDEN,
            "The form could not be verified (CSRF check failed). Start again.",
        ));
    }
    let req: AuthzRequest =
        serde_json::from_str(&row.params).map_err(|e| OAuthError::server_error(e).into_response())?;
    let client = match idp.client(&req.client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(html::error_page(StatusCode::BAD_REQUEST, "Unknown client.")),
        Err(e) => return Err(OAuthError::from(e).into_response()),
    };
    match p.get("action") {
        Some("login") => login(idp, peer, p, &client, request_id, form_csrf, row).await,
        Some("allow") if row.subject.is_some() => {
            let subject = row.subject.clone().unwrap_or_default();
            idp.repo
                .save_consent(&subject, &client.spec.client_id, &req.scope.join(" "), now)
                .await
                .map_err(|e| OAuthError::from(e).into_response())?;
            Ok(issue_code(idp, request_id, &req, &subject, row.auth_time.unwrap_or(now), StatusCode::SEE_OTHER).await)
        }
        Some("deny") if row.subject.is_some() => {
            let _ = idp.repo.delete_auth_request(request_id).await;
            Ok(idp.error_redirect(&req, "access_denied", "the user denied the request", StatusCode::SEE_OTHER))
        }
        _ => Err(html::error_page(StatusCode::BAD_REQUEST, "Unexpected form action.")),
    }
}

/// The attempted username as a principal (bounded, quotes and control characters dropped).
fn user_principal(username: &str) -> String {
    let name: String = username.chars().filter(|c| !c.is_control() && *c != '"' && *c != '\\').take(128).collect();
    format!("User::\"{name}\"")
}

async fn login(
    idp: &Idp,
    peer: &Peer,
    p: &Params,
    client: &Client,
    request_id: &str,
    csrf: &str,
    mut row: AuthRequestRow,
) -> Result<Response, Response> {
    let username = p.get("username").unwrap_or_default();
    let password = p.get("password").unwrap_or_default();
    let user_key = format!("user:{username}");
    let ip_key = format!("ip:{}", peer.addr.ip());
    if let Some(wait) = idp.throttle.locked(&[&user_key, &ip_key], Instant::now()) {
        let secs = wait.as_secs().max(1);
        tracing::warn!(ip = %peer.addr.ip(), "login throttled");
        idp.audit(
            Stage::Login,
            true,
            user_principal(username),
            Some(&client.spec.client_id),
            peer,
            "/oauth2/authorize",
            429,
            "sign-in throttled after repeated failures",
        );
        let mut r = html::login(
            StatusCode::TOO_MANY_REQUESTS,
            display_name(client),
            request_id,
            csrf,
            username,
            Some(&format!("Too many failed sign-ins. Try again in {secs} s.")),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(r);
    }
    let user = idp.repo.user(username).await.map_err(|e| OAuthError::from(e).into_response())?;
    let ok = match &user {
        Some(u) => verify_secret_blocking(u.password_hash.clone(), password.to_owned()).await,
        None => {
            verify_secret_blocking(dummy_hash().to_owned(), password.to_owned()).await;
            false
        }
    };
    let Some(user) = user.filter(|_| ok) else {
        idp.throttle.failure(&user_key, USER_THRESHOLD, Instant::now());
        idp.throttle.failure(&ip_key, IP_THRESHOLD, Instant::now());
        tracing::info!(ip = %peer.addr.ip(), "failed sign-in");
        idp.audit(
            Stage::Login,
            true,
            user_principal(username),
            Some(&client.spec.client_id),
            peer,
            "/oauth2/authorize",
            401,
            "invalid username or password",
        );
        return Ok(html::login(
            StatusCode::UNAUTHORIZED,
            display_name(client),
            request_id,
            csrf,
            username,
            Some("Invalid username or password."),
        ));
    };
    idp.throttle.success(&user_key);
    let now = palisade_store::now();
    let session = random_token(32);
    let ttl = i64::try_from(idp.cfg.session_ttl).unwrap_or(86_400);
    idp.repo
        .insert_session(&sha256_hex(&session), &user.subject, now, now + ttl)
        .await
        .map_err(|e| OAuthError::from(e).into_response())?;
    idp.repo
        .set_auth_request_subject(request_id, &user.subject, now)
        .await
        .map_err(|e| OAuthError::from(e).into_response())?;
    tracing::info!(subject = %user.subject, client_id = %client.spec.client_id, "user signed in");
    idp.audit(
        Stage::Login,
        false,
        user_principal(username),
        Some(&client.spec.client_id),
        peer,
        "/oauth2/authorize",
        303,
        "signed in",
    );
    row.subject = Some(user.subject.clone());
    row.auth_time = Some(now);
    let mut resp = consent_or_code(idp, client, request_id, csrf, &row, StatusCode::SEE_OTHER).await;
    set_cookie(&mut resp, SESSION_COOKIE, &session, "/", Some(ttl), idp.cfg.secure_cookies());
    Ok(resp)
}
