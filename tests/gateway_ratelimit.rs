//! Rate limiting end to end: the real `palisade gateway` process with per-route GCRA limits in its
//! local store and in a real `redis-server` shared by two gateway processes, driven over keep-alive
//! HTTP/1.1 connections. Expected counts and header values follow the documented semantics of
//! `palisade_ratelimit::Quota` (T = period / limit, τ = T × burst; an idle key accepts `burst + 1`
//! back-to-back, then one every T; under overload the accepted count over a window W is
//! `floor(W / T) + burst + 1`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)] // tests fail loudly by design; measured numbers go to stderr

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderMap;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

const PLAIN: &str =
    "listeners:\n  http: { address: \"127.0.0.1:{HTTP}\" }\nadmin: { address: \"127.0.0.1:{ADMIN}\" }\n";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One keep-alive HTTP/1.1 connection to a gateway (hyper client), reconnecting after an error.
struct Conn {
    port: u16,
    send: Option<SendRequest<Full<Bytes>>>,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Conn {
    fn new(port: u16) -> Conn {
        Conn { port, send: None }
    }

    async fn connect(port: u16) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).ok();
        let (send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(send)
    }

    /// GET `path` with extra headers; errors (connection lost, 15 s timeout) are returned, and the
    /// next call uses a new connection.
    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
        let r = tokio::time::timeout(Duration::from_secs(15), self.get_inner(path, headers))
            .await
            .unwrap_or_else(|_| Err("timed out after 15 s".into()));
        if r.is_err() {
            self.send = None;
        }
        r
    }

    async fn get_inner(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
        if self.send.as_ref().is_none_or(|s| s.is_closed()) {
            self.send = Some(Self::connect(self.port).await?);
        }
        let send = self.send.as_mut().unwrap();
        send.ready().await.map_err(|e| format!("not ready: {e}"))?;
        let mut req = Request::get(path).header("host", "127.0.0.1");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = send.send_request(req.body(Full::new(Bytes::new())).unwrap()).await.map_err(|e| format!("{e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok(Resp { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
    }

    async fn must_get(&mut self, path: &str) -> Resp {
        self.get(path, &[]).await.unwrap_or_else(|e| panic!("GET {path} on port {}: {e}", self.port))
    }
}

fn audit_events(gw: &Gw) -> Vec<Value> {
    std::fs::read_to_string(gw.dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}")))
        .collect()
}

/// Audit events are written by a background thread: wait (up to 15 s) until at least `n` are there.
async fn wait_audit(gw: &Gw, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ev = audit_events(gw);
        if ev.len() >= n || Instant::now() > deadline {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits a little longer and returns what the audit file then holds, to prove nothing more comes.
async fn settled_audit(gw: &Gw, n: usize) -> Vec<Value> {
    wait_audit(gw, n).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    audit_events(gw)
}

/// A throwaway `redis-server` on a free loopback port, no persistence, in its own temp dir; killed
/// (SIGKILL) on drop.
struct Redis {
    child: Option<std::process::Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let mut dir = tempfile::tempdir().unwrap();
        let mut last = String::new();
        // A port found free can be taken by a parallel test before redis binds it: try another.
        for _ in 0..10 {
            let mut r = Redis { child: None, port: free_port(), dir };
            match r.spawn() {
                Ok(()) => return r,
                Err(e) => {
                    last = e;
                    dir = std::mem::replace(&mut r.dir, tempfile::tempdir().unwrap());
                }
            }
        }
        panic!("redis-server did not start: {last}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts redis-server on `self.port` and waits until it answers PING.
    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let spawned = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not on PATH: these tests start their own Redis. Install it \
                 (`apt-get install redis-server`; scripts/test.sh does this through scripts/test-env.sh)"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server on port {} exited ({status}): {}",
                    self.port,
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            if ping(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("redis-server on port {} did not answer PING within 20 s", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the server vanishes without a goodbye, as in a crash.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port (the gateways' configured URL).
    fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running redis-server");
        self.spawn().unwrap_or_else(|e| panic!("restarting redis-server on the same port: {e}"));
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// Polls `GET path` until `done(resp)` holds (15 s at most); every response before must satisfy
/// `allowed_before`. Returns the satisfying response and how long it took.
async fn poll_until(
    c: &mut Conn,
    path: &str,
    what: &str,
    done: impl Fn(&Resp) -> bool,
    allowed_before: impl Fn(&Resp) -> bool,
) -> (Resp, Duration) {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(15) {
        match c.get(path, &[]).await {
            Ok(r) if done(&r) => return (r, start.elapsed()),
            Ok(r) => {
                assert!(allowed_before(&r), "while waiting for {what}: unexpected response {r:?}");
                last = Some(format!("{r:?}"));
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {what} within 15 s; last: {last:?}");
}

// ---------------------------------------------------------------------------------------------
// 1. Headers, body and audit of a limited request
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_requests_get_429_with_headers() {
    let b = Backend::start("b").await;
    // 3 per 60 s: T = 20 s. `burst: 2` (τ = 40 s) is what lets 3 requests through back-to-back:
    // with `burst: 0` only the first one passes (the `strict` route shows that). The 60 s period
    // keeps every rounded-up header value exact as long as the 4 requests take under 1 s.
    let cfg = format!(
        r#"{PLAIN}audit:
  file: audit.jsonl
upstreams:
  b: {{ endpoints: ["{ep}"] }}
routes:
  - name: strict
    match: {{ path: {{ exact: /strict }} }}
    upstream: b
    rate_limit:
      - {{ name: strict, limit: 3, period: 60s, burst: 0, key: [client_ip], store: local }}
  - name: api
    match: {{ path: {{ prefix: / }} }}
    upstream: b
    rate_limit:
      - {{ name: per-ip, limit: 3, period: 60s, burst: 2, key: [client_ip], store: local }}
"#,
        ep = b.endpoint()
    );
    let gw = Gw::start(&cfg).await;
    let mut c = Conn::new(gw.http);

    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(c.must_get("/things").await);
    }
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 429], "{got:?}");
    let policy = "\"per-ip\";q=3;w=60";
    // remaining counts down; t = seconds until the full burst is back: (k + 1) × T, rounded up.
    for (r, want) in got.iter().zip(["\"per-ip\";r=2;t=20", "\"per-ip\";r=1;t=40", "\"per-ip\";r=0;t=60"]) {
        assert_eq!(r.header("ratelimit-policy"), Some(policy), "{r:?}");
        assert_eq!(r.header("ratelimit"), Some(want), "{r:?}");
        assert_eq!(r.header("retry-after"), None, "{r:?}");
        assert_eq!(r.header("x-backend"), Some("b"), "allowed requests reach the upstream: {r:?}");
    }
    let limited = &got[3];
    // Next conforming request: TAT - τ = 60 s - 40 s = 20 s after the first, rounded up.
    assert_eq!(limited.header("retry-after"), Some("20"), "{limited:?}");
    assert_eq!(limited.header("ratelimit-policy"), Some(policy), "{limited:?}");
    assert_eq!(limited.header("ratelimit"), Some("\"per-ip\";r=0;t=60"), "{limited:?}");
    assert_eq!(limited.header("content-type"), Some("application/json"));
    assert_eq!(limited.header("x-backend"), None, "a limited request never reaches the upstream");
    let request_id = limited.header("x-request-id").unwrap().to_string();
    assert_eq!(request_id.len(), 32);
    assert_eq!(limited.json(), serde_json::json!({ "error": "rate limit exceeded", "request_id": request_id }));
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 3);

    // Exactly one audit event: the denial. Allowed requests on an unprotected route are not audited.
    let ev = settled_audit(&gw, 1).await;
    assert_eq!(ev.len(), 1, "{ev:#?}");
    let e = &ev[0];
    assert_eq!(e["decision"], "deny");
    assert_eq!(e["stage"], "rate_limit");
    assert_eq!(e["status"], 429);
    assert_eq!(e["route"], "api");
    assert_eq!(e["reason"], "rate limit per-ip exceeded");
    assert_eq!(e["request_id"], request_id.as_str());
    assert_eq!(e["method"], "GET");
    assert_eq!(e["path"], "/things");
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert_eq!(e["principal"], "Anonymous");

    // burst 0 is strict spacing: the second back-to-back request is limited.
    let r1 = c.must_get("/strict").await;
    let r2 = c.must_get("/strict").await;
    assert_eq!((r1.status, r2.status), (200, 429), "{r1:?} {r2:?}");
    assert_eq!(r1.header("ratelimit-policy"), Some("\"strict\";q=3;w=60"));
    assert_eq!(r1.header("ratelimit"), Some("\"strict\";r=0;t=20"));
    assert_eq!(r2.header("ratelimit"), Some("\"strict\";r=0;t=20"));
    assert_eq!(r2.header("retry-after"), Some("20"));
    let ev = settled_audit(&gw, 2).await;
    assert_eq!(ev.len(), 2, "{ev:#?}");
    assert_eq!(
        (&ev[1]["route"], &ev[1]["status"], &ev[1]["stage"]),
        (&"strict".into(), &429.into(), &"rate_limit".into())
    );
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 4);
}

// ---------------------------------------------------------------------------------------------
// 2. Accuracy under sustained overload
// ---------------------------------------------------------------------------------------------

/// Reference GCRA (the documented virtual-scheduling rule) over arrival offsets in µs.
fn gcra_accepts(arrivals_us: &[u64], t_us: u64, tau_us: u64) -> usize {
    let mut tat = 0u64;
    let mut accepted = 0;
    for &now in arrivals_us {
        let cur = tat.max(now);
        if cur - now <= tau_us {
            tat = cur + t_us;
            accepted += 1;
        }
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accuracy_at_twice_the_rate() {
    const LIMIT: u64 = 20; // per second: T = 50 ms
    const BURST: u64 = 5; // τ = 250 ms
    const RATE: u64 = 40; // requests per second sent
    const SECS: u64 = 10;
    const TOTAL: usize = (RATE * SECS) as usize;
    const CONNS: usize = 16;
    let b = Backend::start("b").await;
    let cfg = format!(
        r#"{PLAIN}upstreams:
  b: {{ endpoints: ["{ep}"] }}
routes:
  - name: api
    match: {{ path: {{ prefix: / }} }}
    upstream: b
    rate_limit:
      - {{ name: per-ip, limit: {LIMIT}, period: 1s, burst: {BURST}, key: [client_ip], store: local }}
"#,
        ep = b.endpoint()
    );
    let gw = Gw::start(&cfg).await;

    // Keep-alive connections opened up front; a free one takes each scheduled request, so a slow
    // response never delays the schedule.
    let (tx, rx) = tokio::sync::mpsc::channel::<usize>(TOTAL);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let epoch = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONNS {
        let mut conn = Conn::new(gw.http);
        conn.send = Some(Conn::connect(gw.http).await.unwrap());
        let rx = rx.clone();
        workers.spawn(async move {
            let mut out = Vec::new(); // (index, sent at µs since epoch, status or error)
            loop {
                let job = rx.lock().await.recv().await;
                let Some(i) = job else { return out };
                let sent = u64::try_from(epoch.elapsed().as_micros()).unwrap();
                let r = conn.get("/x", &[]).await.map(|r| r.status);
                out.push((i, sent, r));
            }
        });
    }
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..TOTAL {
        tick.tick().await;
        tx.send(i).await.unwrap();
    }
    drop(tx);
    let mut results = Vec::with_capacity(TOTAL);
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(w) = workers.join_next().await {
            results.extend(w.unwrap());
        }
    })
    .await;
    assert!(all.is_ok(), "requests did not finish within 60 s of the schedule");
    assert_eq!(results.len(), TOTAL);
    results.sort_by_key(|r| r.1);

    let errors: Vec<_> = results.iter().filter_map(|r| r.2.as_ref().err()).collect();
    assert!(errors.is_empty(), "{} requests failed, e.g. {:?}", errors.len(), errors.first());
    let accepted = results.iter().filter(|r| r.2 == Ok(200)).count();
    let limited = results.iter().filter(|r| r.2 == Ok(429)).count();
    assert_eq!(accepted + limited, TOTAL, "only 200 and 429 expected");

    let t_us = 1_000_000 / LIMIT;
    let tau_us = t_us * BURST;
    let first = results[0].1;
    let arrivals: Vec<u64> = results.iter().map(|r| r.1 - first).collect();
    let window_us = arrivals[TOTAL - 1];
    // The documented count for evenly spaced overload over the window the client really covered,
    // and the GCRA replayed over the exact instants the client sent at (equal unless it stalled).
    let nominal = (window_us / t_us + BURST + 1) as usize;
    let replayed = gcra_accepts(&arrivals, t_us, tau_us);
    let ideal = (LIMIT * SECS + BURST) as usize; // rate × time + burst = floor(9.975 s / T) + burst + 1
    let tolerance = replayed as f64 * 0.02;
    let msg = format!(
        "accepted {accepted} of {TOTAL} (limited {limited}); expected {replayed} by GCRA over the actual send \
         times (window {:.3} s → floor(W/T)+burst+1 = {nominal}; ideal schedule {ideal}); tolerance ±{tolerance:.1}",
        window_us as f64 / 1e6
    );
    eprintln!("accuracy_at_twice_the_rate: {msg}");
    assert!((accepted as f64 - replayed as f64).abs() <= tolerance, "{msg}");
    // The schedule itself was kept: the client covered ~10 s and did not stall past τ.
    assert!((ideal as f64 - replayed as f64).abs() <= ideal as f64 * 0.02, "client schedule was off: {msg}");
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), accepted, "{msg}");
}

// ---------------------------------------------------------------------------------------------
// 3. One limit shared through Redis by two gateways
// ---------------------------------------------------------------------------------------------

/// A gateway whose `/api` route has a Redis-stored limit, plus a `/warm` route with its own
/// generous Redis limit used to wait until the (lazily connected) store answers.
fn redis_config(b: &Backend, redis: &Redis, on_error: &str, limit: &str) -> String {
    format!(
        r#"{PLAIN}audit:
  file: audit.jsonl
rate_limiting:
  redis: {{ url: "{url}", timeout: 2s, on_error: {on_error} }}
upstreams:
  b: {{ endpoints: ["{ep}"] }}
routes:
  - name: warm
    match: {{ path: {{ exact: /warm }} }}
    upstream: b
    rate_limit:
      - {{ name: warm, limit: 1000, period: 1s, burst: 1000, key: [route], store: redis }}
  - name: api
    match: {{ path: {{ prefix: /api }} }}
    upstream: b
    rate_limit:
      - {limit}
"#,
        url = redis.url(),
        ep = b.endpoint()
    )
}

/// Waits until the gateway's Redis store answers (a 200 carrying the `RateLimit` header).
async fn wait_redis_ok(c: &mut Conn, path: &str) -> Duration {
    poll_until(
        c,
        path,
        "a Redis-checked 200",
        |r| r.status == 200 && r.header("ratelimit").is_some(),
        |r| matches!(r.status, 200 | 503),
    )
    .await
    .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_shared_limit_across_two_gateways() {
    let redis = Redis::start();
    let b = Backend::start("b").await;
    // 10 per 600 s, burst 9 (T = 60 s, τ = 540 s): 10 back-to-back, the next one a minute later.
    // (burst 0 would let through one request per T, not 10.)
    let limit = "{ name: shared, limit: 10, period: 600s, burst: 9, key: [route], store: redis }";
    let g1 = Gw::start(&redis_config(&b, &redis, "fail_closed", limit)).await;
    let g2 = Gw::start(&redis_config(&b, &redis, "fail_closed", limit)).await;
    let (mut c1, mut c2) = (Conn::new(g1.http), Conn::new(g2.http));
    wait_redis_ok(&mut c1, "/warm").await;
    wait_redis_ok(&mut c2, "/warm").await;
    let hits_before = b.hits.load(std::sync::atomic::Ordering::SeqCst);

    let mut statuses = Vec::new();
    let mut remaining = Vec::new();
    for i in 0..16 {
        let c = if i % 2 == 0 { &mut c1 } else { &mut c2 };
        let r = c.must_get("/api/x").await;
        if r.status == 200 {
            assert_eq!(r.header("ratelimit-policy"), Some("\"shared\";q=10;w=600"), "{r:?}");
            remaining.push(r.header("ratelimit").unwrap().split(';').nth(1).unwrap().to_string());
        } else {
            assert_eq!(r.status, 429, "{r:?}");
            let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "Retry-After {retry}: {r:?}");
            assert_eq!(r.json()["error"], "rate limit exceeded");
        }
        statuses.push(r.status);
    }
    let mut want = vec![200u16; 10];
    want.extend([429; 6]);
    assert_eq!(statuses, want, "10 accepted in total across both gateways, then 429");
    // One bucket: the remaining count goes down across the two processes.
    let want_remaining: Vec<String> = (0..10).rev().map(|r| format!("r={r}")).collect();
    assert_eq!(remaining, want_remaining);
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst) - hits_before, 10);
    // 3 denials on each gateway, each audited where it happened.
    for g in [&g1, &g2] {
        let ev = settled_audit(g, 3).await;
        assert_eq!(ev.len(), 3, "{ev:#?}");
        assert!(ev.iter().all(|e| e["stage"] == "rate_limit" && e["status"] == 429), "{ev:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Redis goes away and comes back
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_loss_fail_closed_and_fail_open() {
    use std::sync::atomic::Ordering::SeqCst;
    let mut redis = Redis::start();
    let (bc, bo) = (Backend::start("closed").await, Backend::start("open").await);
    let limit = "{ name: high, limit: 10000, period: 1s, burst: 1000, key: [client_ip], store: redis }";
    let closed = Gw::start(&redis_config(&bc, &redis, "fail_closed", limit)).await;
    let open = Gw::start(&redis_config(&bo, &redis, "fail_open", limit)).await;
    let (mut cc, mut co) = (Conn::new(closed.http), Conn::new(open.http));

    // Redis up: both serve 200 with the limit's headers (the check really went to Redis).
    wait_redis_ok(&mut cc, "/api/up").await;
    wait_redis_ok(&mut co, "/api/up").await;
    for c in [&mut cc, &mut co] {
        let r = c.must_get("/api/up").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-policy"), Some("\"high\";q=10000;w=1"));
    }
    assert!(audit_events(&closed).is_empty() && audit_events(&open).is_empty(), "nothing to audit yet");

    redis.kill();

    // fail_closed: the very first request after the loss gets 503 with the JSON body, and the
    // upstream is never called.
    let before = bc.hits.load(SeqCst);
    let (r, took) =
        poll_until(&mut cc, "/api/down", "503 from the fail-closed gateway", |r| r.status == 503, |_| false).await;
    let id = r.header("x-request-id").unwrap().to_string();
    assert_eq!(r.json(), serde_json::json!({ "error": "rate limiting is unavailable", "request_id": id }));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-backend"), None);
    assert!(took < Duration::from_secs(5), "fail closed only after {took:?}");
    let closed_took = took;
    let r = cc.must_get("/api/down").await;
    assert_eq!(r.status, 503, "still closed: {r:?}");
    assert_eq!(bc.hits.load(SeqCst), before, "a 503 never reaches the upstream");

    // fail_open: 200 from the upstream, without RateLimit headers (nothing was counted).
    let before = bo.hits.load(SeqCst);
    let (r, took) = poll_until(
        &mut co,
        "/api/down",
        "fail-open 200 without RateLimit headers",
        |r| r.status == 200 && r.header("ratelimit").is_none(),
        |_| false,
    )
    .await;
    assert_eq!(bo.hits.load(SeqCst), before + 1, "the request went upstream");
    assert_eq!(r.header("x-backend"), Some("open"), "the upstream answered");
    assert_eq!(r.json()["uri"], "/api/down");
    assert_eq!(r.header("ratelimit-policy"), None);
    assert!(took < Duration::from_secs(5), "fail open only after {took:?}");
    let open_took = took;

    // Each says so in its audit file.
    let ev = wait_audit(&closed, 1).await;
    let e = ev.iter().find(|e| e["status"] == 503).unwrap_or_else(|| panic!("no 503 event: {ev:#?}"));
    assert_eq!((&e["decision"], &e["stage"], &e["route"]), (&"deny".into(), &"rate_limit".into(), &"api".into()));
    let reason = e["reason"].as_str().unwrap();
    assert!(reason.starts_with("rate limit store unavailable") && reason.ends_with("failed closed"), "{reason}");
    assert!(!reason.contains("127.0.0.1"), "no Redis address in the audit event: {reason}");
    let ev = wait_audit(&open, 1).await;
    let e = ev.iter().find(|e| e["status"] == 200).unwrap_or_else(|| panic!("no fail-open event: {ev:#?}"));
    assert_eq!((&e["decision"], &e["stage"], &e["route"]), (&"allow".into(), &"rate_limit".into(), &"api".into()));
    let reason = e["reason"].as_str().unwrap();
    assert!(reason.starts_with("rate limit store unavailable") && reason.ends_with("failed open"), "{reason}");
    for (g, status) in [(&closed, 503), (&open, 200)] {
        let ev = audit_events(g);
        assert!(ev.iter().all(|e| e["status"] == status && e["stage"] == "rate_limit"), "{ev:#?}");
    }

    // Redis back on the same port: both recover by themselves within a few seconds.
    redis.restart();
    let took_closed = wait_redis_ok(&mut cc, "/api/back").await;
    let took_open = wait_redis_ok(&mut co, "/api/back").await;
    eprintln!("redis_loss: fail closed after the kill in {closed_took:?}, open in {open_took:?}; recovered in {took_closed:?} (closed) / {took_open:?} (open)");
    assert!(
        took_closed < Duration::from_secs(5) && took_open < Duration::from_secs(5),
        "recovery took {took_closed:?} (fail_closed) and {took_open:?} (fail_open)"
    );
    for c in [&mut cc, &mut co] {
        let r = c.must_get("/api/back").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("ratelimit-policy"), Some("\"high\";q=10000;w=1"));
    }
}

/// A gateway that starts while Redis is down fails closed, then connects by itself once Redis is
/// up (it retries the first connection at most once a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_startup_connects_later() {
    use std::sync::atomic::Ordering::SeqCst;
    let mut redis = Redis { child: None, port: free_port(), dir: tempfile::tempdir().unwrap() };
    let b = Backend::start("b").await;
    let limit = "{ name: high, limit: 10000, period: 1s, burst: 1000, key: [client_ip], store: redis }";
    let gw = Gw::start(&redis_config(&b, &redis, "fail_closed", limit)).await;
    let mut c = Conn::new(gw.http);
    for _ in 0..3 {
        let r = c.must_get("/api/x").await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.json()["error"], "rate limiting is unavailable");
    }
    assert_eq!(b.hits.load(SeqCst), 0);
    redis.restart();
    let took = wait_redis_ok(&mut c, "/api/x").await;
    assert!(took < Duration::from_secs(5), "connected only after {took:?}");
    let ev = audit_events(&gw);
    assert!(ev.len() >= 3 && ev.iter().all(|e| e["status"] == 503), "{ev:#?}");
}
