//! The server-rendered pages: login, consent, logout, errors. Every value is HTML-escaped;
//! pages are `no-store`, unframeable and load nothing from elsewhere.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

pub use palisade_core::html::escape;

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0}\
main{max-width:360px;margin:10vh auto;background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px #0002}\
h1{font-size:1.3rem;margin-top:0}label{display:block;margin:.8rem 0 .2rem}\
input[type=text],input[type=password]{width:100%;padding:.5rem;box-sizing:border-box}\
button{margin-top:1rem;padding:.5rem 1rem;margin-right:.5rem}.error{color:#b00020}ul{padding-left:1.2rem}";

pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t} · Palisade</title><style>{STYLE}</style></head><body><main><h1>{t}</h1>{body}</main></body></html>",
        t = escape(title)
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    page(status, "Sign-in error", &format!("<p class=\"error\" id=\"error\">{}</p>", escape(message)))
}

fn hidden(request_id: &str, csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"request_id\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(request_id),
        escape(csrf)
    )
}

pub fn login(
    status: StatusCode,
    client_name: &str,
    request_id: &str,
    csrf: &str,
    username: &str,
    error: Option<&str>,
) -> Response {
    let err = error.map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", escape(e))).unwrap_or_default();
    let body = format!(
        "<p>to continue to <b>{client}</b></p>{err}\
         <form method=\"post\" action=\"/oauth2/authorize\">{hidden}\
         <label for=\"username\">Username</label><input type=\"text\" id=\"username\" name=\"username\" value=\"{user}\" autocomplete=\"username\" required autofocus>\
         <label for=\"password\">Password</label><input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\" name=\"action\" value=\"login\">Sign in</button></form>",
        client = escape(client_name),
        hidden = hidden(request_id, csrf),
        user = escape(username),
    );
    page(status, "Sign in", &body)
}

pub fn consent(client_name: &str, scopes: &[String], request_id: &str, csrf: &str) -> Response {
    let items: String = scopes.iter().map(|s| format!("<li>{}</li>", escape(s))).collect();
    let body = format!(
        "<p><b>{client}</b> asks for access to:</p><ul id=\"scopes\">{items}</ul>\
         <form method=\"post\" action=\"/oauth2/authorize\">{hidden}\
         <button type=\"submit\" name=\"action\" value=\"allow\">Allow</button>\
         <button type=\"submit\" name=\"action\" value=\"deny\">Deny</button></form>",
        client = escape(client_name),
        hidden = hidden(request_id, csrf),
    );
    page(StatusCode::OK, "Allow access?", &body)
}

pub fn logout_confirm(csrf: &str, carry: &[(&str, &str)]) -> Response {
    let fields: String = carry
        .iter()
        .map(|(k, v)| format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", escape(k), escape(v)))
        .collect();
    let body = format!(
        "<p>Sign out of Palisade?</p><form method=\"post\" action=\"/oauth2/logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">{fields}\
         <button type=\"submit\" name=\"action\" value=\"logout\">Sign out</button></form>",
        escape(csrf)
    );
    page(StatusCode::OK, "Sign out", &body)
}

pub fn logged_out() -> Response {
    page(StatusCode::OK, "Signed out", "<p id=\"done\">You are signed out.</p>")
}
