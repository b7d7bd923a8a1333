//! The gateway's transform filter end to end (issue #8): a real `palisade server` with its vault
//! API (an FF1 key `cards`, a Cedar policy that lets the gateway detokenize it), a real gateway
//! with a JWT-authenticated route, and a small order service behind it that keeps what it is
//! sent. A card number posted by a client reaches the service tokenized (same format, last four
//! kept, Luhn-invalid); the service's answers are masked for a caller without the `billing` role
//! and clear for one with it; with the vault down, a card is refused (503, nothing forwarded) and
//! answers are masked even for `billing`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly by design

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use common::idp::{Db, IdpServer};
use common::issuer::{self, EcKey};
use common::*;

const CARD: &str = "4111 1111 1111 1111";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A JWT issuer on loopback (discovery + JWKS) whose tokens carry `roles`.
struct Issuer {
    url: String,
    key: EcKey,
}

impl Issuer {
    async fn start() -> Issuer {
        let key = EcKey::new("k1");
        let url = issuer::serve_metadata(json!({"keys": [key.jwk()]})).await;
        Issuer { url, key }
    }

    fn token(&self, sub: &str, roles: &[&str]) -> String {
        let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"});
        let claims = json!({"iss": self.url, "sub": sub, "client_id": "shop", "aud": "orders", "scope": "orders",
                            "roles": roles, "iat": now(), "exp": now() + 300, "jti": format!("{sub}-{}", now())});
        self.key.sign(&header, &claims)
    }
}

fn json_response(body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

/// The order service: `POST /orders` stores the body as it arrived (and answers it back),
/// `GET /orders/1` answers the stored order. `received` is every request body, byte for byte.
struct Orders {
    addr: String,
    received: Arc<Mutex<Vec<String>>>,
}

impl Orders {
    async fn start() -> Orders {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let store: Arc<Mutex<String>> = Arc::new(Mutex::new("{}".into()));
        let r = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let (r, store) = (r.clone(), store.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (r, store) = (r.clone(), store.clone());
                        async move {
                            let post = req.method() == hyper::Method::POST;
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let text = String::from_utf8_lossy(&body).into_owned();
                            if post {
                                r.lock().unwrap().push(text.clone());
                                *store.lock().unwrap() = text;
                            }
                            let order: Value = serde_json::from_str(&store.lock().unwrap()).unwrap();
                            Ok::<_, Infallible>(json_response(json!({"id": 1, "order": order}).to_string()))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
                });
            }
        });
        Orders { addr, received }
    }
}

/// `palisade server` with the vault policy, an FF1 key `cards`, and a gateway in front of `orders`.
async fn setup() -> (IdpServer, Issuer, Orders, Gw) {
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("vault.cedar");
    std::fs::write(
        &policy,
        "permit (principal == Admin::\"admin\", action == Action::\"detokenize\", resource == Template::\"cards\");\n",
    )
    .unwrap();
    let server = IdpServer::start_with(Db::Sqlite, &["--vault-policy", policy.to_str().unwrap()]).await;
    let auth = format!("Authorization: Bearer {}", server.admin_token);
    let created = curl(
        &["-X", "POST", "-H", &auth, "-H", "content-type: application/json", "-d", r#"{"type":"ff1-aes256"}"#],
        &server.url("/vault/v1/keys/cards"),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let issuer = Issuer::start().await;
    let orders = Orders::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vault.token"), &server.admin_token).unwrap();
    let cfg = format!(
        r#"listeners:
  http: {{ address: "127.0.0.1:{{HTTP}}" }}
admin: {{ address: "127.0.0.1:{{ADMIN}}" }}
audit: {{ file: audit.jsonl }}
authentication:
  jwt_issuers:
    - {{ issuer: "{iss}", audiences: [orders], algorithms: [ES256], typ: [at+jwt] }}
vault:
  server: "{vault}"
  token: file:vault.token
  timeout: 2s
upstreams:
  orders: {{ endpoints: ["{orders}"] }}
routes:
  - name: orders
    match: {{ path: {{ prefix: /orders }} }}
    upstream: orders
    authn: {{ methods: [jwt] }}
    transform:
      request:
        - {{ pointer: /card/number, tokenize: {{ key: cards, format: card }} }}
      response:
        - pointer: /order/card/number
          detokenize: {{ key: cards, format: card }}
          reveal: {{ roles: [billing] }}
"#,
        iss = issuer.url,
        vault = server.url(""),
        orders = orders.addr,
    );
    let gw = Gw::start_in(dir, &cfg).await;
    (server, issuer, orders, gw)
}

async fn call(gw: &Gw, token: &str, method: &str, path: &str, body: Option<&str>) -> Curl {
    let auth = format!("Authorization: Bearer {token}");
    let mut args = vec!["-X", method, "-H", &auth];
    if let Some(b) = body {
        args.extend(["-H", "content-type: application/json", "--data-binary", b]);
    }
    curl(&args, &gw.url(path)).await
}

fn luhn_valid(digits: &str) -> bool {
    let sum: u32 = digits
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

async fn audit_events(gw: &Gw, n: usize) -> Vec<Value> {
    let read = || -> Vec<Value> {
        std::fs::read_to_string(gw.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    for _ in 0..100 {
        if read().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    read()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_arrives_tokenized_and_comes_back_masked_or_clear_by_role() {
    let (_server, issuer, orders, gw) = setup().await;
    let viewer = issuer.token("bob", &["viewer"]);
    let billing = issuer.token("carol", &["billing"]);

    let body = format!(r#"{{"item": "mouse", "card": {{"number": "{CARD}", "exp": "12/29"}}, "qty": 2}}"#);
    let r = call(&gw, &viewer, "POST", "/orders", Some(&body)).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // The service got the body with only the card number changed, to a format-preserving token.
    let received = orders.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let v: Value = serde_json::from_str(&received[0]).unwrap();
    let token = v["card"]["number"].as_str().unwrap().to_owned();
    assert_eq!(received[0], body.replace(CARD, &token), "every other byte is kept");
    assert_ne!(token, CARD);
    assert_eq!(token.len(), CARD.len());
    assert_eq!(token.chars().filter(|c| *c == ' ').count(), 3, "{token}");
    assert!(token.ends_with(" 1111"), "the last four are kept: {token}");
    assert!(!luhn_valid(&token), "a card token never passes Luhn: {token}");
    assert!(!received[0].contains(CARD));

    // Its answer (the stored order) is masked for a caller without the billing role...
    assert_eq!(r.json()["order"]["card"]["number"], "****1111");
    assert_eq!(r.json()["order"]["card"]["exp"], "12/29");
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()));
    let r = call(&gw, &viewer, "GET", "/orders/1", None).await;
    assert_eq!(
        r.json(),
        json!({"id": 1, "order": {"item": "mouse", "card": {"number": "****1111", "exp": "12/29"}, "qty": 2}})
    );
    // ...and clear for one with it.
    let r = call(&gw, &billing, "GET", "/orders/1", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["order"]["card"]["number"], CARD);

    // The audit says which fields were transformed, never the values.
    let events = audit_events(&gw, 3).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        events[0]["reason"],
        "authenticated by jwt; transformed request /card/number tokenize:cards; response /order/card/number: 0 revealed, 1 masked"
    );
    assert_eq!(events[2]["reason"], "authenticated by jwt; response /order/card/number: 1 revealed, 0 masked");
    let text = std::fs::read_to_string(gw.dir.path().join("audit.jsonl")).unwrap();
    assert!(!text.contains("1111"), "no card digits in the audit: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_down_refuses_cards_and_masks_answers() {
    let (mut server, issuer, orders, gw) = setup().await;
    let billing = issuer.token("carol", &["billing"]);
    let body = format!(r#"{{"card": {{"number": "{CARD}"}}}}"#);
    assert_eq!(call(&gw, &billing, "POST", "/orders", Some(&body)).await.status, 200);
    assert_eq!(call(&gw, &billing, "GET", "/orders/1", None).await.json()["order"]["card"]["number"], CARD);

    server.child.kill().await.unwrap();
    let r = call(&gw, &billing, "POST", "/orders", Some(&body)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "the vault is unavailable: the request was not forwarded");
    assert_eq!(orders.received.lock().unwrap().len(), 1, "nothing reached the service");
    // Even the billing role sees a mask while the vault cannot reveal.
    let r = call(&gw, &billing, "GET", "/orders/1", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["order"]["card"]["number"], "****1111");
    // A body that is not JSON is refused rather than forwarded with a card in it.
    let r = curl(
        &["-X", "POST", "-H", &format!("Authorization: Bearer {billing}"), "-d", &format!("card={CARD}")],
        &gw.url("/orders"),
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.body);
    assert_eq!(orders.received.lock().unwrap().len(), 1);
}
