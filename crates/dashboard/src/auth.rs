//! Who is calling: a session cookie, or (for scripts) `Authorization: Bearer <admin token>`.
//! The admin token is only ever compared as a SHA-256 digest, in constant time. A bearer caller
//! needs no CSRF token: browsers never attach that header on their own.

use std::time::Instant;

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::session::Session;
use crate::App;

pub(crate) const COOKIE: &str = "palisade_ui";
pub(crate) const STATE_COOKIE: &str = "palisade_ui_state";
pub(crate) const CSRF_HEADER: &str = "x-palisade-csrf";
/// Longer admin tokens are refused before hashing.
const MAX_TOKEN_LEN: usize = 4096;

/// An authenticated caller. Only [`authenticate`] makes one.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    Session { session: Session },
    AdminBearer,
}

impl Caller {
    /// The name recorded as `acked_by`.
    pub(crate) fn name(&self) -> &str {
        match self {
            Caller::Session { session } => &session.subject,
            Caller::AdminBearer => "admin-token",
        }
    }
}

pub(crate) fn parse_sha256_hex(h: &str) -> Option<[u8; 32]> {
    let h = h.trim();
    if h.len() != 64 || !h.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Does `token` hash to the configured admin token digest?
pub(crate) fn admin_token_ok(app: &App, token: &str) -> bool {
    let Some(expected) = app.admin_sha else { return false };
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return false;
    }
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    bool::from(d.as_ref().ct_eq(&expected))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The caller, if the request carries a live session cookie or the admin token. A bearer
/// header that is present but wrong authenticates nothing, even with a valid cookie beside it.
pub(crate) fn authenticate(app: &App, headers: &HeaderMap) -> Option<Caller> {
    if let Some(token) = bearer(headers) {
        return admin_token_ok(app, token).then_some(Caller::AdminBearer);
    }
    let id = cookie(headers, COOKIE)?;
    app.sessions.get(id, Instant::now()).map(|session| Caller::Session { session })
}

/// For state-changing calls: a session caller must echo its CSRF token in `X-Palisade-CSRF`.
pub(crate) fn csrf_ok(caller: &Caller, headers: &HeaderMap) -> bool {
    match caller {
        Caller::AdminBearer => true,
        Caller::Session { session } => {
            headers.get(CSRF_HEADER).map(|v| bool::from(v.as_bytes().ct_eq(session.csrf.as_bytes()))).unwrap_or(false)
        }
    }
}

/// `Set-Cookie` for a session cookie (or, with `max_age = 0`, its deletion).
pub(crate) fn set_cookie(app: &App, name: &str, value: &str, max_age: u64) -> String {
    let secure = if app.secure_cookie { "; Secure" } else { "" };
    format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn sha256_hex_parses_exactly_64_hex_digits() {
        let h = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"; // "test"
        let b = parse_sha256_hex(h).unwrap();
        assert_eq!(b[0], 0x9f);
        assert_eq!(b[31], 0x08);
        assert!(parse_sha256_hex(&h[..63]).is_none());
        assert!(parse_sha256_hex(&format!("{}g", &h[..63])).is_none());
        assert!(parse_sha256_hex("é9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0").is_none());
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; palisade_ui_state=s"));
        h.append(header::COOKIE, HeaderValue::from_static("palisade_ui=abc; b=2"));
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, STATE_COOKIE), Some("s"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
