//! End-to-end tests: the real `palisade` binary on ephemeral ports, driven by real clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly by design

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The plain listener and admin address every HTTP-only test config starts with.
const PLAIN: &str =
    "listeners:\n  http: { address: \"127.0.0.1:{HTTP}\" }\nadmin: { address: \"127.0.0.1:{ADMIN}\" }\n";

fn one_route(backend: &Backend, extra_upstream: &str) -> String {
    format!(
        r#"
{PLAIN}upstreams:
  app:
    endpoints: ["{ep}"]
{extra_upstream}
routes:
  - name: app
    match: {{ path: {{ prefix: / }} }}
    upstream: app
    response_headers: {{ set: {{ x-gateway: palisade }} }}
"#,
        ep = backend.endpoint()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_http1_with_forwarding_headers_and_request_id() {
    let b = Backend::start("a").await;
    let gw = Gw::start(&one_route(&b, "")).await;

    let r = curl(
        &[
            "-H",
            "Connection: keep-alive, X-Hop",
            "-H",
            "X-Hop: secret",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "X-Forwarded-For: 203.0.113.9",
            "-H",
            "X-Request-Id: test-123",
        ],
        &gw.url("/echo?q=1"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("test-123"));
    assert_eq!(r.header("x-gateway"), Some("palisade"));
    let v = r.json();
    assert_eq!(v["uri"], "/echo?q=1");
    assert_eq!(v["version"], "HTTP/1.1");
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"][0], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(h["x-forwarded-host"][0], format!("127.0.0.1:{}", gw.http));
    assert_eq!(h["host"][0], format!("127.0.0.1:{}", gw.http));
    assert_eq!(h["x-request-id"][0], "test-123");
    assert!(h.get("x-hop").is_none(), "header named in Connection must be removed: {h}");
    assert!(h.get("keep-alive").is_none());

    // Without an id, one is generated and sent both ways.
    let r = curl(&[], &gw.url("/echo")).await;
    let id = r.header("x-request-id").unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(r.json()["headers"]["x-request-id"][0], id);

    // Access log is JSON with the request id and no query string.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = gw.log_text();
    let line = log.lines().find(|l| l.contains("test-123")).expect("access log line");
    let entry: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["path"], "/echo");
    assert_eq!(entry["route"], "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_path_and_method_first_match_wins() {
    let (a, b, c) = (Backend::start("a").await, Backend::start("b").await, Backend::start("c").await);
    let cfg = format!(
        r#"
{PLAIN}upstreams:
  a: {{ endpoints: ["{a}"] }}
  b: {{ endpoints: ["{b}"] }}
  c: {{ endpoints: ["{c}"] }}
routes:
  - name: api-host
    match: {{ hosts: ["*.api.test"], path: {{ prefix: /v1 }} }}
    upstream: a
  - name: exact
    match: {{ path: {{ exact: /health-exact }} }}
    upstream: b
  - name: users
    match: {{ path: {{ regex: "/users/[0-9]+" }}, methods: [GET] }}
    upstream: b
  - name: writes
    match: {{ path: {{ prefix: /users }}, methods: [POST, PUT] }}
    upstream: c
  - name: shadowed
    match: {{ path: {{ exact: /health-exact }} }}
    upstream: c
"#,
        a = a.endpoint(),
        b = b.endpoint(),
        c = c.endpoint()
    );
    let gw = Gw::start(&cfg).await;
    let who = |r: &Curl| r.header("x-backend").map(str::to_string);

    let r = curl(&["-H", "Host: eu.api.test"], &gw.url("/v1/things")).await;
    assert_eq!(who(&r).as_deref(), Some("a"));
    let r = curl(&["-H", "Host: api.test"], &gw.url("/v1/things")).await;
    assert_eq!(r.status, 404, "bare domain does not match *.api.test");
    let r = curl(&["-H", "Host: eu.api.test"], &gw.url("/v1x")).await;
    assert_eq!(r.status, 404, "prefix match is segment-aware");
    let r = curl(&[], &gw.url("/health-exact")).await;
    assert_eq!(who(&r).as_deref(), Some("b"), "first match wins over the later duplicate");
    let r = curl(&[], &gw.url("/health-exact/x")).await;
    assert_eq!(r.status, 404);
    let r = curl(&[], &gw.url("/users/42")).await;
    assert_eq!(who(&r).as_deref(), Some("b"));
    let r = curl(&[], &gw.url("/users/42/x")).await;
    assert_eq!(r.status, 404, "regex is anchored");
    let r = curl(&["-X", "POST", "-d", "x=1"], &gw.url("/users/42")).await;
    assert_eq!(who(&r).as_deref(), Some("c"));
    let r = curl(&["-X", "DELETE"], &gw.url("/users/42")).await;
    assert_eq!(r.status, 404);
    let v = r.json();
    assert_eq!(v["error"], "no route matches this request");
    assert_eq!(v["request_id"].as_str().map(str::len), Some(32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_h2_sni_and_tls_versions() {
    let b = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Test CA");
    pki.write_leaf(dir.path(), "a", &["a.test"]);
    pki.write_leaf(dir.path(), "b", &["b.test", "*.b.test"]);
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    let cfg = format!(
        r#"
listeners:
  http: {{ address: "127.0.0.1:{{HTTP}}", redirect_to_https: true }}
  https:
    address: "127.0.0.1:{{HTTPS}}"
    certificates:
      - {{ cert: a.pem, key: "file:a-key.pem", server_names: [a.test] }}
      - {{ cert: b.pem, key: "file:b-key.pem", server_names: [b.test, "*.b.test"] }}
admin: {{ address: "127.0.0.1:{{ADMIN}}" }}
upstreams:
  app: {{ endpoints: ["{ep}"] }}
routes:
  - {{ name: app, upstream: app }}
"#,
        ep = b.endpoint()
    );
    let gw = Gw::start_in(dir, &cfg).await;
    let ca = gw.dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();

    // curl over HTTP/2 with SNI a.test; the upstream still sees HTTP/1.1.
    let resolve = format!("a.test:{}:127.0.0.1", gw.https);
    let r =
        curl(&["--http2", "--cacert", ca, "--resolve", &resolve], &format!("https://a.test:{}/echo", gw.https)).await;
    assert_eq!(r.version, "HTTP/2");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["headers"]["x-forwarded-proto"][0], "https");
    assert_eq!(v["headers"]["host"][0], format!("a.test:{}", gw.https));

    // HTTP/1.1 over TLS, wildcard SNI.
    let resolve = format!("x.b.test:{}:127.0.0.1", gw.https);
    let r = curl(&["--http1.1", "--cacert", ca, "--resolve", &resolve], &format!("https://x.b.test:{}/echo", gw.https))
        .await;
    assert_eq!((r.version.as_str(), r.status), ("HTTP/1.1", 200));

    // The plain listener only redirects.
    let r = curl(&[], &format!("http://127.0.0.1:{}/a/b?c=1", gw.http)).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some(format!("https://127.0.0.1:{}/a/b?c=1", gw.https).as_str()));

    // openssl s_client: SNI picks the certificate; TLS 1.2 and 1.3 work; 1.1 is refused.
    let s_client = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("openssl")
            .arg("s_client")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let connect = format!("127.0.0.1:{}", gw.https);
    for (sni, cn) in
        [("a.test", "CN=a.test"), ("b.test", "CN=b.test"), ("deep.b.test", "CN=b.test"), ("other.test", "CN=a.test")]
    {
        let (ok, out) = s_client(vec!["-connect".into(), connect.clone(), "-servername".into(), sni.into()]).await;
        assert!(ok, "{out}");
        let subject = out.lines().find(|l| l.starts_with("subject=")).unwrap_or_default().replace(' ', "");
        assert!(subject.contains(cn), "SNI {sni}: {subject}");
    }
    for (flag, proto) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, out) =
            s_client(vec!["-connect".into(), connect.clone(), "-servername".into(), "a.test".into(), flag.into()])
                .await;
        assert!(ok && out.contains(proto), "{flag}: {out}");
    }
    // SECLEVEL=0 makes the client willing to offer TLS 1.1, so the refusal is the server's alert.
    let (ok, out) = s_client(vec![
        "-connect".into(),
        connect.clone(),
        "-tls1_1".into(),
        "-cipher".into(),
        "DEFAULT@SECLEVEL=0".into(),
    ])
    .await;
    assert!(!ok && out.contains("alert handshake failure"), "TLS 1.1 must be refused by the server: {out}");
    let (ok, out) =
        s_client(vec!["-connect".into(), connect, "-servername".into(), "a.test".into(), "-alpn".into(), "h2".into()])
            .await;
    assert!(ok && out.contains("ALPN protocol: h2"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_are_json() {
    let b = Backend::start("a").await;
    let dead = 1; // nothing listens on tcpmux: connections are refused
    let cfg = format!(
        r#"
{PLAIN}upstreams:
  live:
    endpoints: ["{ep}"]
    request_timeout: 300ms
  dead:
    endpoints: ["127.0.0.1:{dead}"]
    retries: 0
  sick:
    endpoints: ["{ep}"]
    health_check: {{ path: /status/500, interval: 100ms, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1 }}
routes:
  - {{ name: dead, match: {{ path: {{ prefix: /dead }} }}, upstream: dead }}
  - {{ name: sick, match: {{ path: {{ prefix: /sick }} }}, upstream: sick }}
  - {{ name: live, match: {{ path: {{ prefix: /slow }} }}, upstream: live }}
"#,
        ep = b.endpoint()
    );
    let gw = Gw::start(&cfg).await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    let cases = [
        ("/nowhere", 404, "no route matches this request"),
        ("/dead", 502, "upstream connection failed"),
        ("/sick", 503, "no healthy upstream endpoint"),
        ("/slow?ms=3000", 504, "upstream timed out"),
    ];
    for (path, status, msg) in cases {
        let started = Instant::now();
        let r = curl(&[], &gw.url(path)).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        assert_eq!(v["error"], msg);
        assert_eq!(v["request_id"], r.header("x-request-id").unwrap());
        assert!(started.elapsed() < Duration::from_millis(1500), "{path} took {:?}", started.elapsed());
    }
    assert_eq!(curl(&[], &gw.url("/slow?ms=10")).await.status, 200);
}

async fn wait_for<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "condition not reached in 10s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_killed_fails_fast_then_recovers() {
    let mut b = Backend::start("a").await;
    let gw = Gw::start(&one_route(
        &b,
        "    health_check: { path: /healthz, interval: 200ms, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 2 }",
    ))
    .await;
    assert_eq!(curl(&[], &gw.url("/echo")).await.status, 200);

    b.kill();
    let started = Instant::now();
    let r = curl(&[], &gw.url("/echo")).await;
    assert!(r.status == 502 || r.status == 503, "got {}", r.status);
    assert!(started.elapsed() < Duration::from_secs(1), "failure took {:?}", started.elapsed());
    // Active health checks take it out: 503 without trying to connect.
    wait_for(|| async { gw.log_text().contains("endpoint unhealthy") }).await;
    assert_eq!(curl(&[], &gw.url("/echo")).await.status, 503);
    let m = gw.metrics().await;
    assert!(!m.contains("audit_shipper"), "no shipper, no shipper metrics: {m}");
    assert!(
        m.contains(&format!("palisade_upstream_endpoint_healthy{{upstream=\"app\",endpoint=\"{}\"}} 0", b.endpoint())),
        "{m}\n{}",
        gw.log_text()
    );

    b.restart().await;
    wait_for(|| async { curl(&[], &gw.url("/echo")).await.status == 200 }).await;
    assert!(gw
        .metrics()
        .await
        .contains(&format!("palisade_upstream_endpoint_healthy{{upstream=\"app\",endpoint=\"{}\"}} 1", b.endpoint())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_only_idempotent_requests_and_ejects_passively() {
    let live = Backend::start("live").await;
    let dead = 1; // nothing listens on tcpmux: connections are refused
    let cfg = format!(
        r#"
{PLAIN}upstreams:
  app:
    endpoints: ["127.0.0.1:{dead}", "{ep}"]
    retries: 1
    passive_ejection: {{ consecutive_failures: 3, ejection_time: 30s }}
routes:
  - {{ name: app, upstream: app }}
"#,
        ep = live.endpoint()
    );
    let gw = Gw::start(&cfg).await;
    // POST with a body is never retried: round robin sends one of the two to the dead endpoint.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(curl(&["-X", "POST", "-d", "{}"], &gw.url("/echo")).await.status);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 502]);
    // GET is retried on the other endpoint: always 200.
    for _ in 0..4 {
        assert_eq!(curl(&[], &gw.url("/echo")).await.status, 200);
    }
    // After 3 consecutive failures the dead endpoint is ejected: POSTs now all succeed.
    for _ in 0..4 {
        assert_eq!(curl(&["-X", "POST", "-d", "{}"], &gw.url("/echo")).await.status, 200);
    }
    assert!(gw.log_text().contains("endpoint ejected after consecutive failures"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_the_busy_endpoint() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let cfg = format!(
        r#"
{PLAIN}upstreams:
  app: {{ endpoints: ["{a}", "{b}"], balance: least_request }}
routes:
  - {{ name: app, upstream: app }}
"#,
        a = a.endpoint(),
        b = b.endpoint()
    );
    let gw = Gw::start(&cfg).await;
    let slow_url = gw.url("/slow?ms=1500");
    let slow = tokio::spawn(async move { curl(&[], &slow_url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ha, hb) = (a.hits.load(std::sync::atomic::Ordering::SeqCst), b.hits.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(ha + hb, 1, "the slow request must be in flight on exactly one endpoint");
    let busy = if ha == 1 { "a" } else { "b" };
    for _ in 0..4 {
        let r = curl(&[], &gw.url("/echo")).await;
        assert_ne!(r.header("x-backend"), Some(busy), "least-request must avoid the endpoint with a request in flight");
    }
    assert_eq!(slow.await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_body_limits() {
    let b = Backend::start("a").await;
    let cfg = one_route(&b, "").replace("admin:", "limits: { max_header_bytes: 4096, max_body_bytes: 1000 }\nadmin:");
    let gw = Gw::start(&cfg).await;
    let big = format!("X-Big: {}", "a".repeat(5000));
    let r = curl(&["-H", &big], &gw.url("/echo")).await;
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"], "request headers exceed 4096 bytes");

    let body_path = gw.dir.path().join("body.bin");
    std::fs::write(&body_path, vec![b'x'; 5000]).unwrap();
    let data = format!("@{}", body_path.display());
    let r = curl(&["--data-binary", &data], &gw.url("/echo")).await;
    assert_eq!(r.status, 413, "declared Content-Length over the limit");
    let r = curl(&["--data-binary", &data, "-H", "Transfer-Encoding: chunked"], &gw.url("/echo")).await;
    assert_eq!(r.status, 413, "chunked body counted while streaming: {}", r.body);
    assert_eq!(r.json()["error"], "request body exceeds 1000 bytes");
    // Within the limit, streamed through.
    let r = curl(&["--data-binary", "hello", "-H", "Transfer-Encoding: chunked"], &gw.url("/echo")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_get_400_and_close() {
    let b = Backend::start("a").await;
    let gw = Gw::start(&one_route(&b, "")).await;
    let cases: [(&str, &[u8]); 6] = [
        ("CL.TE", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"),
        ("TE.CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"),
        ("dup CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("obs-fold", b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n"),
        ("bad chunk", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        ("TE not chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
    ];
    for (name, req) in cases {
        let (resp, closed) = raw(gw.http, req, Duration::from_secs(5)).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{name}: {resp}");
        assert!(closed, "{name}: connection must be closed");
    }
    // The upstream never saw any of them.
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    // A smuggled request hidden in a body is not executed either.
    let pipelined = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n";
    let (resp, _) = raw(gw.http, pipelined, Duration::from_secs(5)).await;
    assert!(!resp.contains("201"), "{resp}");
    // A well-formed keep-alive exchange still works on a raw socket.
    let ok = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\nGET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (resp, closed) = raw(gw.http, ok, Duration::from_secs(5)).await;
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 2, "{resp}");
    assert!(closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_at_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = Backend::start("a").await;
    let cfg = one_route(&b, "").replace("admin:", "limits: { header_read_timeout: 1s }\nadmin:");
    let gw = Gw::start(&cfg).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.http)).await.unwrap();
    let started = Instant::now();
    let head = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut_off = false;
    for byte in head.iter() {
        if s.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = true;
                break;
            }
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(!text.contains(" 200 "), "slow request must not be served: {text}");
                // hyper answers 408 before closing
                cut_off = true;
                break;
            }
            Err(_) => {}
        }
    }
    let t = started.elapsed();
    assert!(cut_off, "connection stayed open for {t:?}");
    assert!(t >= Duration::from_millis(900) && t < Duration::from_millis(3000), "cut off after {t:?}");
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_closes_at_header_timeout_but_keep_alive_waits_for_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = Backend::start("a").await;
    let cfg = one_route(&b, "").replace("admin:", "limits: { header_read_timeout: 1s, idle_timeout: 3s }\nadmin:");
    let gw = Gw::start(&cfg).await;
    // A connection that never sends a byte: closed after header_read_timeout (1-1.25 s), not idle_timeout.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", gw.http)).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await.expect("not closed").unwrap_or(0);
    let t = started.elapsed();
    assert_eq!(n, 0, "no bytes, just the close");
    assert!(t >= Duration::from_millis(950) && t < Duration::from_millis(2500), "silent connection closed after {t:?}");

    // After a request, the keep-alive wait is bound by idle_timeout (3 s): still served at 2 s.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.http)).await.unwrap();
    let req = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n";
    async fn read_response(s: &mut tokio::net::TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }
    s.write_all(req).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.write_all(req).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_and_max_connections_is_enforced() {
    let b = Backend::start("a").await;
    // 3 s: the two idle connections below must stay open while the test, on a loaded machine, sees both accepted.
    let cfg = one_route(&b, "").replace("admin:", "limits: { idle_timeout: 3s, max_connections: 2 }\nadmin:");
    let gw = Gw::start(&cfg).await;

    // Idle: one request, then silence: closed after ~3-3.5 s.
    let started = Instant::now();
    let (resp, closed) = raw(gw.http, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(8)).await;
    assert!(resp.starts_with("HTTP/1.1 200"));
    assert!(closed);
    let t = started.elapsed();
    assert!(t >= Duration::from_millis(2900) && t < Duration::from_secs(6), "idle close after {t:?}");

    // Two idle connections fill the cap; the third is closed at accept.
    let c1 = tokio::net::TcpStream::connect(("127.0.0.1", gw.http)).await.unwrap();
    let c2 = tokio::net::TcpStream::connect(("127.0.0.1", gw.http)).await.unwrap();
    // Wait until the gateway has accepted both (under load accept can lag behind connect).
    wait_for(|| async { gw.metrics().await.contains(r#"palisade_open_connections{listener="http"} 2"#) }).await;
    let started = Instant::now();
    let (resp, closed) = raw(gw.http, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(3)).await;
    assert!(closed && resp.is_empty(), "third connection must be refused: {resp}");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(gw.metrics().await.contains("palisade_connections_rejected_total 1"));
    drop((c1, c2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(curl(&[], &gw.url("/echo")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_stream_without_buffering() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = Backend::start("a").await;
    let gw = Gw::start(&one_route(&b, "")).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.http)).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("first-chunk") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(started.elapsed() < Duration::from_millis(700), "first chunk after {:?}", started.elapsed());
    assert!(!String::from_utf8_lossy(&got).contains("second-chunk"));
    while !String::from_utf8_lossy(&got).contains("second-chunk") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_applies_valid_and_rejects_invalid_config() {
    let b = Backend::start("a").await;
    let base = one_route(&b, "").replace("prefix: /", "prefix: /one");
    let gw = Gw::start(&base).await;
    assert_eq!(curl(&[], &gw.url("/one")).await.status, 200);
    assert_eq!(curl(&[], &gw.url("/two")).await.status, 404);

    // File change: a new route starts serving.
    let two = base.clone() + "  - name: two\n    match: { path: { prefix: /two } }\n    upstream: app\n";
    gw.write_config(&two);
    wait_for(|| async { curl(&[], &gw.url("/two")).await.status == 200 }).await;

    // Invalid file: rejected, logged with its location, old config keeps serving.
    let bad = two.replace("upstream: app\n", "upstream: ap\n");
    gw.write_config(&bad);
    wait_for(|| async { gw.log_text().contains("configuration rejected") }).await;
    let log = gw.log_text();
    assert!(log.contains("routes[1].upstream: unknown upstream \\\"ap\\\" (did you mean \\\"app\\\"?)"), "{log}");
    assert_eq!(curl(&[], &gw.url("/two")).await.status, 200);
    assert_eq!(curl(&[], &gw.url("/one")).await.status, 200);
    assert!(gw.metrics().await.contains("palisade_config_reloads_total{result=\"rejected\"}"));

    // SIGHUP reloads too.
    let three = two.replace("prefix: /two", "prefix: /three");
    gw.write_config(&three);
    gw.signal("HUP");
    wait_for(|| async { curl(&[], &gw.url("/three")).await.status == 200 }).await;
    assert_eq!(curl(&[], &gw.url("/two")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let b = Backend::start("a").await;
    let mut gw = Gw::start(&one_route(&b, "")).await;
    let url = gw.url("/slow?ms=1500");
    let inflight = tokio::spawn(async move { curl(&[], &url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused while draining.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", gw.http)).await.is_err());
    let r = inflight.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "slow done");
    let status = tokio::time::timeout(Duration::from_secs(5), gw.child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    assert!(gw.log_text().contains("draining connections"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_and_metrics() {
    let b = Backend::start("a").await;
    let gw = Gw::start(&one_route(&b, "")).await;
    for _ in 0..3 {
        curl(&[], &gw.url("/echo")).await;
    }
    curl(&[], &gw.url("/status/503")).await;
    assert_eq!(get_raw(gw.admin, "/healthz").await.unwrap(), (200, r#"{"status":"ok"}"#.into()));
    assert_eq!(get_raw(gw.admin, "/readyz").await.unwrap(), (200, r#"{"status":"ready"}"#.into()));
    let m = gw.metrics().await;
    assert!(m.contains(r#"palisade_requests_total{route="app",status="200"} 3"#), "{m}");
    assert!(m.contains(r#"palisade_requests_total{route="app",status="503"} 1"#), "{m}");
    assert!(m.contains(r#"palisade_request_duration_seconds_count{route="app"} 4"#), "{m}");
    assert!(m.contains("palisade_upstream_endpoint_healthy{"), "{m}");
    assert!(m.contains(r#"palisade_open_connections{listener="http"}"#), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_is_verified_against_the_configured_ca() {
    let pki = Pki::new("Upstream CA");
    let b = Backend::start_tls("tls", pki.server_config(&["backend.internal"])).await;
    let other = Pki::new("Other CA");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(dir.path().join("other.pem"), &other.ca_pem).unwrap();
    let cfg = format!(
        r#"
{PLAIN}upstreams:
  good: {{ endpoints: ["{ep}"], tls: {{ ca: ca.pem, server_name: backend.internal }} }}
  wrong_ca: {{ endpoints: ["{ep}"], tls: {{ ca: other.pem, server_name: backend.internal }}, retries: 0 }}
  wrong_name: {{ endpoints: ["{ep}"], tls: {{ ca: ca.pem, server_name: evil.internal }}, retries: 0 }}
routes:
  - {{ name: good, match: {{ path: {{ prefix: /good }} }}, upstream: good }}
  - {{ name: wrong_ca, match: {{ path: {{ prefix: /wrong-ca }} }}, upstream: wrong_ca }}
  - {{ name: wrong_name, match: {{ path: {{ prefix: /wrong-name }} }}, upstream: wrong_name }}
"#,
        ep = b.endpoint()
    );
    let gw = Gw::start_in(dir, &cfg).await;
    let r = curl(&[], &gw.url("/good")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["backend"], "tls");
    assert_eq!(curl(&[], &gw.url("/wrong-ca")).await.status, 502);
    assert_eq!(curl(&[], &gw.url("/wrong-name")).await.status, 502);
}
