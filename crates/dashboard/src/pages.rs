//! Browser-facing routes: the app shell, the login page, the OIDC redirect and callback, logout,
//! and the security headers every `/ui` response carries. Pages are server-rendered HTML with
//! every interpolated value escaped; no inline script or style exists, so the CSP can forbid both.

use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use subtle::ConstantTimeEq;

use crate::auth::{self, COOKIE, STATE_COOKIE};
use crate::error::OidcError;
use crate::session::{Via, PENDING_TTL, SESSION_TTL};
use crate::{assets, AppState};

pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(shell))
        .route("/ui/", get(shell))
        .route("/ui/assets/{name}", get(assets::serve))
        .route("/ui/login", get(login_page))
        .route("/ui/login/oidc", get(login_oidc))
        .route("/ui/login/token", post(login_token))
        .route("/ui/callback", get(callback))
        .route("/ui/logout", post(logout))
}

/// CSP and friends on every response; `no-store` unless the handler chose a cache policy.
pub(crate) async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

pub(crate) use palisade_core::html::escape as esc;

fn see_other(location: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

fn with_cookies(mut r: Response, cookies: &[String]) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

fn page(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{} · Palisade</title>\n\
<link rel=\"icon\" href=\"/ui/assets/icon.svg\" type=\"image/svg+xml\">\n\
<link rel=\"stylesheet\" href=\"/ui/assets/app.css\">\n</head>\n<body class=\"narrow\">\n\
<main id=\"main\">\n{main}\n</main>\n</body>\n</html>\n",
        esc(title)
    )
}

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let main = format!(
        "<h1>{}</h1>\n<p id=\"error-message\" role=\"alert\">{}</p>\n<p><a href=\"/ui/login\">Back to sign-in</a></p>",
        esc(title),
        esc(message)
    );
    (status, Html(page(title, &main))).into_response()
}

fn login_html(app: &AppState, error: Option<&str>) -> String {
    let alert = error.map(|e| format!("<p id=\"login-error\" class=\"error\" role=\"alert\">{}</p>\n", esc(e)));
    let token_form = if app.admin_sha.is_some() {
        "<h2 id=\"token-h\">Admin token</h2>\n\
<form id=\"token-form\" method=\"post\" action=\"/ui/login/token\" aria-labelledby=\"token-h\">\n\
<label for=\"token\">Admin token</label>\n\
<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required>\n\
<button type=\"submit\" id=\"token-submit\">Sign in with admin token</button>\n</form>"
    } else {
        ""
    };
    let main = format!(
        "<h1>Palisade security dashboard</h1>\n{}<p><a class=\"button primary\" id=\"oidc-login\" \
href=\"/ui/login/oidc\">Sign in with Palisade</a></p>\n{token_form}",
        alert.unwrap_or_default()
    );
    page("Sign in", &main)
}

async fn login_page(State(app): State<AppState>) -> Html<String> {
    Html(login_html(&app, None))
}

async fn shell(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some(auth::Caller::Session { session }) = auth::authenticate(&app, &headers) else {
        // The shell needs a session (its CSRF token); a bearer header alone gets the login page.
        return see_other("/ui/login");
    };
    let html = include_str!("../assets/shell.html")
        .replace("{{csrf}}", &esc(&session.csrf))
        .replace("{{subject}}", &esc(&session.subject));
    Html(html).into_response()
}

async fn login_token(State(app): State<AppState>, body: Bytes) -> Response {
    let token = form_urlencoded::parse(&body).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    if app.admin_sha.is_none() {
        return (StatusCode::UNAUTHORIZED, Html(login_html(&app, Some("Admin-token sign-in is not enabled."))))
            .into_response();
    }
    if !token.as_deref().is_some_and(|t| auth::admin_token_ok(&app, t)) {
        tracing::info!("dashboard: admin-token sign-in refused");
        return (StatusCode::UNAUTHORIZED, Html(login_html(&app, Some("That admin token is not valid."))))
            .into_response();
    }
    start_session(&app, "admin-token", Via::AdminToken, &[])
}

fn start_session(app: &AppState, subject: &str, via: Via, extra_cookies: &[String]) -> Response {
    let Some((id, _)) = app.sessions.create(subject, via, Instant::now()) else {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "Sign-in failed", "No session could be created.");
    };
    tracing::info!(subject = %subject, via = ?via, "dashboard: session started");
    let mut cookies = vec![auth::set_cookie(app, COOKIE, &id, SESSION_TTL.as_secs())];
    cookies.extend_from_slice(extra_cookies);
    with_cookies(see_other("/ui/"), &cookies)
}

async fn login_oidc(State(app): State<AppState>) -> Response {
    let Some((state, pending)) = app.sessions.begin(Instant::now()) else {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "Sign-in failed", "No sign-in could be started.");
    };
    match app.oidc.authorize_url(&state, &pending.nonce, &pending.verifier).await {
        Ok(url) => {
            let Ok(loc) = HeaderValue::from_str(&url) else {
                return error_page(StatusCode::BAD_GATEWAY, "Sign-in failed", "The authorization URL is not valid.");
            };
            let r = (StatusCode::SEE_OTHER, [(header::LOCATION, loc)]).into_response();
            with_cookies(r, &[auth::set_cookie(&app, STATE_COOKIE, &state, PENDING_TTL.as_secs())])
        }
        Err(e) => {
            tracing::warn!(error = %e, "dashboard: OIDC sign-in could not start");
            error_page(e.status(), "Sign-in failed", &e.to_string())
        }
    }
}

async fn callback(State(app): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let clear_state = auth::set_cookie(&app, STATE_COOKIE, "", 0);
    match finish_oidc(&app, q.as_deref().unwrap_or(""), &headers).await {
        Ok(subject) => start_session(&app, &subject, Via::Oidc, &[clear_state]),
        Err(e) => {
            tracing::info!(error = %e, "dashboard: OIDC sign-in refused");
            let title = if e == OidcError::Role { "Access denied" } else { "Sign-in failed" };
            with_cookies(error_page(e.status(), title, &e.to_string()), &[clear_state])
        }
    }
}

async fn finish_oidc(app: &AppState, query: &str, headers: &HeaderMap) -> Result<String, OidcError> {
    let param = |name: &str| form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v);
    let state = param("state").ok_or(OidcError::State)?;
    // The state must come back to the browser that started the sign-in (login CSRF).
    let bound = auth::cookie(headers, STATE_COOKIE).is_some_and(|c| bool::from(c.as_bytes().ct_eq(state.as_bytes())));
    let pending = app.sessions.finish(&state, Instant::now());
    if let Some(err) = param("error") {
        let code: String = err.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect::<String>();
        return Err(OidcError::Denied(code));
    }
    let pending = pending.filter(|_| bound).ok_or(OidcError::State)?;
    let code = param("code").ok_or(OidcError::Denied("no authorization code".into()))?;
    let id_token = app.oidc.exchange(&code, &pending.verifier).await?;
    let claims = app.oidc.verify_id_token(&id_token, &pending.nonce).await?;
    if !claims.has_role(&app.cfg.allowed_roles) {
        return Err(OidcError::Role);
    }
    Ok(claims.subject())
}

async fn logout(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let clear = auth::set_cookie(&app, COOKIE, "", 0);
    if let Some(id) = auth::cookie(&headers, COOKIE) {
        if let Some(session) = app.sessions.get(id, Instant::now()) {
            let sent = form_urlencoded::parse(&body).find(|(k, _)| k == "csrf").map(|(_, v)| v.into_owned());
            if !sent.is_some_and(|s| bool::from(s.as_bytes().ct_eq(session.csrf.as_bytes()))) {
                return error_page(StatusCode::FORBIDDEN, "Sign-out refused", "The request lacked its CSRF token.");
            }
            app.sessions.remove(id);
        }
    }
    with_cookies(see_other("/ui/login"), &[clear])
}
