//! The `/ui` router in-process (`Router::oneshot`) with an in-memory fake `DashboardData`, and
//! the OIDC sign-in end to end against a small fake issuer on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use palisade_dashboard::{
    router, CertInfo, DashboardConfig, DashboardData, DataError, Edge, EventQuery, Graph, LiveItem, Node, NodeKind,
    PolicyInfo,
};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tower::ServiceExt;

const ADMIN_TOKEN: &str = "s3cret-admin-token";
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

struct Fake {
    tx: broadcast::Sender<LiveItem>,
    acks: Mutex<Vec<(String, String)>>,
    queries: Mutex<Vec<EventQuery>>,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake { tx: broadcast::channel(16).0, acks: Mutex::default(), queries: Mutex::default() })
    }
}

fn fake_graph() -> Graph {
    Graph {
        nodes: vec![
            Node { id: "internet".into(), label: "Internet".into(), kind: NodeKind::External },
            Node { id: "gw".into(), label: "gateway".into(), kind: NodeKind::Gateway },
            Node { id: "payments".into(), label: "payments".into(), kind: NodeKind::Service },
        ],
        edges: vec![
            Edge { from: "internet".into(), to: "gw".into(), requests: 40, denies: 3, mtls: false },
            Edge { from: "gw".into(), to: "payments".into(), requests: 37, denies: 1, mtls: true },
        ],
    }
}

#[async_trait]
impl DashboardData for Fake {
    async fn graph(&self) -> Graph {
        fake_graph()
    }
    async fn events(&self, query: EventQuery) -> Vec<Value> {
        self.queries.lock().unwrap().push(query);
        vec![json!({"id": "e1", "decision": "deny", "principal": "bob", "source": "gateway"})]
    }
    fn subscribe(&self) -> broadcast::Receiver<LiveItem> {
        self.tx.subscribe()
    }
    async fn alerts(&self) -> Vec<Value> {
        vec![json!({"id": "a1", "kind": "brute_force", "severity": "high", "summary": "5 failed logins", "count": 5})]
    }
    async fn ack(&self, id: &str, by: &str) -> Result<bool, DataError> {
        if id == "broken" {
            return Err(DataError("disk full".into()));
        }
        self.acks.lock().unwrap().push((id.to_owned(), by.to_owned()));
        Ok(id == "a1")
    }
    async fn certs(&self) -> Vec<CertInfo> {
        vec![CertInfo {
            name: "workload-ca".into(),
            kind: "ca".into(),
            subject: "CN=Palisade CA".into(),
            not_after: "2030-01-01T00:00:00Z".into(),
            seconds_left: 86_400,
        }]
    }
    async fn policies(&self) -> Vec<PolicyInfo> {
        vec![PolicyInfo {
            id: "p1".into(),
            source: "mesh.cedar".into(),
            text: "permit(principal, action, resource);".into(),
        }]
    }
    async fn top_denied(&self, limit: usize) -> Vec<(String, u64)> {
        vec![("bob".into(), 9), ("eve".into(), 4), ("mallory".into(), 1)].into_iter().take(limit).collect()
    }
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn config(issuer: &str) -> DashboardConfig {
    let mut cfg = DashboardConfig::new(issuer, "palisade-ui", "http://127.0.0.1:9400");
    cfg.admin_token_sha256 = Some(sha256_hex(ADMIN_TOKEN));
    cfg
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    /// `name=value` of a Set-Cookie for `name`, if any.
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| c.split(';').next().unwrap().to_owned())
    }
}

async fn send(app: &Router, req: Request<Body>) -> Resp {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    Resp { status, headers, body }
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

async fn login(app: &Router) -> (String, String) {
    let r = send(
        app,
        Request::post("/ui/login/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={ADMIN_TOKEN}")))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/ui/"));
    let cookie = r.cookie("palisade_ui").unwrap();
    let shell = send(app, get("/ui/", Some(&cookie))).await;
    assert_eq!(shell.status, StatusCode::OK);
    let html = shell.text();
    let start = html.find("name=\"palisade-csrf\" content=\"").unwrap() + 30;
    let csrf = html[start..].split('"').next().unwrap().to_owned();
    assert_eq!(csrf.len(), 43);
    (cookie, csrf)
}

#[tokio::test]
async fn unauthenticated_api_is_401_json_and_pages_redirect_to_login() {
    let app = router(config("http://127.0.0.1:1"), Fake::new());
    for path in ["/ui/api/graph", "/ui/api/events", "/ui/api/alerts", "/ui/api/certs", "/ui/api/nope"] {
        let r = send(&app, get(path, None)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            r.json(),
            json!({"error": "unauthorized", "error_description": "a dashboard session or the admin token is required"})
        );
    }
    let r = send(&app, get("/ui/api/graph", Some("palisade_ui=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for path in ["/ui", "/ui/"] {
        let r = send(&app, get(path, None)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(r.header("location"), Some("/ui/login"));
    }
    let r = send(&app, get("/ui/login", None)).await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.text();
    assert!(html
        .contains("<a class=\"button primary\" id=\"oidc-login\" href=\"/ui/login/oidc\">Sign in with Palisade</a>"));
    assert!(html.contains("<form id=\"token-form\" method=\"post\" action=\"/ui/login/token\""));
    assert!(html.contains("<input id=\"token\" name=\"token\" type=\"password\""));
    assert!(!html.contains("<script"));
}

#[tokio::test]
async fn admin_token_login_gives_a_session_cookie_that_opens_the_api() {
    let fake = Fake::new();
    let app = router(config("http://127.0.0.1:1"), fake.clone());
    let r =
        send(&app, Request::post("/ui/login/token").body(Body::from(format!("token={ADMIN_TOKEN}"))).unwrap()).await;
    let set = r.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    let (pair, attrs) = set.split_once(';').unwrap();
    assert_eq!(pair.len(), "palisade_ui=".len() + 43);
    assert_eq!(attrs, " Path=/ui; HttpOnly; SameSite=Lax; Max-Age=28800");

    let (cookie, _) = login(&app).await;
    let r = send(&app, get("/ui/api/graph", Some(&cookie))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.json(), serde_json::to_value(fake_graph()).unwrap());
    assert_eq!(r.json()["nodes"][0], json!({"id": "internet", "label": "Internet", "kind": "external"}));

    let r = send(&app, get("/ui/api/events?decision=deny&principal=bob&source=&limit=5&since_ms=1700", Some(&cookie)))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()[0]["id"], "e1");
    assert_eq!(
        fake.queries.lock().unwrap().last().unwrap(),
        &EventQuery {
            since_ms: Some(1700),
            principal: Some("bob".into()),
            decision: Some("deny".into()),
            source: None,
            limit: 5
        }
    );
    let r = send(&app, get("/ui/api/events?limit=5000", Some(&cookie))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json(),
        json!({"error": "invalid_request", "error_description": "limit must be an integer in 1..=1000"})
    );

    let r = send(&app, get("/ui/api/top-denied?limit=2", Some(&cookie))).await;
    assert_eq!(r.json(), json!([{"principal": "bob", "denies": 9}, {"principal": "eve", "denies": 4}]));
    let r = send(&app, get("/ui/api/certs", Some(&cookie))).await;
    assert_eq!(r.json()[0]["seconds_left"], 86_400);
    let r = send(&app, get("/ui/api/policies", Some(&cookie))).await;
    assert_eq!(r.json(), json!([{"id": "p1", "source": "mesh.cedar", "text": "permit(principal, action, resource);"}]));
    let r = send(&app, get("/ui/api/alerts", Some(&cookie))).await;
    assert_eq!(r.json()[0]["kind"], "brute_force");
    let r = send(&app, get("/ui/api/nope", Some(&cookie))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"], "not_found");

    let shell = send(&app, get("/ui", Some(&cookie))).await.text();
    assert!(shell.contains("Signed in as <strong>admin-token</strong>"));
    assert!(shell.contains("<script type=\"module\" src=\"/ui/assets/app.js\"></script>"));
}

#[tokio::test]
async fn wrong_or_missing_admin_token_is_401_without_a_cookie() {
    let app = router(config("http://127.0.0.1:1"), Fake::new());
    for body in ["token=wrong", "token=", "other=x", &format!("token={ADMIN_TOKEN}x")] {
        let r = send(&app, Request::post("/ui/login/token").body(Body::from(body.to_owned())).unwrap()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(r.headers.get(header::SET_COOKIE).is_none(), "{body}");
        assert!(r
            .text()
            .contains("<p id=\"login-error\" class=\"error\" role=\"alert\">That admin token is not valid.</p>"));
    }
    // Without a configured digest, no token works.
    let mut cfg = config("http://127.0.0.1:1");
    cfg.admin_token_sha256 = None;
    let app = router(cfg, Fake::new());
    let r =
        send(&app, Request::post("/ui/login/token").body(Body::from(format!("token={ADMIN_TOKEN}"))).unwrap()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    let r = send(&app, get("/ui/login", None)).await;
    assert!(!r.text().contains("token-form"));
}

#[tokio::test]
async fn bearer_admin_token_opens_the_api_and_a_wrong_one_does_not() {
    let fake = Fake::new();
    let app = router(config("http://127.0.0.1:1"), fake.clone());
    let bearer = |t: &str| {
        Request::get("/ui/api/graph").header(header::AUTHORIZATION, format!("Bearer {t}")).body(Body::empty()).unwrap()
    };
    assert_eq!(send(&app, bearer(ADMIN_TOKEN)).await.status, StatusCode::OK);
    let r = send(&app, bearer("nope")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"palisade-ui\""));
    // Scripts need no CSRF header: a browser never attaches this Authorization header itself.
    let r = send(
        &app,
        Request::post("/ui/api/alerts/a1/ack")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(*fake.acks.lock().unwrap(), vec![("a1".to_owned(), "admin-token".to_owned())]);
}

#[tokio::test]
async fn ack_requires_the_session_csrf_token() {
    let fake = Fake::new();
    let app = router(config("http://127.0.0.1:1"), fake.clone());
    let (cookie, csrf) = login(&app).await;
    let ack = |id: &str, token: Option<&str>| {
        let mut b = Request::post(format!("/ui/api/alerts/{id}/ack")).header(header::COOKIE, cookie.clone());
        if let Some(t) = token {
            b = b.header("X-Palisade-CSRF", t);
        }
        b.body(Body::empty()).unwrap()
    };
    for token in [None, Some("wrong"), Some("")] {
        let r = send(&app, ack("a1", token)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{token:?}");
        assert_eq!(
            r.json(),
            json!({"error": "forbidden", "error_description": "missing or wrong X-Palisade-CSRF header"})
        );
    }
    assert!(fake.acks.lock().unwrap().is_empty());

    let r = send(&app, ack("a1", Some(&csrf))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    assert_eq!(*fake.acks.lock().unwrap(), vec![("a1".to_owned(), "admin-token".to_owned())]);

    let r = send(&app, ack("zzz", Some(&csrf))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json(), json!({"error": "not_found", "error_description": "no such alert"}));
    let r = send(&app, ack("broken", Some(&csrf))).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json(), json!({"error": "server_error", "error_description": "the alert could not be acknowledged"}));

    // Another session's token does not work for this one.
    let (_, other_csrf) = login(&app).await;
    assert_ne!(other_csrf, csrf);
    assert_eq!(send(&app, ack("a1", Some(&other_csrf))).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn logout_needs_csrf_and_ends_the_session() {
    let app = router(config("http://127.0.0.1:1"), Fake::new());
    let (cookie, csrf) = login(&app).await;
    let logout = |body: String| {
        Request::post("/ui/logout").header(header::COOKIE, cookie.clone()).body(Body::from(body)).unwrap()
    };
    let r = send(&app, logout("csrf=bad".into())).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(send(&app, get("/ui/api/graph", Some(&cookie))).await.status, StatusCode::OK);
    let r = send(&app, logout(format!("csrf={csrf}"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/ui/login"));
    assert_eq!(
        r.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap(),
        "palisade_ui=; Path=/ui; HttpOnly; SameSite=Lax; Max-Age=0"
    );
    assert_eq!(send(&app, get("/ui/api/graph", Some(&cookie))).await.status, StatusCode::UNAUTHORIZED);
}

async fn next_frame(body: &mut Body) -> String {
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.unwrap().unwrap().unwrap();
    String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn sse_stream_delivers_filtered_audit_events_and_alerts() {
    let fake = Fake::new();
    let app = router(config("http://127.0.0.1:1"), fake.clone());
    let (cookie, _) = login(&app).await;
    let r = app.clone().oneshot(get("/ui/api/events/stream?decision=deny", Some(&cookie))).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    assert_eq!(r.headers()["content-security-policy"], CSP);
    let mut body = r.into_body();

    // Keys in sorted order: serde_json keeps insertion order when a workspace build enables its
    // preserve_order feature, and sorts them otherwise; the frame text is the same either way.
    fake.tx.send(LiveItem::Event(json!({"decision": "allow", "id": "e1", "principal": "alice"}))).unwrap();
    fake.tx.send(LiveItem::Event(json!({"decision": "deny", "id": "e2", "principal": "bob"}))).unwrap();
    fake.tx.send(LiveItem::Alert(json!({"id": "a9", "kind": "brute_force"}))).unwrap();
    assert_eq!(
        next_frame(&mut body).await,
        "event: audit\ndata: {\"decision\":\"deny\",\"id\":\"e2\",\"principal\":\"bob\"}\nid: e2\n\n"
    );
    assert_eq!(next_frame(&mut body).await, "event: alert\ndata: {\"id\":\"a9\",\"kind\":\"brute_force\"}\nid: a9\n\n");

    let r = send(&app, get("/ui/api/events/stream?limit=3", Some(&cookie))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error_description"], "unknown query parameter \"limit\"");
    assert_eq!(send(&app, get("/ui/api/events/stream", None)).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn assets_have_content_types_etags_and_every_response_the_csp() {
    let app = router(config("http://127.0.0.1:1"), Fake::new());
    for (name, ctype) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("graph.js", "text/javascript; charset=utf-8"),
        ("dom.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let r = send(&app, get(&format!("/ui/assets/{name}"), None)).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        assert_eq!(r.header("content-type"), Some(ctype));
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        assert_eq!(r.header("content-security-policy"), Some(CSP));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let etag = r.header("etag").unwrap().to_owned();
        assert_eq!(etag.len(), 26);
        let again = send(
            &app,
            Request::get(format!("/ui/assets/{name}"))
                .header(header::IF_NONE_MATCH, &etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED);
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), Some(etag.as_str()));
    }
    let r = send(&app, get("/ui/assets/../lib.rs", None)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(&app, get("/ui/assets/nope.js", None)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    for path in ["/ui/login", "/ui", "/ui/api/graph"] {
        let r = send(&app, get(path, None)).await;
        assert_eq!(r.header("content-security-policy"), Some(CSP), "{path}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
    }
    // The shell and its modules never load anything from elsewhere, and carry no inline script.
    let (cookie, _) = login(&app).await;
    let shell = send(&app, get("/ui/", Some(&cookie))).await.text();
    assert!(!shell.contains("http://") && !shell.contains("https://") && !shell.contains("style="));
    assert_eq!(shell.matches("<script").count(), 1);
    for name in ["app.js", "graph.js", "dom.js", "app.css"] {
        let text = send(&app, get(&format!("/ui/assets/{name}"), None)).await.text();
        assert!(!text.contains("https://") && !text.contains("innerHTML") && !text.contains("eval("), "{name}");
    }
}

// ------------------------------------------------------------------ OIDC against a fake issuer

struct Issuer {
    base: String,
    key: jsonwebtoken::EncodingKey,
    /// code → (code_challenge, claims of the ID token to issue)
    codes: Mutex<HashMap<String, (String, Value)>>,
    redirect_uri: String,
    /// Sign with a fresh key that is not in the JWKS (but under the same kid).
    forge: std::sync::atomic::AtomicBool,
}

fn p256_key() -> (jsonwebtoken::EncodingKey, Value) {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let public = pair.public_key().as_ref();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&public[1..33]), "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
    });
    (jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
}

async fn start_issuer() -> Arc<Issuer> {
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (key, jwk) = p256_key();
    let issuer = Arc::new(Issuer {
        base: base.clone(),
        key,
        codes: Mutex::default(),
        redirect_uri: "http://127.0.0.1:9400/ui/callback".into(),
        forge: Default::default(),
    });
    let meta = json!({
        "issuer": base, "authorization_endpoint": format!("{base}/oauth2/authorize"),
        "token_endpoint": format!("{base}/oauth2/token"), "jwks_uri": format!("{base}/jwks.json"),
    });
    let jwks = json!({ "keys": [jwk] });
    let state = issuer.clone();
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(move || async move { axum::Json(meta) }))
        .route("/jwks.json", get(move || async move { axum::Json(jwks) }))
        .route(
            "/oauth2/token",
            post(move |body: Bytes| async move {
                let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
                let refuse = (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"})));
                let code = form.get("code").cloned().unwrap_or_default();
                let Some((challenge, claims)) = state.codes.lock().unwrap().remove(&code) else { return refuse };
                let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                let computed = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
                if form.get("grant_type").map(String::as_str) != Some("authorization_code")
                    || form.get("client_id").map(String::as_str) != Some("palisade-ui")
                    || form.get("redirect_uri") != Some(&state.redirect_uri)
                    || computed != challenge
                {
                    return refuse;
                }
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
                header.kid = Some("k1".into());
                let forged = p256_key().0;
                let key = if state.forge.load(std::sync::atomic::Ordering::SeqCst) { &forged } else { &state.key };
                let id_token = jsonwebtoken::encode(&header, &claims, key).unwrap();
                (
                    StatusCode::OK,
                    axum::Json(json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token})),
                )
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    issuer
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Run the flow up to the callback; `claims` edits the ID token the issuer will sign, given the
/// nonce the dashboard sent. Returns the callback's response.
async fn sign_in(app: &Router, issuer: &Issuer, claims: impl FnOnce(&mut Value)) -> Resp {
    let r = send(app, get("/ui/login/oidc", None)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let location = r.header("location").unwrap().to_owned();
    let state_cookie = r.cookie("palisade_ui_state").unwrap();
    let (endpoint, query) = location.split_once('?').unwrap();
    assert_eq!(endpoint, format!("{}/oauth2/authorize", issuer.base));
    let q: HashMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "palisade-ui");
    assert_eq!(q["redirect_uri"], "http://127.0.0.1:9400/ui/callback");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "openid profile roles");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(state_cookie, format!("palisade_ui_state={}", q["state"]));
    let mut c = json!({
        "iss": issuer.base, "aud": "palisade-ui", "sub": "u-123", "preferred_username": "alice",
        "exp": now() + 300, "iat": now(), "nonce": q["nonce"], "roles": ["admin"],
    });
    claims(&mut c);
    issuer.codes.lock().unwrap().insert("code-1".into(), (q["code_challenge"].clone(), c));
    send(app, get(&format!("/ui/callback?code=code-1&state={}", q["state"]), Some(&state_cookie))).await
}

#[tokio::test]
async fn oidc_sign_in_end_to_end_and_refusals() {
    let issuer = start_issuer().await;
    let app = router(config(&issuer.base), Fake::new());

    let r = sign_in(&app, &issuer, |_| {}).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.header("location"), Some("/ui/"));
    let cookie = r.cookie("palisade_ui").unwrap();
    assert_eq!(r.cookie("palisade_ui_state").as_deref(), Some("palisade_ui_state="));
    assert_eq!(send(&app, get("/ui/api/graph", Some(&cookie))).await.status, StatusCode::OK);
    assert!(send(&app, get("/ui/", Some(&cookie))).await.text().contains("Signed in as <strong>alice</strong>"));

    let refused = |r: &Resp, status: StatusCode, message: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        assert!(r.cookie("palisade_ui").is_none());
        let expected = format!("<p id=\"error-message\" role=\"alert\">{message}</p>");
        assert!(r.text().contains(&expected), "{} lacks {expected}", r.text());
    };
    let r = sign_in(&app, &issuer, |c| c["nonce"] = json!("not-the-nonce")).await;
    refused(&r, StatusCode::UNAUTHORIZED, "the ID token was refused: nonce does not match the sign-in request");
    let r = sign_in(&app, &issuer, |c| c["aud"] = json!("someone-else")).await;
    refused(&r, StatusCode::UNAUTHORIZED, "the ID token was refused: wrong audience");
    let r = sign_in(&app, &issuer, |c| c["iss"] = json!("http://evil.example")).await;
    refused(&r, StatusCode::UNAUTHORIZED, "the ID token was refused: wrong issuer");
    let r = sign_in(&app, &issuer, |c| c["exp"] = json!(now() - 3600)).await;
    refused(&r, StatusCode::UNAUTHORIZED, "the ID token was refused: expired");
    let r = sign_in(&app, &issuer, |c| c["roles"] = json!(["viewer"])).await;
    refused(&r, StatusCode::FORBIDDEN, "your account has none of the roles allowed to use the dashboard");
    assert!(r.text().contains("<h1>Access denied</h1>"));
    let r = sign_in(&app, &issuer, |c| {
        c.as_object_mut().unwrap().remove("roles");
    })
    .await;
    refused(&r, StatusCode::FORBIDDEN, "your account has none of the roles allowed to use the dashboard");
}

#[tokio::test]
async fn oidc_callback_refuses_unknown_replayed_or_unbound_state_and_issuer_errors() {
    let issuer = start_issuer().await;
    let app = router(config(&issuer.base), Fake::new());
    let r = send(&app, get("/ui/callback?code=x&state=unknown", Some("palisade_ui_state=unknown"))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("the sign-in request is unknown or expired; start again"));

    // A state that this browser did not start (no state cookie) is refused, and then spent.
    let start = send(&app, get("/ui/login/oidc", None)).await;
    let location = start.header("location").unwrap().to_owned();
    let q: HashMap<String, String> =
        form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
    let r = send(&app, get(&format!("/ui/callback?code=x&state={}", q["state"]), None)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let cookie = start.cookie("palisade_ui_state").unwrap();
    let r = send(&app, get(&format!("/ui/callback?code=x&state={}", q["state"]), Some(&cookie))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let start = send(&app, get("/ui/login/oidc", None)).await;
    let location = start.header("location").unwrap().to_owned();
    let q: HashMap<String, String> =
        form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
    let cookie = start.cookie("palisade_ui_state").unwrap();
    let r =
        send(&app, get(&format!("/ui/callback?error=access_denied%3Cb%3E&state={}", q["state"]), Some(&cookie))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("the issuer refused the sign-in: access_deniedb"));

    // A code the issuer does not know: the token endpoint's refusal is reported, not its body.
    let start = send(&app, get("/ui/login/oidc", None)).await;
    let location = start.header("location").unwrap().to_owned();
    let q: HashMap<String, String> =
        form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
    let cookie = start.cookie("palisade_ui_state").unwrap();
    let r = send(&app, get(&format!("/ui/callback?code=bogus&state={}", q["state"]), Some(&cookie))).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.text().contains("the token endpoint failed: HTTP status 400, error invalid_grant"));
}

#[tokio::test]
async fn oidc_refuses_a_token_signed_by_another_key_and_an_unreachable_issuer() {
    let issuer = start_issuer().await;
    let app = router(config(&issuer.base), Fake::new());
    // Same kid, different key: the signature must not verify.
    issuer.forge.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = sign_in(&app, &issuer, |_| {}).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.cookie("palisade_ui").is_none());
    assert!(r.text().contains("the ID token was refused: signature does not verify"));
    issuer.forge.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(sign_in(&app, &issuer, |_| {}).await.status, StatusCode::SEE_OTHER);

    let dead = router(config("http://127.0.0.1:9"), Fake::new());
    let r = send(&dead, get("/ui/login/oidc", None)).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.cookie("palisade_ui").is_none());
    assert!(r
        .text()
        .contains("the issuer&#x27;s metadata could not be used: http://127.0.0.1:9/.well-known/openid-configuration"));
}

#[tokio::test]
async fn cookie_is_secure_when_the_public_url_is_https() {
    let mut cfg = config("http://127.0.0.1:1");
    cfg.public_url = "https://palisade.example".into();
    let app = router(cfg, Fake::new());
    let r =
        send(&app, Request::post("/ui/login/token").body(Body::from(format!("token={ADMIN_TOKEN}"))).unwrap()).await;
    let set = r.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    assert!(set.ends_with("; Path=/ui; HttpOnly; SameSite=Lax; Max-Age=28800; Secure"), "{set}");
}
