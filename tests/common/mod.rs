//! One harness for "start palisade, send requests, assert": a scriptable in-process upstream,
//! a real `palisade` child process on ephemeral ports, and real clients (curl, openssl, raw TCP).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test harness: failing loudly is the point

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub mod idp;
pub mod issuer;

pub const BIN: &str = env!("CARGO_BIN_EXE_palisade");

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(s: impl Into<Bytes>) -> BoxBody {
    Full::new(s.into()).boxed()
}

/// A scriptable upstream. Paths:
/// `/healthz` (200, or 503 after `set_healthy(false)`), `/slow?ms=N`, `/status/N`,
/// `/stream` (two chunks 1 s apart), anything else echoes the request as JSON.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    stop: CancellationToken,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap(), None).await
    }

    pub async fn start_tls(name: &str, cfg: Arc<rustls::ServerConfig>) -> Backend {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap(), Some(cfg)).await
    }

    async fn start_on(name: &str, addr: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> Backend {
        let mut b = Backend {
            name: name.to_string(),
            addr,
            hits: Arc::new(AtomicUsize::new(0)),
            healthy: Arc::new(AtomicBool::new(true)),
            stop: CancellationToken::new(),
            tls,
        };
        b.listen().await;
        b
    }

    async fn listen(&mut self) {
        let mut listener = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listener = listener.expect("bind backend");
        self.addr = listener.local_addr().unwrap();
        self.stop = CancellationToken::new();
        let stop = self.stop.clone();
        let (name, hits, healthy, tls) = (self.name.clone(), self.hits.clone(), self.healthy.clone(), self.tls.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => r.unwrap(),
                };
                let (name, hits, healthy, stop, tls) =
                    (name.clone(), hits.clone(), healthy.clone(), stop.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| serve(name.clone(), hits.clone(), healthy.clone(), req));
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(cfg) => {
                            let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await else { return };
                            tokio::select! {
                                _ = stop.cancelled() => {},
                                _ = builder.serve_connection(TokioIo::new(s), svc) => {},
                            }
                        }
                        None => {
                            tokio::select! {
                                _ = stop.cancelled() => {},
                                _ = builder.serve_connection(TokioIo::new(stream), svc) => {},
                            }
                        }
                    }
                });
            }
        });
    }

    /// Stop listening and drop every open connection.
    pub fn kill(&self) {
        self.stop.cancel();
    }

    /// Listen again on the same port.
    pub async fn restart(&mut self) {
        self.listen().await;
    }

    pub fn set_healthy(&self, v: bool) {
        self.healthy.store(v, Ordering::SeqCst);
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }
}

async fn serve(
    name: String,
    hits: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let mut resp = if path == "/healthz" {
        let ok = healthy.load(Ordering::SeqCst);
        let mut r = Response::new(full(if ok { "ok" } else { "down" }));
        *r.status_mut() = if ok { hyper::StatusCode::OK } else { hyper::StatusCode::SERVICE_UNAVAILABLE };
        r
    } else {
        hits.fetch_add(1, Ordering::SeqCst);
        if path == "/slow" {
            let ms: u64 = query.strip_prefix("ms=").and_then(|v| v.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full("slow done"))
        } else if let Some(code) = path.strip_prefix("/status/") {
            let mut r = Response::new(full(format!("status {code}")));
            *r.status_mut() = hyper::StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
            r
        } else if path == "/stream" {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"first-chunk\n")))).await;
                tokio::time::sleep(Duration::from_millis(1000)).await;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"second-chunk\n")))).await;
            });
            Response::new(BodyExt::boxed(ChannelBody(rx)))
        } else {
            let method = req.method().to_string();
            let version = format!("{:?}", req.version());
            let uri = req.uri().to_string();
            let mut headers = BTreeMap::new();
            for (k, v) in req.headers() {
                headers.entry(k.to_string()).or_insert_with(Vec::new).push(v.to_str().unwrap_or("?").to_string());
            }
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let v = serde_json::json!({
                "backend": name, "method": method, "uri": uri, "version": version,
                "headers": headers, "body_len": body.len(),
            });
            Response::new(full(v.to_string()))
        }
    };
    resp.headers_mut().insert("x-backend", name.parse().unwrap());
    Ok(resp)
}

/// A response body fed from a channel, so the test controls when each chunk goes out.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx)
    }
}

/// Starts `cmd` with info logs, stdout and stderr both into `log`; killed when dropped.
pub fn spawn_logged(mut cmd: tokio::process::Command, log: &Path) -> tokio::process::Child {
    let file = std::fs::File::create(log).unwrap();
    cmd.env("PALISADE_LOG", "info").stdout(file.try_clone().unwrap()).stderr(file).kill_on_drop(true).spawn().unwrap()
}

/// A port for a child process to listen on. Taken below the kernel's ephemeral range (32768-60999
/// by default), where the kernel never puts the outgoing connections and `:0` listeners of the
/// tests running beside this one: a port from `bind(":0")` was once taken by one of those between
/// this check and the child's own bind ("Address already in use"). Random, so that tests picking
/// at the same time rarely pick the same one, and checked free now.
pub fn free_port() -> u16 {
    use std::hash::BuildHasher;
    static PICKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for _ in 0..1000 {
        let n = PICKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = std::collections::hash_map::RandomState::new().hash_one((n, std::process::id()));
        let port = 20_000 + (r % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `palisade gateway` child process.
pub struct Gw {
    pub child: tokio::process::Child,
    pub dir: tempfile::TempDir,
    pub http: u16,
    pub https: u16,
    pub admin: u16,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// Fill `{HTTP}`, `{HTTPS}`, `{ADMIN}` and `{DIR}` in a config template.
pub fn render(template: &str, http: u16, https: u16, admin: u16, dir: &Path) -> String {
    template
        .replace("{HTTP}", &http.to_string())
        .replace("{HTTPS}", &https.to_string())
        .replace("{ADMIN}", &admin.to_string())
        .replace("{DIR}", &dir.display().to_string())
}

impl Gw {
    pub async fn start(template: &str) -> Gw {
        Self::start_in(tempfile::tempdir().unwrap(), template).await
    }

    /// Start with every listener on port 0 and learn the bound ports from the startup log
    /// line, so parallel tests never race for a port.
    pub async fn start_in(dir: tempfile::TempDir, template: &str) -> Gw {
        let config = dir.path().join("palisade.yaml");
        std::fs::write(&config, render(template, 0, 0, 0, dir.path())).unwrap();
        let log = dir.path().join("palisade.log");
        let child = tokio::process::Command::new(BIN)
            .args(["gateway", "--config"])
            .arg(&config)
            .env("PALISADE_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut gw = Gw { child, dir, http: 0, https: 0, admin: 0, config, log };
        gw.wait_ready().await;
        gw
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let port = |v: &serde_json::Value, k: &str| -> u16 {
            v[k].as_str().and_then(|a| a.rsplit_once(':')).and_then(|(_, p)| p.parse().ok()).unwrap_or(0)
        };
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("palisade exited early ({status}): {}", self.log_text());
            }
            let started = self
                .log_text()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["message"] == "gateway listening");
            if let Some(v) = started {
                (self.http, self.https, self.admin) = (port(&v, "http"), port(&v, "https"), port(&v, "admin"));
                if let Some((200, _)) = get_raw(self.admin, "/readyz").await {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "gateway not ready: {}", self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn write_config(&self, template: &str) {
        // Same ports as at start (0: keep what was bound). Written atomically so the file
        // watcher never sees half a file.
        let tmp = self.dir.path().join(".next.yaml");
        std::fs::write(&tmp, render(template, 0, 0, 0, self.dir.path())).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap().to_string();
        let ok = std::process::Command::new("kill").args([&format!("-{sig}"), &pid]).status().unwrap();
        assert!(ok.success());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    pub async fn metrics(&self) -> String {
        get_raw(self.admin, "/metrics").await.map(|(_, b)| b).unwrap_or_default()
    }
}

/// GET over a fresh HTTP/1.1 connection with hyper; `None` if the connection fails.
pub async fn get_raw(port: u16, path: &str) -> Option<(u16, String)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    let req = Request::get(path).header("host", "127.0.0.1").body(Full::new(Bytes::new())).ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req)).await.ok()?.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A curl response.
#[derive(Debug)]
pub struct Curl {
    pub status: u16,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Curl {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Run the real curl. `args` come before the URL.
pub async fn curl(args: &[&str], url: &str) -> Curl {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "15"])
        .args(args)
        .arg(url)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "curl {args:?} {url} failed: {}", String::from_utf8_lossy(&out.stderr));
    parse_curl(&String::from_utf8_lossy(&out.stdout))
}

fn parse_curl(text: &str) -> Curl {
    // Skip interim 1xx responses.
    let mut rest = text;
    loop {
        let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.split_whitespace();
        let version = parts.next().unwrap_or_default().to_string();
        let status: u16 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if (100..200).contains(&status) {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        return Curl { status, version, headers, body: body.to_string() };
    }
}

/// Send raw bytes, read until the server closes (or `timeout`). Returns (response, closed).
pub async fn raw(port: u16, request: &[u8], timeout: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(timeout, async {
        let mut chunk = [0u8; 8192];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .unwrap_or(false);
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

/// A test PKI: one CA and leaf certificates for given names, written as PEM files.
pub struct Pki {
    pub ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new(cn: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pki { ca_pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// (cert chain PEM, key PEM) for a leaf with these DNS names; CN is the first name.
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Write `<stem>.pem` and `<stem>-key.pem` for a leaf into `dir`.
    pub fn write_leaf(&self, dir: &Path, stem: &str, names: &[&str]) {
        let (c, k) = self.leaf(names);
        std::fs::write(dir.join(format!("{stem}.pem")), c).unwrap();
        std::fs::write(dir.join(format!("{stem}-key.pem")), k).unwrap();
    }

    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let (c, k) = self.leaf(names);
        let certs =
            rustls::pki_types::CertificateDer::pem_slice_iter(c.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Arc::new(cfg)
    }
}

pub fn executor() -> TokioExecutor {
    TokioExecutor::new()
}
