//! End to end over real sockets: a small hyper server stands in for the audit server. It checks
//! the wire format (path, content type, bearer token, every line a whole `AuditRecord`), records
//! the ids of every request it answers, deduplicates like the real one, and can be stopped,
//! restarted on the same port, or told to fail the next requests with a status.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use palisade_core::audit::{AuditEvent, AuditRecord, AuditSink, Decision, Stage};
use palisade_core::Secret;
use palisade_shipper::{ShipperConfig, ShippingSink, Stats};

const TOKEN: &str = "test-token-Zq8";

#[derive(Debug, Clone)]
struct Req {
    status: u16,
    ids: Vec<String>,
    body_len: usize,
}

#[derive(Default)]
struct Log {
    requests: Vec<Req>,
    /// Ids in requests answered 2xx, in arrival order, duplicates included.
    ok_ids: Vec<String>,
    seen: HashSet<String>,
    duplicates: u64,
    /// Statuses to answer the next requests with, before any is accepted.
    fail: VecDeque<u16>,
    bad_lines: u64,
    bad_requests: u64,
}

struct TestServer {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    async fn start() -> TestServer {
        let mut s = TestServer::down().await;
        s.up().await;
        s
    }

    /// A server that is not listening yet: its port is taken then released.
    async fn down() -> TestServer {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        TestServer { addr, log: Arc::default(), task: None }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let log = self.log.clone();
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let log = log.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, log.clone()));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        }));
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap()
    }
}

async fn handle(req: Request<Incoming>, log: Arc<Mutex<Log>>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let reply =
        |status: u16, body: String| Ok(Response::builder().status(status).body(Full::new(Bytes::from(body))).unwrap());
    let ok_head = req.method() == hyper::Method::POST
        && req.uri().path() == "/audit/v1/events"
        && req.headers().get("content-type").map(|v| v.as_bytes()) == Some(b"application/x-ndjson")
        && req.headers().get("authorization").map(|v| v.as_bytes()) == Some(format!("Bearer {TOKEN}").as_bytes());
    let body = req.into_body().collect().await?.to_bytes();
    let mut log = log.lock().unwrap();
    if !ok_head {
        log.bad_requests += 1;
        return reply(401, r#"{"error":"unauthorized"}"#.into());
    }
    let mut ids = Vec::new();
    for line in body.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<AuditRecord>(line) {
            Ok(r) => ids.push(r.id),
            Err(_) => {
                log.bad_lines += 1;
                return reply(400, r#"{"error":"bad line"}"#.into());
            }
        }
    }
    if !body.ends_with(b"\n") {
        log.bad_lines += 1;
        return reply(400, r#"{"error":"unterminated line"}"#.into());
    }
    if let Some(status) = log.fail.pop_front() {
        log.requests.push(Req { status, ids, body_len: body.len() });
        return reply(status, format!("failing on purpose; you sent Bearer {TOKEN}"));
    }
    let (mut accepted, mut duplicates) = (0u64, 0u64);
    for id in &ids {
        if log.seen.insert(id.clone()) {
            accepted += 1;
        } else {
            duplicates += 1;
        }
    }
    log.duplicates += duplicates;
    log.ok_ids.extend(ids.iter().cloned());
    log.requests.push(Req { status: 200, ids, body_len: body.len() });
    reply(200, format!(r#"{{"accepted":{accepted},"duplicates":{duplicates}}}"#))
}

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        time: "2026-11-26T03:00:00.000Z".into(),
        source: "gateway".into(),
        service: None,
        request_id: format!("req-{n}"),
        decision: Decision::Deny,
        stage: Stage::Authz,
        reason: "no policy allows".into(),
        principal: "User::\"alice\"".into(),
        client_id: Some("billing".into()),
        auth_method: Some("jwt".into()),
        route: "api".into(),
        method: "POST".into(),
        path: "/orders".into(),
        client_ip: "127.0.0.1".into(),
        policy_ids: vec!["p1".into()],
        status: 403,
        latency_ms: 1.25,
        waf: Vec::new(),
    }
}

fn config(server: &TestServer, dir: &Path) -> ShipperConfig {
    let mut c = ShipperConfig::new(server.url(), Secret::from(TOKEN.as_bytes().to_vec()), dir);
    c.batch_max_events = 100;
    c.retry_initial = Duration::from_millis(10);
    c.retry_max = Duration::from_millis(100);
    c.flush_interval = Duration::from_millis(10);
    c.request_timeout = Duration::from_secs(2);
    c
}

fn ids(instance: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<String> {
    seqs.map(|n| format!("{instance}-{n}")).collect()
}

async fn until(sink: &ShippingSink, what: &str, cond: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = sink.stats();
        if cond(&s) {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .collect();
    v.sort();
    v
}

fn spool_lines(dir: &Path) -> u64 {
    segments(dir).iter().map(|p| std::fs::read(p).unwrap().iter().filter(|&&b| b == b'\n').count() as u64).sum()
}

fn cursor(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("cursor")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_arrive_exactly_once_in_order() {
    let server = TestServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let sink = ShippingSink::open(config(&server, &dir)).unwrap();
    let instance = sink.instance_id().to_owned();
    assert_eq!(instance.len(), 32);
    assert!(instance.bytes().all(|b| b.is_ascii_hexdigit()));
    for n in 1..=1000 {
        sink.record(event(n));
    }
    until(&sink, "1000 acknowledged", |s| s.acknowledged == 1000).await;
    let stats = sink.shutdown(Duration::from_secs(5)).await;
    {
        let log = server.log();
        assert_eq!(log.ok_ids, ids(&instance, 1..=1000));
        assert_eq!((log.duplicates, log.bad_lines, log.bad_requests), (0, 0, 0));
        assert!(log.requests.iter().all(|r| r.status == 200 && !r.ids.is_empty() && r.ids.len() <= 100));
    }
    assert_eq!((stats.spooled, stats.sent, stats.acknowledged, stats.dropped, stats.pending), (1000, 1000, 1000, 0, 0));
    assert_eq!((stats.server_duplicates, stats.skipped_lines, stats.last_error), (0, 0, None));
    // Shipped from memory: the spool was only appended to, never read back.
    assert_eq!((stats.read_from_spool, stats.memory_overflows), (0, 0));
    assert_eq!(spool_lines(&dir), 1000);
    assert_eq!(cursor(&dir), "1000\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::read_to_string(dir.join("instance")).unwrap(), format!("{instance}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_nothing_and_duplicates_nothing() {
    let mut server = TestServer::down().await;
    let tmp = tempfile::tempdir().unwrap();
    let sink = ShippingSink::open(config(&server, tmp.path())).unwrap();
    let instance = sink.instance_id().to_owned();
    for n in 1..=500 {
        sink.record(event(n));
    }
    let s = until(&sink, "spooled and a failed attempt", |s| s.spooled == 500 && s.last_error.is_some()).await;
    assert_eq!((s.acknowledged, s.pending, s.dropped), (0, 500, 0));
    let err = s.last_error.unwrap();
    assert!(err.starts_with(&format!("audit server {}/audit/v1/events: ", server.url())), "{err}");
    server.up().await;
    until(&sink, "500 acknowledged", |s| s.acknowledged == 500).await;
    {
        let log = server.log();
        assert_eq!(log.ok_ids, ids(&instance, 1..=500));
        assert_eq!(log.duplicates, 0);
        let sizes: Vec<usize> = log.requests.iter().map(|r| r.ids.len()).collect();
        // The first batch may have been read before all 500 were durable; every later one is full.
        assert_eq!(sizes.iter().sum::<usize>(), 500);
        assert!(sizes.iter().skip(1).rev().skip(1).all(|&n| n == 100), "{sizes:?}");
    }

    // A second outage, this time with a kept-alive connection that dies under the client.
    server.stop();
    for n in 501..=600 {
        sink.record(event(n));
    }
    let s = until(&sink, "spooled during the second outage", |s| s.spooled == 600).await;
    assert_eq!(s.acknowledged, 500);
    server.up().await;
    let s = until(&sink, "600 acknowledged", |s| s.acknowledged == 600).await;
    assert_eq!((s.pending, s.dropped, s.server_duplicates), (0, 0, 0));
    let log = server.log();
    assert_eq!(log.ok_ids, ids(&instance, 1..=600));
    assert_eq!(log.duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resends_what_was_not_acknowledged_and_continues_the_ids() {
    let mut server = TestServer::down().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = ShippingSink::open(config(&server, dir)).unwrap();
    let instance = first.instance_id().to_owned();
    for n in 1..=500 {
        first.record(event(n));
    }
    until(&first, "500 spooled", |s| s.spooled == 500).await;
    // A second shipper on the same spool is refused while the first has it.
    let err = ShippingSink::open(config(&server, dir)).unwrap_err().to_string();
    assert!(err.contains("in use by another shipper"), "{err}");
    drop(first); // no shutdown: as if the process died

    let second = ShippingSink::open(config(&server, dir)).unwrap();
    assert_eq!(second.instance_id(), instance);
    assert_eq!(second.stats().pending, 500);
    for n in 501..=600 {
        second.record(event(n));
    }
    until(&second, "100 more spooled", |s| s.spooled == 100).await;
    server.up().await;
    let s = until(&second, "600 acknowledged", |s| s.acknowledged == 600).await;
    assert_eq!((s.pending, s.dropped), (0, 0));
    // Recovery reads the spool: all 600 were durable before the server came up.
    assert_eq!((s.read_from_spool, s.memory_overflows), (600, 0));
    {
        let log = server.log();
        assert_eq!(log.ok_ids, ids(&instance, 1..=600));
        assert_eq!(log.duplicates, 0);
        assert_eq!(log.requests.iter().map(|r| r.ids.len()).collect::<Vec<_>>(), vec![100; 6]);
    }
    assert_eq!(cursor(dir), "600\n");
    // Everything acknowledged: only the segment still open for writing is left.
    assert_eq!(segments(dir).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_are_not_resent_after_a_restart() {
    let server = TestServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let first = ShippingSink::open(config(&server, tmp.path())).unwrap();
    let instance = first.instance_id().to_owned();
    for n in 1..=300 {
        first.record(event(n));
    }
    until(&first, "300 acknowledged", |s| s.acknowledged == 300).await;
    drop(first);
    let second = ShippingSink::open(config(&server, tmp.path())).unwrap();
    assert_eq!(second.stats().pending, 0);
    for n in 301..=310 {
        second.record(event(n));
    }
    until(&second, "10 acknowledged", |s| s.acknowledged == 10).await;
    let log = server.log();
    assert_eq!(log.ok_ids, ids(&instance, 1..=310));
    assert_eq!(log.duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batches_are_resent_unchanged_until_acknowledged() {
    let server = TestServer::start().await;
    server.log().fail = VecDeque::from([500, 500, 401, 429]);
    let tmp = tempfile::tempdir().unwrap();
    let sink = ShippingSink::open(config(&server, tmp.path())).unwrap();
    let instance = sink.instance_id().to_owned();
    for n in 1..=300 {
        sink.record(event(n));
    }
    let s = until(&sink, "300 acknowledged", |s| s.acknowledged == 300).await;
    let log = server.log();
    let statuses: Vec<u16> = log.requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses.get(..5), Some(&[500, 500, 401, 429, 200][..]));
    let first = &log.requests[0];
    for retry in &log.requests[1..5] {
        assert_eq!((&retry.ids, retry.body_len), (&first.ids, first.body_len));
    }
    assert_eq!(log.ok_ids, ids(&instance, 1..=300));
    assert_eq!((log.duplicates, s.server_duplicates), (0, 0));
    assert_eq!(s.sent, 300 + 4 * first.ids.len() as u64);
    // The server echoed the token in its error body: the shipper's error does not repeat it.
    let err = s.last_error.unwrap();
    assert!(err.contains("HTTP 429: failing on purpose; you sent Bearer [redacted]") && !err.contains(TOKEN), "{err}");
}

/// With the server down, a shipper spools events 1..=10 and stops: its instance id and the spool segment.
async fn spool_ten_while_down(server: &TestServer, dir: &Path) -> (String, std::path::PathBuf) {
    let first = ShippingSink::open(config(server, dir)).unwrap();
    let instance = first.instance_id().to_owned();
    for n in 1..=10 {
        first.record(event(n));
    }
    until(&first, "10 spooled", |s| s.spooled == 10).await;
    drop(first);
    (instance, segments(dir).pop().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_line_is_cut_and_never_sent() {
    let mut server = TestServer::down().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (instance, seg) = spool_ten_while_down(&server, dir).await;
    let whole = std::fs::read(&seg).unwrap();
    let torn = format!(r#"{{"id":"{instance}-11","time":"2026-11-26T03:00"#);
    std::fs::write(&seg, [whole.as_slice(), torn.as_bytes()].concat()).unwrap();

    let second = ShippingSink::open(config(&server, dir)).unwrap();
    assert_eq!(std::fs::read(&seg).unwrap(), whole);
    assert_eq!((second.stats().pending, second.stats().torn_bytes_cut), (10, torn.len() as u64));
    second.record(event(11));
    until(&second, "1 spooled", |s| s.spooled == 1).await;
    server.up().await;
    let s = until(&second, "11 acknowledged", |s| s.acknowledged == 11).await;
    let log = server.log();
    assert_eq!(log.ok_ids, ids(&instance, 1..=11));
    assert_eq!((log.bad_lines, log.duplicates, s.skipped_lines), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_drops_and_counts_then_recovers() {
    let mut server = TestServer::down().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut c = config(&server, dir);
    c.max_spool_bytes = 64 * 1024;
    let sink = ShippingSink::open(c).unwrap();
    let instance = sink.instance_id().to_owned();
    for n in 1..=1000 {
        sink.record(event(n));
    }
    let s = until(&sink, "all 1000 spooled or dropped", |s| s.spooled + s.dropped == 1000).await;
    let line = format!(
        "{}\n",
        serde_json::to_string(&AuditRecord { id: format!("{instance}-100"), event: event(1) }).unwrap()
    );
    assert!(s.spooled > 100 && s.spooled < 1000, "{s:?}");
    assert_eq!((s.dropped_spool_full, s.dropped, s.dropped_queue_full), (1000 - s.spooled, 1000 - s.spooled, 0));
    // On disk, a line has a checksum prefix of 9 bytes.
    assert!(s.spool_bytes <= 64 * 1024 && s.spool_bytes + line.len() as u64 + 9 > 64 * 1024, "{s:?}");
    assert_eq!(spool_lines(dir), s.spooled);
    // Dropped events take no id: the ids stay contiguous.
    let spooled = s.spooled;
    server.up().await;
    until(&sink, "spooled acknowledged", |s| s.acknowledged == spooled).await;
    // Acknowledged segments were deleted, so there is room again.
    for n in 1..=10 {
        sink.record(event(n));
    }
    let s = until(&sink, "10 more acknowledged", |s| s.acknowledged == spooled + 10).await;
    assert_eq!(s.dropped, 1000 - spooled);
    assert!(s.spool_bytes < 16 * 1024, "{s:?}");
    assert_eq!(server.log().ok_ids, ids(&instance, 1..=spooled + 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_without_blocking() {
    let server = TestServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(&server, tmp.path());
    c.queue_capacity = 1;
    c.flush_interval = Duration::from_secs(3600); // the writer sleeps: only shutdown wakes it
    let sink = ShippingSink::open(c).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // past the writer's first (empty) round
    for n in 1..=100 {
        sink.record(event(n));
    }
    assert_eq!(sink.stats().dropped_queue_full, 99);
    let s = sink.shutdown(Duration::from_secs(5)).await;
    assert_eq!((s.spooled, s.acknowledged, s.dropped, s.pending), (1, 1, 99, 0));
    sink.record(event(101));
    assert_eq!(sink.stats().dropped_queue_full, 100);
    assert_eq!(server.log().ok_ids, ids(sink.instance_id(), 1..=1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_and_sends_or_leaves_the_rest_for_the_next_start() {
    let mut server = TestServer::down().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(&server, tmp.path());
    c.flush_interval = Duration::from_secs(3600);
    let sink = ShippingSink::open(c.clone()).unwrap();
    let instance = sink.instance_id().to_owned();
    for n in 1..=50 {
        sink.record(event(n));
    }
    // Server down: shutdown writes all 50 to the spool and gives up sending after the timeout.
    let started = std::time::Instant::now();
    let s = sink.shutdown(Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!((s.spooled, s.acknowledged, s.pending), (50, 0, 50));
    drop(sink);
    server.up().await;
    let sink = ShippingSink::open(c).unwrap();
    for n in 51..=60 {
        sink.record(event(n));
    }
    // Server up: shutdown flushes the 10 queued events and sends all 60.
    let s = sink.shutdown(Duration::from_secs(5)).await;
    assert_eq!((s.spooled, s.acknowledged, s.pending), (10, 60, 0));
    assert_eq!(server.log().ok_ids, ids(&instance, 1..=60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_respect_the_byte_limit() {
    let mut server = TestServer::down().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(&server, tmp.path());
    c.batch_max_bytes = 4096;
    let sink = ShippingSink::open(c).unwrap();
    for n in 1..=100 {
        sink.record(event(n));
    }
    until(&sink, "100 spooled", |s| s.spooled == 100).await;
    server.up().await;
    until(&sink, "100 acknowledged", |s| s.acknowledged == 100).await;
    let log = server.log();
    assert_eq!(log.ok_ids, ids(sink.instance_id(), 1..=100));
    assert!(log.requests.len() > 2);
    let mut next = 1u64;
    for (i, r) in log.requests.iter().enumerate() {
        assert!(r.body_len <= 4096, "{}", r.body_len);
        next += r.ids.len() as u64;
        if i + 1 < log.requests.len() {
            // As full as the limit allows: the next record would not have fitted.
            let record = AuditRecord { id: format!("{}-{next}", sink.instance_id()), event: event(next) };
            let next_len = serde_json::to_string(&record).unwrap().len() + 1;
            assert!(r.body_len + next_len > 4096, "{} + {next_len}", r.body_len);
        }
    }
}

#[test]
fn open_outside_a_runtime_or_with_a_bad_url_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let c = ShipperConfig::new("http://127.0.0.1:9", Secret::from(TOKEN.as_bytes().to_vec()), tmp.path());
    assert_eq!(
        ShippingSink::open(c).unwrap_err().to_string(),
        "the audit shipper must be started inside a tokio runtime"
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _g = rt.enter();
    let c = ShipperConfig::new("ftp://x", Secret::from(TOKEN.as_bytes().to_vec()), tmp.path());
    let err = ShippingSink::open(c).unwrap_err().to_string();
    assert_eq!(err, "audit shipper configuration: server URL \"ftp://x\" must start with http:// or https://");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_memory_queue_falls_back_to_the_spool_and_back() {
    let mut server = TestServer::down().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(&server, tmp.path());
    c.max_memory_bytes = 200 * 1024;
    let sink = ShippingSink::open(c).unwrap();
    let instance = sink.instance_id().to_owned();
    let line =
        serde_json::to_string(&AuditRecord { id: format!("{instance}-500"), event: event(500) }).unwrap().len() + 1;
    // The sender starts on the (empty) spool; events recorded before it finds it empty would be read
    // from the spool too, which is right but not what this test is about.
    until(&sink, "the sender shipping from memory", |s| !s.reading_spool).await;
    // ~400 KB over many ticks while the server is down: more than the memory queue holds.
    for n in 1..=1000 {
        sink.record(event(n));
        if n % 100 == 0 {
            until(&sink, "spooled", |s| s.spooled == n).await;
        }
    }
    let s = sink.stats();
    assert!(s.memory_overflows >= 1, "{s:?}");
    server.up().await;
    let s = until(&sink, "1000 acknowledged", |s| s.acknowledged == 1000).await;
    // The chunks queued before the overflow (the oldest) stay in memory and are shipped from
    // there: every whole group of 100 that fits in 200 KiB; only the rest is read back.
    let kept = (200 * 1024 / line) as u64 / 100 * 100;
    assert!(kept >= 500, "{line}");
    assert!(s.read_from_spool > 0 && s.read_from_spool <= 1000 - kept, "{s:?}");
    assert_eq!((s.dropped, s.pending, s.server_duplicates, s.skipped_lines), (0, 0, 0, 0));
    // Caught up: new events go from memory again.
    let read = s.read_from_spool;
    for n in 1001..=1100 {
        sink.record(event(n));
    }
    let s = until(&sink, "1100 acknowledged", |s| s.acknowledged == 1100).await;
    assert_eq!(s.read_from_spool, read);
    let log = server.log();
    assert_eq!(log.ok_ids, ids(&instance, 1..=1100));
    assert_eq!((log.duplicates, log.bad_lines), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_spool_line_is_skipped_and_counted_on_recovery() {
    let mut server = TestServer::down().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (instance, seg) = spool_ten_while_down(&server, dir).await;
    let text = std::fs::read_to_string(&seg).unwrap();
    // Line 5 is no longer JSON; line 7 still is, with a different request id: both are damaged.
    let damaged: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| match i {
            4 => l.replace("\"id\"", "\"id"),
            6 => l.replace("req-7", "req-8"),
            _ => l.to_owned(),
        })
        .collect();
    assert_ne!(damaged[6], text.lines().nth(6).unwrap());
    std::fs::write(&seg, damaged.join("\n") + "\n").unwrap();

    let second = ShippingSink::open(config(&server, dir)).unwrap();
    server.up().await;
    let s = until(&second, "10 acknowledged (two of them skipped)", |s| s.skipped_lines == 2 && s.pending == 0).await;
    assert_eq!((s.acknowledged, s.read_from_spool), (8, 8));
    let log = server.log();
    let want: Vec<String> =
        ids(&instance, 1..=10).into_iter().filter(|id| !id.ends_with("-5") && !id.ends_with("-7")).collect();
    assert_eq!(log.ok_ids, want);
    assert_eq!((log.bad_lines, log.bad_requests), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_format_spool_ships_exactly_once_after_an_upgrade() {
    let mut server = TestServer::down().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let instance = ShippingSink::open(config(&server, dir)).unwrap().instance_id().to_owned();
    // What a shipper before checksums left: plain JSON lines, seqs 1..=20, 1..=5 acknowledged.
    let old: String = (1..=20)
        .map(|n| serde_json::to_string(&AuditRecord { id: format!("{instance}-{n}"), event: event(n) }).unwrap() + "\n")
        .collect();
    std::fs::write(dir.join("seg-00000000000000000001.ndjson"), old).unwrap();
    std::fs::write(dir.join("cursor"), "5\n").unwrap();

    let sink = ShippingSink::open(config(&server, dir)).unwrap();
    assert_eq!(sink.stats().pending, 15);
    for n in 21..=30 {
        sink.record(event(n));
    }
    until(&sink, "10 spooled", |s| s.spooled == 10).await;
    server.up().await;
    let s = until(&sink, "25 acknowledged", |s| s.acknowledged == 25).await;
    assert_eq!((s.pending, s.dropped, s.skipped_lines, s.read_from_spool), (0, 0, 0, 25));
    let s = sink.shutdown(Duration::from_secs(5)).await;
    assert_eq!(s.pending, 0);
    drop(sink);
    // New events went to a checksummed segment; a restart sends only what is new.
    assert!(segments(dir).iter().any(|p| p.to_str().unwrap().ends_with("seg-00000000000000000021.spool")));
    let sink = ShippingSink::open(config(&server, dir)).unwrap();
    sink.record(event(31));
    until(&sink, "1 acknowledged", |s| s.acknowledged == 1).await;
    let log = server.log();
    assert_eq!(log.ok_ids, ids(&instance, 6..=31));
    assert_eq!((log.duplicates, log.bad_lines), (0, 0));
}
