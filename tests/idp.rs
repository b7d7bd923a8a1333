//! The identity provider end to end: `palisade server` and `palisade idp`/`keys` as real
//! processes, curl as the client, each test over SQLite and over PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly by design

mod common;

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::idp::*;
use common::*;
use serde_json::{json, Value};

const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// Header and claims of a compact JWS, without verifying it.
fn jwt_parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let mut part = || serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
    (part(), part())
}

fn pkce() -> (String, String) {
    let verifier = "v0123456789abcdefghijklmnopqrstuvwxyz-._~ABCDEFGH".to_owned();
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
    (verifier, challenge)
}

/// The value of `<input ... name="NAME" value="VALUE">` in a page.
fn field(html: &str, name: &str) -> String {
    let at = html.find(&format!("name=\"{name}\" value=\"")).unwrap_or_else(|| panic!("no field {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// A query parameter of a URL.
fn param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    form_pairs(q).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let dec = |s: &str| {
                let s = s.replace('+', " ");
                let mut out = Vec::new();
                let b = s.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    if b[i] == b'%' && i + 2 < b.len() + 1 {
                        out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                        i += 3;
                    } else {
                        out.push(b[i]);
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A browser: curl with a cookie jar.
struct Browser {
    jar: tempfile::NamedTempFile,
}

impl Browser {
    fn new() -> Browser {
        Browser { jar: tempfile::NamedTempFile::new().unwrap() }
    }
    fn jar(&self) -> String {
        self.jar.path().display().to_string()
    }
    async fn get(&self, url: &str) -> Curl {
        let jar = self.jar();
        curl(&["-b", &jar, "-c", &jar], url).await
    }
    async fn post(&self, url: &str, form: &[(&str, &str)]) -> Curl {
        let jar = self.jar();
        let body: Vec<String> = form.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
        let body = body.join("&");
        curl(&["-b", &jar, "-c", &jar, "--data-raw", &body], url).await
    }
}

struct Authz<'a> {
    client_id: &'a str,
    scope: &'a str,
    challenge: Option<&'a str>,
    state: &'a str,
    nonce: &'a str,
}

fn authorize_url(s: &IdpServer, a: &Authz<'_>) -> String {
    let mut q = format!(
        "response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}",
        enc(a.client_id),
        enc(REDIRECT),
        enc(a.scope),
        enc(a.state),
        enc(a.nonce)
    );
    if let Some(c) = a.challenge {
        q.push_str(&format!("&code_challenge={c}&code_challenge_method=S256"));
    }
    s.url(&format!("/oauth2/authorize?{q}"))
}

/// Sign in and consent; returns the redirect Location.
async fn sign_in(s: &IdpServer, b: &Browser, a: &Authz<'_>, user: &str, password: &str) -> String {
    let page = b.get(&authorize_url(s, a)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("name=\"password\""), "not the login page: {}", page.body);
    let (rid, csrf) = (field(&page.body, "request_id"), field(&page.body, "csrf"));
    let r = b
        .post(
            &s.url("/oauth2/authorize"),
            &[("request_id", &rid), ("csrf", &csrf), ("username", user), ("password", password), ("action", "login")],
        )
        .await;
    let r = if r.status == 200 {
        assert!(r.body.contains("value=\"allow\""), "not the consent page: {}", r.body);
        b.post(&s.url("/oauth2/authorize"), &[("request_id", &rid), ("csrf", &csrf), ("action", "allow")]).await
    } else {
        r
    };
    assert_eq!(r.status, 303, "{}", r.body);
    r.header("location").unwrap().to_owned()
}

/// The whole code flow for a confidential client; returns the token response.
async fn code_flow(s: &IdpServer, client: &str, secret: &str, user: &str, password: &str, scope: &str) -> Value {
    let (verifier, challenge) = pkce();
    let a = Authz { client_id: client, scope, challenge: Some(&challenge), state: "st-1", nonce: "n-1" };
    let loc = sign_in(s, &Browser::new(), &a, user, password).await;
    let code = param(&loc, "code").unwrap();
    let r = exchange(s, client, secret, &code, &verifier).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

async fn exchange(s: &IdpServer, client: &str, secret: &str, code: &str, verifier: &str) -> Curl {
    let user = format!("{client}:{secret}");
    let (c, v, ru) = (format!("code={code}"), format!("code_verifier={verifier}"), format!("redirect_uri={REDIRECT}"));
    s.post(
        "/oauth2/token",
        &["-u", &user, "-d", "grant_type=authorization_code", "-d", &c, "-d", &v, "--data-urlencode", &ru],
    )
    .await
}

async fn introspect(s: &IdpServer, client: &str, secret: &str, token: &str) -> Value {
    let user = format!("{client}:{secret}");
    let t = format!("token={token}");
    let r = s.post("/oauth2/introspect", &["-u", &user, "-d", &t]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

async fn refresh(s: &IdpServer, client: &str, secret: &str, rt: &str) -> Curl {
    let user = format!("{client}:{secret}");
    let t = format!("refresh_token={rt}");
    s.post("/oauth2/token", &["-u", &user, "-d", "grant_type=refresh_token", "-d", &t]).await
}

fn assert_oauth_error(r: &Curl, status: u16, error: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.json()["error"], error, "{}", r.body);
    assert!(r.json()["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("content-type").unwrap().starts_with("application/json"));
}

/// A web app (confidential, code + refresh) and a user.
fn web_app(s: &IdpServer) -> (String, String) {
    let secret = s.add_client(
        "web",
        &[
            "--grant",
            "authorization_code",
            "--grant",
            "refresh_token",
            "--redirect-uri",
            REDIRECT,
            "--scope",
            "openid profile email orders:read",
            "--audience",
            "orders",
            "--audience",
            "web",
        ],
    );
    let password = s.add_user("alice", &["customer"]);
    (secret, password)
}

both_databases! {
    async fn client_credentials_issues_rfc9068_tokens(db: Db) {
        let s = IdpServer::start(db).await;
        let secret = s.add_client(
            "svc",
            &["--scope", "orders:read orders:write", "--default-scope", "orders:read", "--audience", "orders", "--audience", "payments"],
        );
        // No scope → the registered default; basic auth.
        let r = s.cc_token("svc", &secret, &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let j = r.json();
        assert_eq!((j["token_type"].as_str(), j["scope"].as_str(), j["expires_in"].as_u64()), (Some("Bearer"), Some("orders:read"), Some(600)));
        let (h, c) = jwt_parts(j["access_token"].as_str().unwrap());
        assert_eq!((h["typ"].as_str(), h["alg"].as_str()), (Some("at+jwt"), Some("ES256")));
        assert_eq!(c["iss"], s.issuer);
        assert_eq!((c["sub"].as_str(), c["client_id"].as_str()), (Some("svc"), Some("svc")));
        assert_eq!(c["aud"], json!(["orders", "payments"]));
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 600);
        assert_eq!(c["jti"].as_str().unwrap().len(), 22);
        // client_secret_post, an explicit scope and a narrowed audience.
        let (cid, cs) = ("client_id=svc".to_owned(), format!("client_secret={secret}"));
        let r = s
            .post("/oauth2/token", &["-d", "grant_type=client_credentials", "-d", &cid, "-d", &cs, "-d", "scope=orders:write orders:read", "-d", "audience=payments"])
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let (_, c) = jwt_parts(r.json()["access_token"].as_str().unwrap());
        assert_eq!((c["scope"].as_str(), c["aud"].as_str()), (Some("orders:write orders:read"), Some("payments")));
        let i = introspect(&s, "svc", &secret, r.json()["access_token"].as_str().unwrap()).await;
        assert_eq!(i["active"], true);
        assert_eq!(i["scope"], "orders:write orders:read");
        assert_eq!(i["client_id"], "svc");
    }
}

both_databases! {
    async fn token_endpoint_errors_follow_rfc6749(db: Db) {
        let s = IdpServer::start(db).await;
        let secret = s.add_client("svc", &["--scope", "orders:read", "--audience", "orders"]);
        s.add_client("webonly", &["--grant", "authorization_code", "--redirect-uri", REDIRECT]);
        // invalid_client: wrong secret, unknown client, no authentication, malformed Basic.
        for args in [vec!["-u", "svc:wrong"], vec!["-u", "nobody:x"], vec![], vec!["-H", "Authorization: Basic !!!"]] {
            let mut a = args.clone();
            a.extend(["-d", "grant_type=client_credentials"]);
            let r = s.post("/oauth2/token", &a).await;
            assert_oauth_error(&r, 401, "invalid_client");
            assert!(r.header("www-authenticate").unwrap().starts_with("Basic realm=\"palisade\""), "{args:?}");
        }
        let user = format!("svc:{secret}");
        let cases: Vec<(Vec<&str>, u16, &str)> = vec![
            (vec!["-d", "grant_type=password"], 400, "unsupported_grant_type"),
            (vec!["-d", "scope=x"], 400, "invalid_request"),
            (vec!["-d", "grant_type=client_credentials", "-d", "scope=admin"], 400, "invalid_scope"),
            (vec!["-d", "grant_type=client_credentials", "-d", "audience=payments"], 400, "invalid_target"),
            (vec!["-d", "grant_type=client_credentials", "-d", "grant_type=client_credentials"], 400, "invalid_request"),
            (vec!["-H", "content-type: application/json", "--data-raw", "{\"grant_type\":\"client_credentials\"}"], 400, "invalid_request"),
            (vec!["-d", "grant_type=authorization_code", "-d", "code=nope"], 400, "unauthorized_client"),
            (vec!["-d", "grant_type=refresh_token", "-d", "refresh_token=nope"], 400, "unauthorized_client"),
        ];
        for (args, status, error) in cases {
            let mut a = vec!["-u", &user];
            a.extend(args.iter().copied());
            let r = s.post("/oauth2/token", &a).await;
            assert_oauth_error(&r, status, error);
        }
        // A client registered without client_credentials may not use it.
        let w = s.idp(&["client", "rotate-secret", "webonly"])["client_secret"].as_str().unwrap().to_owned();
        assert_oauth_error(&s.cc_token("webonly", &w, &[]).await, 400, "unauthorized_client");
        let wu = format!("webonly:{w}");
        let r = s.post("/oauth2/token", &["-u", &wu, "-d", "grant_type=authorization_code"]).await;
        assert_oauth_error(&r, 400, "invalid_request");
        let r = s.post("/oauth2/token", &["-u", &wu, "-d", "grant_type=authorization_code", "-d", "code=nope"]).await;
        assert_oauth_error(&r, 400, "invalid_grant");
        // Binary garbage, huge bodies and odd methods never produce a 5xx.
        let junk = s.post("/oauth2/token", &["-H", "content-type: application/x-www-form-urlencoded", "--data-binary", "%ff%fe=\u{1}&&==&%zz"]).await;
        assert!(junk.status < 500 && junk.status >= 400, "{}", junk.status);
        let big = "a".repeat(70 * 1024);
        let r = s.post("/oauth2/token", &["-u", &user, "-d", &format!("grant_type=client_credentials&x={big}")]).await;
        assert_eq!(r.status, 413);
        let r = curl(&["-X", "GET"], &s.url("/oauth2/token")).await;
        assert_eq!(r.status, 405);
    }
}

both_databases! {
    async fn authorization_code_with_pkce_and_id_token(db: Db) {
        let s = IdpServer::start(db).await;
        let (secret, password) = web_app(&s);
        let (verifier, challenge) = pkce();
        let b = Browser::new();
        let a = Authz { client_id: "web", scope: "openid profile email", challenge: Some(&challenge), state: "xyz&1", nonce: "nonce-123" };
        let loc = sign_in(&s, &b, &a, "alice", &password).await;
        assert!(loc.starts_with(&format!("{REDIRECT}?code=")), "{loc}");
        assert_eq!(param(&loc, "state").as_deref(), Some("xyz&1"));
        assert_eq!(param(&loc, "iss").as_deref(), Some(s.issuer.as_str()));
        let code = param(&loc, "code").unwrap();
        // A wrong verifier is refused...
        let r = exchange(&s, "web", &secret, &code, &"x".repeat(43)).await;
        assert_oauth_error(&r, 400, "invalid_grant");
        // ...but the code is single-use: that failed attempt consumed it.
        let r = exchange(&s, "web", &secret, &code, &verifier).await;
        assert_oauth_error(&r, 400, "invalid_grant");

        // A fresh code; the session cookie skips the login page and the consent is remembered.
        let page = b.get(&authorize_url(&s, &a)).await;
        assert_eq!(page.status, 302, "{}", page.body);
        let code = param(page.header("location").unwrap(), "code").unwrap();
        let r = exchange(&s, "web", &secret, &code, &verifier).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let t = r.json();
        assert_eq!(t["scope"], "openid profile email");
        let (h, id) = jwt_parts(t["id_token"].as_str().unwrap());
        assert_eq!(h["typ"], "JWT");
        assert_eq!((id["aud"].as_str(), id["azp"].as_str(), id["nonce"].as_str()), (Some("web"), Some("web"), Some("nonce-123")));
        assert_eq!(id["email"], "alice@example.test");
        assert_eq!(id["preferred_username"], "alice");
        let at = t["access_token"].as_str().unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, at.as_bytes());
        assert_eq!(id["at_hash"].as_str().unwrap(), URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]));
        let (_, ac) = jwt_parts(at);
        assert_eq!(ac["sub"], id["sub"]);
        assert_eq!(ac["roles"], json!(["customer"]));
        assert_eq!(ac["aud"], json!(["orders", "web"]));
        assert!(ac["auth_time"].as_i64().unwrap() > 0);
        // Userinfo with the access token.
        let r = curl(&["-H", &format!("Authorization: Bearer {at}")], &s.url("/userinfo")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["sub"], id["sub"]);
        assert_eq!(r.json()["email"], "alice@example.test");
        assert_eq!(r.json()["name"], "alice Example");

        // Reusing that code revokes what it issued (RFC 6749 §4.1.2).
        let r = exchange(&s, "web", &secret, &code, &verifier).await;
        assert_oauth_error(&r, 400, "invalid_grant");
        assert_eq!(introspect(&s, "web", &secret, at).await["active"], false);
        let r = refresh(&s, "web", &secret, t["refresh_token"].as_str().unwrap()).await;
        assert_oauth_error(&r, 400, "invalid_grant");
    }
}

both_databases! {
    async fn authorize_request_validation(db: Db) {
        let s = IdpServer::start(db).await;
        let (_, _) = web_app(&s);
        s.add_client("spa", &["--public", "--redirect-uri", REDIRECT, "--scope", "openid"]);
        let (_, challenge) = pkce();
        let b = Browser::new();
        // Unknown client or unregistered redirect URI: an error page, never a redirect.
        for q in [
            format!("response_type=code&client_id=nope&redirect_uri={}", enc(REDIRECT)),
            format!("response_type=code&client_id=web&redirect_uri={}", enc("http://127.0.0.1:9/callback/../evil")),
            format!("response_type=code&client_id=web&redirect_uri={}", enc("http://127.0.0.1:9/CALLBACK")),
            "response_type=code&client_id=web".to_owned(),
        ] {
            let r = b.get(&s.url(&format!("/oauth2/authorize?{q}"))).await;
            assert_eq!(r.status, 400, "{q}");
            assert!(r.header("location").is_none());
            assert!(r.body.contains("id=\"error\""), "{}", r.body);
            assert_eq!(r.header("x-frame-options"), Some("DENY"));
        }
        // Everything else goes back to the client with state and iss.
        let base = format!("client_id=spa&redirect_uri={}&state=s1", enc(REDIRECT));
        for (extra, error) in [
            ("&response_type=token".to_owned(), "unsupported_response_type"),
            (format!("&response_type=code&code_challenge={challenge}&code_challenge_method=plain"), "invalid_request"),
            ("&response_type=code".to_owned(), "invalid_request"),
            (format!("&response_type=code&code_challenge={challenge}&code_challenge_method=S256&scope=admin"), "invalid_scope"),
            (format!("&response_type=code&code_challenge={challenge}&code_challenge_method=S256&prompt=none"), "login_required"),
            (format!("&response_type=code&code_challenge={challenge}&code_challenge_method=S256&request=x"), "request_not_supported"),
        ] {
            let r = b.get(&s.url(&format!("/oauth2/authorize?{base}{extra}"))).await;
            assert_eq!(r.status, 302, "{extra}: {}", r.body);
            let loc = r.header("location").unwrap();
            assert!(loc.starts_with(REDIRECT), "{loc}");
            assert_eq!(param(loc, "error").as_deref(), Some(error), "{extra}: {loc}");
            assert_eq!(param(loc, "state").as_deref(), Some("s1"));
            assert_eq!(param(loc, "iss").as_deref(), Some(s.issuer.as_str()));
        }
    }
}

both_databases! {
    async fn login_form_is_csrf_protected_and_throttled(db: Db) {
        let s = IdpServer::start(db).await;
        let (_, password) = web_app(&s);
        let (_, challenge) = pkce();
        let a = Authz { client_id: "web", scope: "openid", challenge: Some(&challenge), state: "s", nonce: "n" };
        let b = Browser::new();
        let page = b.get(&authorize_url(&s, &a)).await;
        assert_eq!(page.status, 200);
        let csp = page.header("content-security-policy").unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(page.header("set-cookie").unwrap().contains("HttpOnly; SameSite=Lax"));
        let (rid, csrf) = (field(&page.body, "request_id"), field(&page.body, "csrf"));
        // Another browser (no CSRF cookie) posting the same form is refused.
        let other = Browser::new();
        let form = [("request_id", rid.as_str()), ("csrf", csrf.as_str()), ("username", "alice"), ("password", password.as_str()), ("action", "login")];
        let r = other.post(&s.url("/oauth2/authorize"), &form).await;
        assert_eq!(r.status, 403, "{}", r.body);
        // A forged csrf value with the right cookie is refused too.
        let fake = "A".repeat(43);
        let forged = [("request_id", rid.as_str()), ("csrf", fake.as_str()), ("username", "alice"), ("password", password.as_str()), ("action", "login")];
        assert_eq!(b.post(&s.url("/oauth2/authorize"), &forged).await.status, 403);
        // Five wrong passwords, then even the right one is throttled with Retry-After.
        for i in 0..5 {
            let bad = [("request_id", rid.as_str()), ("csrf", csrf.as_str()), ("username", "alice"), ("password", "wrong-password"), ("action", "login")];
            let r = b.post(&s.url("/oauth2/authorize"), &bad).await;
            assert_eq!(r.status, 401, "attempt {i}: {}", r.body);
            assert!(r.body.contains("Invalid username or password."));
        }
        let r = b.post(&s.url("/oauth2/authorize"), &form).await;
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.header("retry-after"), Some("1"));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = b.post(&s.url("/oauth2/authorize"), &form).await;
        assert_eq!(r.status, 200, "after the backoff: {}", r.body);
        // An expired or unknown request id.
        let r = b.post(&s.url("/oauth2/authorize"), &[("request_id", "nope"), ("csrf", csrf.as_str()), ("action", "login")]).await;
        assert_eq!(r.status, 400);
    }
}

both_databases! {
    async fn refresh_rotation_and_reuse_detection(db: Db) {
        let s = IdpServer::start(db).await;
        let (secret, password) = web_app(&s);
        let t = code_flow(&s, "web", &secret, "alice", &password, "openid orders:read").await;
        let rt1 = t["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(rt1.len(), 43);
        let r = refresh(&s, "web", &secret, &rt1).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let rt2 = r.json()["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(rt1, rt2);
        let at2 = r.json()["access_token"].as_str().unwrap().to_owned();
        // Narrowing the scope on refresh works; widening does not.
        let user = format!("web:{secret}");
        let rt = format!("refresh_token={rt2}");
        let r = s.post("/oauth2/token", &["-u", &user, "-d", "grant_type=refresh_token", "-d", &rt, "-d", "scope=openid profile"]).await;
        assert_oauth_error(&r, 400, "invalid_scope");
        let r = refresh(&s, "web", &secret, &rt2).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let rt3 = r.json()["refresh_token"].as_str().unwrap().to_owned();
        let at3 = r.json()["access_token"].as_str().unwrap().to_owned();
        assert_eq!(introspect(&s, "web", &secret, &rt3).await["active"], true);
        assert_eq!(introspect(&s, "web", &secret, &rt3).await["token_type"], "refresh_token");
        // rt1 again: reuse. The whole family is revoked: rt3 and the access tokens too.
        assert_oauth_error(&refresh(&s, "web", &secret, &rt1).await, 400, "invalid_grant");
        assert_oauth_error(&refresh(&s, "web", &secret, &rt3).await, 400, "invalid_grant");
        assert_eq!(introspect(&s, "web", &secret, &at2).await["active"], false);
        assert_eq!(introspect(&s, "web", &secret, &at3).await["active"], false);
        assert_eq!(introspect(&s, "web", &secret, &rt3).await["active"], false);
        // Another client cannot use (or even see) this client's refresh tokens.
        let t = code_flow(&s, "web", &secret, "alice", &password, "openid").await;
        let other = s.add_client("other", &["--grant", "refresh_token", "--grant", "client_credentials"]);
        let rt = t["refresh_token"].as_str().unwrap();
        assert_oauth_error(&refresh(&s, "other", &other, rt).await, 400, "invalid_grant");
        assert_eq!(introspect(&s, "other", &other, rt).await["active"], false);
    }
}

both_databases! {
    async fn token_exchange_acts_on_behalf_of_the_user(db: Db) {
        let s = IdpServer::start(db).await;
        let (secret, password) = web_app(&s);
        // The orders service receives the user's token (aud orders) and calls payments for them.
        let orders = s.add_client(
            "orders",
            &["--grant", "token-exchange", "--scope", "orders:read payments:charge", "--audience", "payments", "--audience", "ledger"],
        );
        let t = code_flow(&s, "web", &secret, "alice", &password, "openid orders:read").await;
        let user_token = t["access_token"].as_str().unwrap();
        let (_, uc) = jwt_parts(user_token);
        let ex = |token: &str, extra: &[&str]| {
            let mut a: Vec<String> = vec![
                "-u".into(), format!("orders:{orders}"),
                "-d".into(), "grant_type=urn:ietf:params:oauth:grant-type:token-exchange".into(),
                "-d".into(), format!("subject_token={token}"),
                "-d".into(), "subject_token_type=urn:ietf:params:oauth:token-type:access_token".into(),
            ];
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
        let a = ex(user_token, &["-d", "audience=payments"]);
        let r = s.post("/oauth2/token", &a.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
        let (_, c) = jwt_parts(r.json()["access_token"].as_str().unwrap());
        assert_eq!(c["sub"], uc["sub"]);
        assert_eq!(c["aud"], "payments");
        assert_eq!(c["act"], json!({"sub": "orders"}));
        assert_eq!(c["client_id"], "orders");
        assert_eq!(c["scope"], "orders:read", "only scopes both held and allowed");
        assert_eq!(c["roles"], json!(["customer"]));
        // Chained: payments would need its own client; orders exchanging its exchanged token keeps the chain.
        let exchanged = r.json()["access_token"].as_str().unwrap().to_owned();
        let a = ex(&exchanged, &["-d", "audience=ledger"]);
        let r = s.post("/oauth2/token", &a.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let (_, c) = jwt_parts(r.json()["access_token"].as_str().unwrap());
        assert_eq!(c["act"], json!({"sub": "orders", "act": {"sub": "orders"}}));
        // Errors: an audience not allowed, a scope not held, a token not for this client, junk.
        for (extra, error) in [
            (vec!["-d", "audience=billing"], "invalid_target"),
            (vec!["-d", "audience=payments", "-d", "scope=payments:charge"], "invalid_scope"),
        ] {
            let a = ex(user_token, &extra);
            assert_oauth_error(&s.post("/oauth2/token", &a.iter().map(String::as_str).collect::<Vec<_>>()).await, 400, error);
        }
        let other = s.add_client("stranger", &["--grant", "token-exchange", "--audience", "payments"]);
        let a: Vec<String> = ex(user_token, &["-d", "audience=payments"]).into_iter().skip(2).collect();
        let user = format!("stranger:{other}");
        let mut args = vec!["-u", &user];
        args.extend(a.iter().map(String::as_str));
        assert_oauth_error(&s.post("/oauth2/token", &args).await, 400, "invalid_grant");
        let a = ex("not.a.token", &[]);
        assert_oauth_error(&s.post("/oauth2/token", &a.iter().map(String::as_str).collect::<Vec<_>>()).await, 400, "invalid_grant");
    }
}

/// An EC P-256 key pair for private_key_jwt: (PKCS#8 DER, public JWK).
fn client_key() -> (Vec<u8>, Value) {
    let kp = rcgen::KeyPair::generate().unwrap();
    let raw = kp.public_key_raw();
    assert_eq!(raw[0], 4);
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])});
    (kp.serialize_der(), jwk)
}

fn assertion(der: &[u8], claims: &Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("k1".into());
    jsonwebtoken::encode(&h, claims, &jsonwebtoken::EncodingKey::from_ec_der(der)).unwrap()
}

both_databases! {
    async fn private_key_jwt_with_replay_protection(db: Db) {
        let s = IdpServer::start(db).await;
        let (der, jwk) = client_key();
        let jwks = s.dir.path().join("jwks.json");
        std::fs::write(&jwks, json!({"keys": [jwk]}).to_string()).unwrap();
        s.idp(&["client", "add", "signer", "--auth-method", "private_key_jwt", "--jwks-file", jwks.to_str().unwrap(), "--scope", "a"]);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let token_url = s.url("/oauth2/token");
        let claims = |jti: &str, aud: &str, exp: u64| json!({"iss": "signer", "sub": "signer", "aud": aud, "jti": jti, "exp": exp, "iat": now});
        let post = |a: String| {
            let s = &s;
            async move {
                let ca = format!("client_assertion={a}");
                s.post("/oauth2/token", &["-d", "grant_type=client_credentials", "-d", "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "-d", &ca]).await
            }
        };
        let good = assertion(&der, &claims("j1", &token_url, now + 60));
        let r = post(good.clone()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(jwt_parts(r.json()["access_token"].as_str().unwrap()).1["client_id"], "signer");
        // The same assertion again is a replay.
        let r = post(good).await;
        assert_oauth_error(&r, 401, "invalid_client");
        assert_eq!(r.json()["error_description"], "client assertion was already used");
        // The issuer is an accepted audience too; another audience, an expired or a long-lived one are not.
        assert_eq!(post(assertion(&der, &claims("j2", &s.issuer, now + 60))).await.status, 200);
        assert_oauth_error(&post(assertion(&der, &claims("j3", "https://elsewhere", now + 60))).await, 401, "invalid_client");
        assert_oauth_error(&post(assertion(&der, &claims("j4", &token_url, now - 120))).await, 401, "invalid_client");
        assert_oauth_error(&post(assertion(&der, &claims("j5", &token_url, now + 3600))).await, 401, "invalid_client");
        // Signed by another key.
        let (other, _) = client_key();
        assert_oauth_error(&post(assertion(&other, &claims("j6", &token_url, now + 60))).await, 401, "invalid_client");
    }
}

#[tokio::test]
async fn tls_client_auth_issues_certificate_bound_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Palisade Test CA");
    pki.write_leaf(dir.path(), "server", &["localhost"]);
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    pki.write_leaf(dir.path(), "billing", &["billing"]);
    pki.write_leaf(dir.path(), "intruder", &["intruder"]);
    let p = |f: &str| dir.path().join(f).display().to_string();
    let s = IdpServer::start_with(
        Db::Sqlite,
        &[
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server-key.pem"),
            "--tls-client-ca",
            &p("ca.pem"),
            "--issuer",
            "https://localhost:1",
        ],
    )
    .await;
    s.idp(&[
        "client",
        "add",
        "billing",
        "--auth-method",
        "tls_client_auth",
        "--tls-subject-dn",
        "CN=billing",
        "--scope",
        "ledger:write",
    ]);
    let port = s.addr.rsplit_once(':').unwrap().1.to_owned();
    let url = format!("https://localhost:{port}/oauth2/token");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let token = |cert: Option<&str>| {
        let mut a: Vec<String> = vec![
            "--cacert".into(),
            p("ca.pem"),
            "--resolve".into(),
            resolve.clone(),
            "-d".into(),
            "grant_type=client_credentials".into(),
            "-d".into(),
            "client_id=billing".into(),
        ];
        if let Some(c) = cert {
            a.extend(["--cert".into(), p(&format!("{c}.pem")), "--key".into(), p(&format!("{c}-key.pem"))]);
        }
        a
    };
    let a = token(Some("billing"));
    let r = curl(&a.iter().map(String::as_str).collect::<Vec<_>>(), &url).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, c) = jwt_parts(r.json()["access_token"].as_str().unwrap());
    let pem = std::fs::read_to_string(p("billing.pem")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(b64).unwrap();
    let x5t = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &der));
    assert_eq!(c["cnf"], json!({"x5t#S256": x5t}));
    // No certificate, or a certificate with another subject: invalid_client.
    for cert in [None, Some("intruder")] {
        let a = token(cert);
        let r = curl(&a.iter().map(String::as_str).collect::<Vec<_>>(), &url).await;
        assert_oauth_error(&r, 401, "invalid_client");
    }
    // A certificate from an unknown CA does not even complete the handshake.
    let rogue = Pki::new("Rogue CA");
    rogue.write_leaf(dir.path(), "rogue", &["billing"]);
    let mut a = token(Some("rogue"));
    a.extend(["-o".into(), "/dev/null".into()]);
    let out = std::process::Command::new("curl").args(["-sS", "--max-time", "10"]).args(&a).arg(&url).output().unwrap();
    assert!(!out.status.success(), "handshake with a rogue client certificate succeeded");
}

both_databases! {
    async fn key_rotation_keeps_unexpired_tokens_valid(db: Db) {
        // A fixed issuer, so tokens stay valid across the restart (which binds a new port).
        let mut s = IdpServer::start_with(db, &["--issuer", "http://idp.example.test"]).await;
        let secret = s.add_client("svc", &["--scope", "a", "--grant", "client_credentials"]);
        let t1 = s.cc_token("svc", &secret, &[]).await.json()["access_token"].as_str().unwrap().to_owned();
        let k1 = jwt_parts(&t1).0["kid"].as_str().unwrap().to_owned();
        // Pre-publish: the new key is in the JWKS at once but does not sign yet.
        let (code, out, err) = s.cli_raw("keys", &["rotate", "--activate-after", "1h"], "");
        assert_eq!(code, 0, "{err}");
        let k2 = serde_json::from_str::<Value>(&out).unwrap()["kid"].as_str().unwrap().to_owned();
        assert_ne!(k1, k2);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let jwks = curl(&[], &s.url("/jwks.json")).await.json();
            let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
            if kids.len() == 2 {
                assert!(kids.contains(&k1.as_str()) && kids.contains(&k2.as_str()), "{kids:?}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the server never picked up the rotated keyset");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let t = s.cc_token("svc", &secret, &[]).await.json()["access_token"].as_str().unwrap().to_owned();
        assert_eq!(jwt_parts(&t).0["kid"], k1.as_str(), "the pending key must not sign yet");
        // Rotate again, activating at once (admin API): the newest key signs, older tokens stay valid.
        let auth = format!("Authorization: Bearer {}", s.admin_token);
        let r = s.post("/admin/keys/rotate", &["-H", &auth, "-H", "content-type: application/json", "--data-raw", "{\"activate_after_seconds\":0}"]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let k3 = r.json()["kid"].as_str().unwrap().to_owned();
        let t3 = s.cc_token("svc", &secret, &[]).await.json()["access_token"].as_str().unwrap().to_owned();
        assert_eq!(jwt_parts(&t3).0["kid"], k3.as_str());
        assert_eq!(introspect(&s, "svc", &secret, &t1).await["active"], true);
        assert_eq!(introspect(&s, "svc", &secret, &t3).await["active"], true);
        let kids: Vec<String> = curl(&[], &s.url("/jwks.json")).await.json()["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect();
        assert!(kids.contains(&k1) && kids.contains(&k3), "{kids:?}");
        // Keys are sealed in the database: a restart (same master key) serves the same keys.
        s.restart().await;
        assert_eq!(introspect(&s, "svc", &secret, &t1).await["active"], true);
        let t4 = s.cc_token("svc", &secret, &[]).await.json()["access_token"].as_str().unwrap().to_owned();
        assert_eq!(jwt_parts(&t4).0["kid"], k3.as_str());
        // The database holds no private key in clear.
        if db == Db::Sqlite {
            let bytes = std::fs::read(s.dir.path().join("palisade.db")).unwrap();
            let wal = std::fs::read(s.dir.path().join("palisade.db-wal")).unwrap_or_default();
            for needle in [&b"\"d\""[..], b"PRIVATE KEY"] {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle) && !wal.windows(needle.len()).any(|w| w == needle));
            }
        }
    }
}

both_databases! {
    async fn revocation_and_userinfo_errors(db: Db) {
        let s = IdpServer::start(db).await;
        let (secret, password) = web_app(&s);
        let svc = s.add_client("svc", &["--scope", "a"]);
        let t = code_flow(&s, "web", &secret, "alice", &password, "openid").await;
        let at = t["access_token"].as_str().unwrap();
        let user = format!("web:{secret}");
        // Someone else's token: refused. Unknown token: 200 (RFC 7009 §2.2).
        let su = format!("svc:{svc}");
        let tok = format!("token={at}");
        assert_oauth_error(&s.post("/oauth2/revoke", &["-u", &su, "-d", &tok]).await, 400, "unauthorized_client");
        let r = s.post("/oauth2/revoke", &["-u", &user, "-d", "token=unknown"]).await;
        assert_eq!(r.status, 200);
        assert_oauth_error(&s.post("/oauth2/revoke", &["-u", &user]).await, 400, "invalid_request");
        assert_oauth_error(&s.post("/oauth2/revoke", &["-d", &tok]).await, 401, "invalid_client");
        assert_eq!(s.post("/oauth2/revoke", &["-u", &user, "-d", &tok]).await.status, 200);
        assert_eq!(introspect(&s, "web", &secret, at).await["active"], false);
        let r = curl(&["-H", &format!("Authorization: Bearer {at}")], &s.url("/userinfo")).await;
        assert_oauth_error(&r, 401, "invalid_token");
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer realm=\"palisade\", error=\"invalid_token\""));
        // No token; a token without openid.
        let r = curl(&[], &s.url("/userinfo")).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"palisade\""));
        let cc = s.cc_token("svc", &svc, &[]).await.json()["access_token"].as_str().unwrap().to_owned();
        let r = curl(&["-H", &format!("Authorization: Bearer {cc}")], &s.url("/userinfo")).await;
        assert_oauth_error(&r, 403, "insufficient_scope");
        // Introspection needs client authentication; garbage tokens are simply inactive.
        assert_oauth_error(&s.post("/oauth2/introspect", &["-d", &tok]).await, 401, "invalid_client");
        for junk in ["a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x"] {
            assert_eq!(introspect(&s, "svc", &svc, junk).await, json!({"active": false}));
        }
        // A token whose signature was tampered with.
        let mut forged = cc.clone();
        forged.pop();
        forged.push(if cc.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(introspect(&s, "svc", &svc, &forged).await["active"], false);
        assert_eq!(introspect(&s, "svc", &svc, &cc).await["active"], true);
    }
}

both_databases! {
    async fn admin_api_and_openapi(db: Db) {
        let s = IdpServer::start(db).await;
        let auth = format!("Authorization: Bearer {}", s.admin_token);
        let json_h = "content-type: application/json";
        // The credential is required and checked.
        let r = curl(&[], &s.url("/admin/clients")).await;
        assert_oauth_error(&r, 401, "unauthorized");
        let r = curl(&["-H", "Authorization: Bearer wrong-token"], &s.url("/admin/clients")).await;
        assert_oauth_error(&r, 401, "unauthorized");
        // Clients.
        let spec = json!({"client_id": "api", "token_endpoint_auth_method": "client_secret_basic", "grant_types": ["client_credentials"], "scopes": ["a"]});
        let r = s.post("/admin/clients", &["-H", &auth, "-H", json_h, "--data-raw", &spec.to_string()]).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let secret = r.json()["client_secret"].as_str().unwrap().to_owned();
        assert_eq!(s.cc_token("api", &secret, &[]).await.status, 200);
        let r = s.post("/admin/clients", &["-H", &auth, "-H", json_h, "--data-raw", &spec.to_string()]).await;
        assert_oauth_error(&r, 409, "conflict");
        let bad = json!({"client_id": "bad", "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"], "redirect_uris": ["http://evil.example/cb"]});
        let r = s.post("/admin/clients", &["-H", &auth, "-H", json_h, "--data-raw", &bad.to_string()]).await;
        assert_oauth_error(&r, 400, "invalid_request");
        assert_eq!(r.json()["error_description"], "redirect_uris: \"http://evil.example/cb\": plain http is only allowed for loopback hosts");
        let r = s.post("/admin/clients", &["-H", &auth, "-H", json_h, "--data-raw", "{\"client_id\": 5}"]).await;
        assert_oauth_error(&r, 400, "invalid_request");
        let r = s.post("/admin/clients/api/secret", &["-H", &auth]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let new_secret = r.json()["client_secret"].as_str().unwrap().to_owned();
        assert_oauth_error(&s.cc_token("api", &secret, &[]).await, 401, "invalid_client");
        assert_eq!(s.cc_token("api", &new_secret, &[]).await.status, 200);
        let list = curl(&["-H", &auth], &s.url("/admin/clients")).await.json();
        // "api", and the dashboard's own PKCE client that the server registers.
        let ids: Vec<&str> = list.as_array().unwrap().iter().map(|c| c["client_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["api", "palisade-dashboard"]);
        assert!(list.to_string().find(&new_secret).is_none() && !list.to_string().contains("argon2"));
        // Users.
        let r = s.post("/admin/users", &["-H", &auth, "-H", json_h, "--data-raw", "{\"username\":\"bob\",\"password\":\"correct horse\",\"roles\":[\"ops\"]}"]).await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.json()["roles"], json!(["ops"]));
        assert!(r.json().get("password_hash").is_none());
        let r = s.post("/admin/users", &["-H", &auth, "-H", json_h, "--data-raw", "{\"username\":\"eve\",\"password\":\"short\"}"]).await;
        assert_eq!(r.json()["error_description"], "password: must be 8 to 1024 characters");
        let r = curl(&["-X", "PUT", "-H", &auth, "-H", json_h, "--data-raw", "{\"roles\":[\"ops\",\"admin\"]}"], &s.url("/admin/users/bob/roles")).await;
        assert_eq!(r.json()["roles"], json!(["ops", "admin"]));
        let r = curl(&["-X", "PUT", "-H", &auth, "-H", json_h, "--data-raw", "{\"password\":\"battery staple\"}"], &s.url("/admin/users/bob/password")).await;
        assert_eq!(r.status, 204);
        assert_eq!(curl(&["-X", "DELETE", "-H", &auth], &s.url("/admin/users/bob")).await.status, 204);
        assert_oauth_error(&curl(&["-H", &auth], &s.url("/admin/users/bob")).await, 404, "not_found");
        assert_eq!(curl(&["-X", "DELETE", "-H", &auth], &s.url("/admin/clients/api")).await.status, 204);
        assert_oauth_error(&s.cc_token("api", &new_secret, &[]).await, 401, "invalid_client");
        // The OpenAPI document describes every route, and every described route exists.
        let doc = curl(&[], &s.url("/openapi.json")).await.json();
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 19);
        for (path, ops) in paths {
            let concrete = path.replace("{id}", "nobody").replace("{username}", "nobody");
            for method in ops.as_object().unwrap().keys() {
                let m = method.to_uppercase();
                let r = curl(&["-X", &m, "-H", &auth, "-o", "/dev/null"], &s.url(&concrete)).await;
                assert_ne!(r.status, 405, "{m} {path} is documented but not routed");
                assert!(r.status < 500, "{m} {path}: {}", r.status);
            }
        }
        // The loop above posted to /admin/keys/rotate once: two keys are published now.
        let keys = curl(&["-H", &auth], &s.url("/admin/keys")).await.json();
        assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    }
}

#[tokio::test]
async fn cli_validates_and_never_logs_secrets() {
    let s = IdpServer::start(Db::Sqlite).await;
    let (code, _, err) =
        s.cli_raw("idp", &["client", "add", "x", "--public", "--redirect-uri", "http://evil.example/cb"], "");
    assert_eq!(code, 1);
    assert!(
        err.contains("redirect_uris: \"http://evil.example/cb\": plain http is only allowed for loopback hosts"),
        "{err}"
    );
    let (code, _, err) = s.cli_raw("idp", &["client", "add", "x", "--grant", "password"], "");
    assert_eq!(code, 2);
    assert!(err.contains("unknown grant \"password\""), "{err}");
    let secret = s.add_client("svc", &["--scope", "a"]);
    let (code, _, err) = s.cli_raw("idp", &["client", "add", "svc"], "");
    assert_eq!(code, 1);
    assert!(err.contains("client \"svc\" already exists"), "{err}");
    let (code, out, _) = s.cli_raw("idp", &["user", "add", "gen"], "");
    assert_eq!(code, 0);
    let generated = serde_json::from_str::<Value>(&out).unwrap()["password"].as_str().unwrap().to_owned();
    assert_eq!(generated.len(), 24);
    // Exercise the server, then look for any secret in its log.
    let (web_secret, password) = web_app(&s);
    let t = code_flow(&s, "web", &web_secret, "alice", &password, "openid").await;
    let cc = s.cc_token("svc", &secret, &[]).await.json()["access_token"].as_str().unwrap().to_owned();
    let _ = s.cc_token("svc", "wrong", &[]).await;
    let log = s.log_text();
    assert!(log.contains("user signed in"), "{log}");
    for needle in [
        &secret,
        &web_secret,
        &password,
        &cc,
        t["access_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
        &s.admin_token,
        &generated,
    ] {
        assert!(!log.contains(needle), "a secret reached the log");
    }
    // The state files are private.
    use std::os::unix::fs::PermissionsExt;
    for f in ["master.key", "admin.token", "palisade.db"] {
        let mode = std::fs::metadata(s.dir.path().join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
}
