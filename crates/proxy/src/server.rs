//! Listeners and connections: accept with a connection cap, TLS handshake under a deadline,
//! HTTP/1.1 and HTTP/2 serving, idle timeout, graceful drain, and hot reload by atomic swap.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use palisade_core::{ConfigError, LoadedConfig};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::framing::{ConnIo, ConnState, FramingTracker};
use crate::metrics::Metrics;
use crate::runtime::{compile, Runtime};
use crate::service::{handle, ConnInfo, Shared};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    stop_accepting: CancellationToken,
    stop_admin: CancellationToken,
    drain_tx: watch::Sender<bool>,
    tasks: TaskTracker,
    conn_limit: Arc<Semaphore>,
    conn_limit_size: AtomicUsize,
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
}

impl Gateway {
    /// Compile the config, bind every listener, and start serving.
    pub async fn start(loaded: &LoadedConfig, metrics: Arc<Metrics>) -> Result<Gateway, StartError> {
        let rt = compile(loaded, &metrics, None)?;
        let c = &loaded.config;
        let http = match &c.listeners.http {
            Some(l) => Some(bind("http", l.address).await?),
            None => None,
        };
        let https = match &c.listeners.https {
            Some(l) => Some(bind("https", l.address).await?),
            None => None,
        };
        let admin_l = bind("admin", c.admin.address).await?;
        rt.activate();
        let max_conns = rt.limits.max_connections;
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(rt),
            unrouted: metrics.route(""),
            metrics,
            draining: AtomicBool::new(false),
        });
        let (drain_tx, drain_rx) = watch::channel(false);
        let gw = Gateway {
            http_addr: http.as_ref().and_then(|l| l.local_addr().ok()),
            https_addr: https.as_ref().and_then(|l| l.local_addr().ok()),
            admin_addr: admin_l.local_addr().map_err(|source| StartError::Bind {
                what: "admin",
                addr: c.admin.address,
                source,
            })?,
            shared,
            stop_accepting: CancellationToken::new(),
            stop_admin: CancellationToken::new(),
            drain_tx,
            tasks: TaskTracker::new(),
            conn_limit: Arc::new(Semaphore::new(max_conns)),
            conn_limit_size: AtomicUsize::new(max_conns),
        };
        for (l, https) in [(http, false), (https, true)] {
            if let Some(l) = l {
                let name = if https { "https" } else { "http" };
                tokio::spawn(accept_loop(
                    l,
                    https,
                    gw.shared.clone(),
                    gw.stop_accepting.clone(),
                    drain_rx.clone(),
                    gw.tasks.clone(),
                    gw.conn_limit.clone(),
                    gw.shared.metrics.open_connections(name),
                ));
            }
        }
        tokio::spawn(admin::serve(admin_l, gw.shared.clone(), gw.stop_admin.clone()));
        Ok(gw)
    }

    /// Validate, compile and atomically swap in a new config. In-flight requests finish on
    /// the old one. On error nothing changes.
    pub fn reload(&self, loaded: &LoadedConfig) -> Result<(), ConfigError> {
        let old = self.shared.runtime.load_full();
        let rt = match compile(loaded, &self.shared.metrics, Some(&old)) {
            Ok(rt) => rt,
            Err(e) => {
                self.shared.metrics.reload(false);
                return Err(e);
            }
        };
        let (a, b) = (&old.config.listeners, &loaded.config.listeners);
        let addr_changed = a.http.as_ref().map(|l| l.address) != b.http.as_ref().map(|l| l.address)
            || a.https.as_ref().map(|l| l.address) != b.https.as_ref().map(|l| l.address)
            || old.config.admin != loaded.config.admin;
        if addr_changed {
            tracing::warn!("listener addresses changed; they take effect after a restart");
        }
        self.resize_conn_limit(rt.limits.max_connections);
        rt.activate();
        self.shared.runtime.store(Arc::new(rt));
        self.shared.metrics.reload(true);
        Ok(())
    }

    fn resize_conn_limit(&self, new: usize) {
        let old = self.conn_limit_size.swap(new, Ordering::SeqCst);
        if new > old {
            self.conn_limit.add_permits(new - old);
        } else if new < old {
            let sem = self.conn_limit.clone();
            let n = u32::try_from(old - new).unwrap_or(u32::MAX);
            tokio::spawn(async move {
                if let Ok(p) = sem.acquire_many_owned(n).await {
                    p.forget();
                }
            });
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Stop accepting, let in-flight requests finish (up to `drain_timeout`), then return.
    pub async fn drain(self) {
        let timeout = self.shared.runtime.load().limits.drain_timeout.0;
        self.shared.draining.store(true, Ordering::SeqCst);
        self.stop_accepting.cancel();
        let _ = self.drain_tx.send(true);
        self.tasks.close();
        if tokio::time::timeout(timeout, self.tasks.wait()).await.is_err() {
            tracing::warn!(open = self.tasks.len(), "drain timeout reached; closing remaining connections");
        }
        self.stop_admin.cancel();
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    https: bool,
    shared: Arc<Shared>,
    stop: CancellationToken,
    drain_rx: watch::Receiver<bool>,
    tasks: TaskTracker,
    limit: Arc<Semaphore>,
    gauge: Gauge,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared.metrics.connections_rejected.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let drain_rx = drain_rx.clone();
        let gauge = gauge.clone();
        tasks.spawn(async move {
            gauge.inc();
            serve(stream, peer, https, shared, drain_rx).await;
            gauge.dec();
            drop(permit);
        });
    }
}

enum Proto {
    Auto,
    H1,
    H2,
}

async fn serve(stream: TcpStream, peer: SocketAddr, https: bool, shared: Arc<Shared>, drain_rx: watch::Receiver<bool>) {
    let rt = shared.runtime.load_full();
    let state = Arc::new(ConnState::default());
    let conn = Arc::new(ConnInfo { client: peer, https, state: state.clone() });
    let tracker = || FramingTracker::new(rt.limits.max_header_bytes + 8192);
    if https {
        let Some(acceptor) = rt.tls.clone() else { return };
        let tls = match tokio::time::timeout(rt.limits.header_read_timeout.0, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = ConnIo::new(tls, state.clone(), (!h2).then(tracker));
        serve_http(io, conn, shared, &rt, drain_rx, if h2 { Proto::H2 } else { Proto::H1 }).await;
    } else {
        let io = ConnIo::new(stream, state.clone(), Some(tracker()));
        serve_http(io, conn, shared, &rt, drain_rx, Proto::Auto).await;
    }
}

async fn serve_http<I>(
    io: ConnIo<I>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    rt: &Runtime,
    mut drain_rx: watch::Receiver<bool>,
    proto: Proto,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &rt.limits;
    let state = conn.state.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.0)
        .max_buf_size((limits.max_header_bytes + 8192).max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let builder = match proto {
        Proto::Auto => builder,
        Proto::H1 => builder.http1_only(),
        Proto::H2 => builder.http2_only(),
    };
    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), conn.clone(), req));
    let conn_fut = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn_fut);
    let period = (limits.idle_timeout.0 / 2).max(Duration::from_millis(50));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut draining = *drain_rx.borrow();
    if draining {
        conn_fut.as_mut().graceful_shutdown();
    }
    let mut idle_ticks = 0u8;
    loop {
        tokio::select! {
            _ = conn_fut.as_mut() => break,
            _ = drain_rx.changed(), if !draining => {
                draining = true;
                conn_fut.as_mut().graceful_shutdown();
            }
            _ = ticker.tick(), if !draining => {
                if state.idle_tick() {
                    idle_ticks += 1;
                    if idle_ticks >= 2 {
                        draining = true;
                        conn_fut.as_mut().graceful_shutdown();
                    }
                } else {
                    idle_ticks = 0;
                }
            }
        }
    }
}
