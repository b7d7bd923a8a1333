use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode, Uri};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// What the test upstream does after answering a request on a connection.
#[derive(Clone, Copy, PartialEq)]
enum After {
    /// Wait for the next request (HTTP/1.1 keep-alive).
    KeepAlive,
    /// Close the connection `ms` after the response, without saying so in the response.
    CloseAfterMs(u64),
    /// Wait for the client to close; report how long that took.
    AwaitClose,
}

struct Upstream {
    addr: SocketAddr,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// One entry per connection the client closed (with `After::AwaitClose`).
    closed: tokio::sync::mpsc::UnboundedReceiver<()>,
}

/// A raw HTTP/1.1 upstream: each response body is `c<connection>#<request> <request line>|<host>`.
async fn upstream(after: After) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, closed) = tokio::sync::mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(serve(sock, n, after, tx.clone()));
        }
    });
    Upstream { addr, accepted, closed }
}

async fn serve(mut sock: TcpStream, conn: usize, after: After, closed: tokio::sync::mpsc::UnboundedSender<()>) {
    let mut buf = Vec::new();
    let mut served = 0;
    loop {
        // Read one request head (the tests send no request bodies).
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    let _ = closed.send(());
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        served += 1;
        let line = head.lines().next().unwrap_or_default().to_owned();
        let host = head
            .lines()
            .find_map(|l| l.strip_prefix("host: ").or_else(|| l.strip_prefix("Host: ")))
            .unwrap_or("-")
            .to_owned();
        let body = format!("c{conn}#{served} {line}|{host}");
        if line.contains("close-delimited") {
            // No length: the body ends when the connection closes (HTTP/1.0 style).
            let resp = format!("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{body}");
            sock.write_all(resp.as_bytes()).await.unwrap();
            return;
        }
        let resp = if line.contains("chunked") {
            let (a, b) = body.split_at(body.len() / 2);
            format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                a.len(),
                b.len()
            )
        } else {
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len())
        };
        sock.write_all(resp.as_bytes()).await.unwrap();
        if let After::CloseAfterMs(ms) = after {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return;
        }
    }
}

fn client(endpoints: usize, idle_timeout: Duration, max_idle: usize) -> Arc<Client> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::new(connector, endpoints, idle_timeout, max_idle)
}

fn base(addr: SocketAddr) -> Uri {
    format!("http://{addr}/").parse().unwrap()
}

fn get(path: &str) -> Request<RequestBody> {
    Request::builder().uri(path).body(RequestBody::empty()).unwrap()
}

async fn text(resp: Response<UpstreamBody>) -> String {
    assert_eq!(resp.status(), StatusCode::OK);
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

fn idle(c: &Client, ep: usize) -> usize {
    c.stack(ep).len()
}

#[tokio::test]
async fn a_connection_is_reused_once_its_body_is_read() {
    let up = upstream(After::KeepAlive).await;
    let c = client(1, Duration::from_secs(60), 8);
    for i in 1..=3 {
        let body = text(c.request(0, &base(up.addr), get("/a?b=1")).await.unwrap()).await;
        assert_eq!(body, format!("c1#{i} GET /a?b=1 HTTP/1.1|{}", up.addr), "origin form, endpoint as Host");
        assert_eq!(idle(&c, 0), 1);
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_chunked_response_read_to_its_end_returns_its_connection() {
    let up = upstream(After::KeepAlive).await;
    let c = client(1, Duration::from_secs(60), 8);
    for i in 1..=2 {
        let body = text(c.request(0, &base(up.addr), get("/chunked")).await.unwrap()).await;
        assert_eq!(body, format!("c1#{i} GET /chunked HTTP/1.1|{}", up.addr));
        assert_eq!(idle(&c, 0), 1);
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_delimited_by_the_close_is_read_whole_and_its_connection_not_kept() {
    let up = upstream(After::KeepAlive).await;
    let c = client(1, Duration::from_secs(60), 8);
    for i in 1..=2 {
        let body = text(c.request(0, &base(up.addr), get("/close-delimited")).await.unwrap()).await;
        assert_eq!(body, format!("c{i}#1 GET /close-delimited HTTP/1.1|{}", up.addr));
        assert_eq!(idle(&c, 0), 0);
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_request_host_header_is_kept() {
    let up = upstream(After::KeepAlive).await;
    let c = client(1, Duration::from_secs(60), 8);
    let mut req = get("http://ignored.example/p");
    req.headers_mut().insert(header::HOST, HeaderValue::from_static("shop.example"));
    let body = text(c.request(0, &base(up.addr), req).await.unwrap()).await;
    assert_eq!(body, "c1#1 GET /p HTTP/1.1|shop.example");
}

#[tokio::test]
async fn an_unread_body_does_not_return_its_connection() {
    let up = upstream(After::KeepAlive).await;
    let c = client(1, Duration::from_secs(60), 8);
    let resp = c.request(0, &base(up.addr), get("/x")).await.unwrap();
    drop(resp);
    assert_eq!(idle(&c, 0), 0);
    let body = text(c.request(0, &base(up.addr), get("/y")).await.unwrap()).await;
    assert_eq!(body, format!("c2#1 GET /y HTTP/1.1|{}", up.addr));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_requests_use_their_own_connections_and_both_return() {
    let up = upstream(After::KeepAlive).await;
    let c = client(1, Duration::from_secs(60), 8);
    let to = base(up.addr);
    let (a, b) = tokio::join!(c.request(0, &to, get("/a")), c.request(0, &to, get("/b")));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    let (a, b) = (text(a).await, text(b).await);
    assert!(a.ends_with(&format!("#1 GET /a HTTP/1.1|{}", up.addr)), "{a}");
    assert!(b.ends_with(&format!("#1 GET /b HTTP/1.1|{}", up.addr)), "{b}");
    assert_eq!(idle(&c, 0), 2);
    // The most recently returned connection (b's) is used next.
    let next = text(c.request(0, &base(up.addr), get("/c")).await.unwrap()).await;
    assert_eq!(next, format!("{}#2 GET /c HTTP/1.1|{}", &b[..2], up.addr));
}

#[tokio::test]
async fn at_most_max_idle_connections_are_kept() {
    let up = upstream(After::KeepAlive).await;
    let c = client(1, Duration::from_secs(60), 1);
    let to = base(up.addr);
    let (a, b) = tokio::join!(c.request(0, &to, get("/a")), c.request(0, &to, get("/b")));
    text(a.unwrap()).await;
    text(b.unwrap()).await;
    assert_eq!(idle(&c, 0), 1);

    let none = client(1, Duration::from_secs(60), 0);
    text(none.request(0, &base(up.addr), get("/a")).await.unwrap()).await;
    assert_eq!(idle(&none, 0), 0, "max_idle_per_endpoint 0 keeps nothing");
}

#[tokio::test]
async fn endpoints_have_separate_stacks() {
    let (u1, u2) = (upstream(After::KeepAlive).await, upstream(After::KeepAlive).await);
    let c = client(2, Duration::from_secs(60), 8);
    text(c.request(0, &base(u1.addr), get("/a")).await.unwrap()).await;
    let body = text(c.request(1, &base(u2.addr), get("/b")).await.unwrap()).await;
    assert_eq!(body, format!("c1#1 GET /b HTTP/1.1|{}", u2.addr));
    assert_eq!((idle(&c, 0), idle(&c, 1)), (1, 1));
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    let up = upstream(After::CloseAfterMs(20)).await;
    let c = client(1, Duration::from_secs(60), 8);
    text(c.request(0, &base(up.addr), get("/a")).await.unwrap()).await;
    assert_eq!(idle(&c, 0), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let body = text(c.request(0, &base(up.addr), get("/b")).await.unwrap()).await;
    assert_eq!(body, format!("c2#1 GET /b HTTP/1.1|{}", up.addr));
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_keepalive_timeout() {
    let mut up = upstream(After::AwaitClose).await;
    let c = client(1, Duration::from_millis(200), 8);
    text(c.request(0, &base(up.addr), get("/a")).await.unwrap()).await;
    assert_eq!(idle(&c, 0), 1);
    let t = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(3), up.closed.recv()).await.unwrap().unwrap();
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(190), "closed after {waited:?}");
    assert_eq!(idle(&c, 0), 0);
}

#[tokio::test]
async fn dropping_the_client_closes_its_idle_connections() {
    let mut up = upstream(After::AwaitClose).await;
    let c = client(1, Duration::from_secs(60), 8);
    text(c.request(0, &base(up.addr), get("/a")).await.unwrap()).await;
    drop(c);
    tokio::time::timeout(Duration::from_secs(3), up.closed.recv()).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let c = client(1, Duration::from_secs(60), 8);
    let e = c.request(0, &base(addr), get("/")).await.unwrap_err();
    assert!(e.is_connect(), "{e}");
}

#[tokio::test]
async fn a_connection_closed_before_the_response_is_a_request_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut b = [0u8; 1024];
        let _ = s.read(&mut b).await;
    });
    let c = client(1, Duration::from_secs(60), 8);
    let e = c.request(0, &base(addr), get("/")).await.unwrap_err();
    assert!(!e.is_connect(), "{e}");
    assert_eq!(idle(&c, 0), 0);
}

/// Counts the wakes of a task.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn local_wakes_are_noted_while_polling_and_go_to_the_task_otherwise() {
    let (local, waker) = LocalWake::new();
    let task = Arc::new(Wakes::default());
    let task_waker = Waker::from(task.clone());
    let mut cx = Context::from_waker(&task_waker);
    let woken = || task.0.load(Ordering::SeqCst);

    // Woken during the first run: run again at once; the task hears nothing.
    let mut runs = 0;
    let r = local.poll(&waker, &mut cx, |lcx| {
        runs += 1;
        if runs == 1 {
            lcx.waker().wake_by_ref();
        }
        Poll::<()>::Pending
    });
    assert_eq!((r, runs, woken()), (Poll::Pending, 2, 0));

    // A wake when nobody polls goes to the task that polled last.
    waker.wake_by_ref();
    assert_eq!(woken(), 1);

    // Woken in every run: MAX_LOCAL_POLLS runs, then the task is woken to come back.
    let mut runs = 0;
    let r = local.poll(&waker, &mut cx, |lcx| {
        runs += 1;
        lcx.waker().wake_by_ref();
        Poll::<()>::Pending
    });
    assert_eq!((r, runs, woken()), (Poll::Pending, MAX_LOCAL_POLLS, 2));

    // Woken in a run that ends ready: ready, nothing else.
    let mut runs = 0;
    let r = local.poll(&waker, &mut cx, |lcx| {
        runs += 1;
        lcx.waker().wake_by_ref();
        Poll::Ready(7)
    });
    assert_eq!((r, runs, woken()), (Poll::Ready(7), 1, 2));

    // A wake from another thread while the holder polls is noted, never lost.
    let mut runs = 0;
    let r = local.poll(&waker, &mut cx, |_| {
        runs += 1;
        if runs == 1 {
            let w = waker.clone();
            std::thread::spawn(move || w.wake()).join().unwrap();
        }
        Poll::<()>::Pending
    });
    assert_eq!((r, runs, woken()), (Poll::Pending, 2, 2));

    // Released (the connection went idle): a wake has no task to go to.
    local.release();
    waker.wake_by_ref();
    assert_eq!(woken(), 2);
}

/// Counts the polls of a future.
struct CountPolls<F> {
    inner: Pin<Box<F>>,
    polls: usize,
}

impl<F: Future> Future for CountPolls<F> {
    type Output = (F::Output, usize);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.polls += 1;
        let polls = self.polls;
        self.inner.as_mut().poll(cx).map(|out| (out, polls))
    }
}

/// A request on a kept-alive connection costs its task one poll to send and one when the answer
/// arrives: the connection's own wakes (the request handed over, the head parsed, the body
/// asked for) do not go through the scheduler.
#[tokio::test(flavor = "current_thread")]
async fn a_request_on_a_kept_connection_is_polled_twice() {
    let up = upstream(After::KeepAlive).await;
    let c = client(1, Duration::from_secs(60), 8);
    text(c.request(0, &base(up.addr), get("/warm")).await.unwrap()).await;
    assert_eq!(idle(&c, 0), 1);
    for i in 2..=4 {
        let exchange = async { text(c.request(0, &base(up.addr), get("/a")).await.unwrap()).await };
        let (body, polls) = CountPolls { inner: Box::pin(exchange), polls: 0 }.await;
        assert_eq!(body, format!("c1#{i} GET /a HTTP/1.1|{}", up.addr));
        assert_eq!(polls, 2, "request {i}");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}
