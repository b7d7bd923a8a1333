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
use crate::framing::{ConnIo, ConnState, FramingTracker, CLOSE_GRACEFUL, CLOSE_NOW};
use crate::identity::PeerCert;
use crate::metrics::Metrics;
use crate::runtime::{compile, needs_mesh, Runtime};
use crate::service::{handle, ConnInfo, Shared};
use palisade_core::config::{LISTENER_HTTP, LISTENER_HTTPS, LISTENER_MESH};
use palisade_core::SvidSource;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("cannot start worker thread: {0}")]
    Worker(std::io::Error),
    #[error("the config has a mesh listener or mesh upstreams, but the gateway was started without an SVID source")]
    NoSvidSource,
}

/// How a listener's connections are served.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Https,
    Mesh,
}

/// One listener as a worker serves it.
#[derive(Clone)]
struct ListenerSpec {
    kind: Kind,
    /// The name routes use in `match.listeners`.
    name: Arc<str>,
    gauge: Gauge,
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    stop_accepting: CancellationToken,
    stop_admin: CancellationToken,
    /// Keeps the worker runtimes alive until draining is over.
    workers_done: CancellationToken,
    drain_tx: watch::Sender<bool>,
    tasks: TaskTracker,
    conn_limit: Arc<Semaphore>,
    conn_limit_size: AtomicUsize,
    workers: usize,
    mesh: Option<Arc<dyn SvidSource>>,
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    /// The mesh (inbound mTLS) listener's bound address.
    pub mesh_addr: Option<SocketAddr>,
    /// Bound address of each `listeners.local` entry, by name, in config order.
    pub local_addrs: Vec<(String, SocketAddr)>,
    pub admin_addr: SocketAddr,
}

/// Bind one shared listener per worker; with port 0 the first bind picks the port.
fn bind_all(what: &'static str, addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, StartError> {
    let err = |source| StartError::Bind { what, addr, source };
    let first = crate::worker::bind_shared(addr).map_err(err)?;
    let actual = first.local_addr().map_err(err)?;
    let mut out = vec![first];
    for _ in 1..n {
        out.push(crate::worker::bind_shared(actual).map_err(err)?);
    }
    Ok(out)
}

impl Gateway {
    /// Compile the config, bind every listener, and start serving. Must be called inside a
    /// tokio runtime (admin and health checks run there); requests are served on dedicated
    /// worker threads. For configs without a mesh listener or mesh upstreams.
    pub async fn start(loaded: &LoadedConfig, metrics: Arc<Metrics>) -> Result<Gateway, StartError> {
        Gateway::start_with(loaded, metrics, None).await
    }

    /// [`Gateway::start`] with the sidecar's SVID source, which the mesh listener and mesh
    /// upstreams read on every handshake (the caller's rotation client keeps it current).
    pub async fn start_with(
        loaded: &LoadedConfig,
        metrics: Arc<Metrics>,
        mesh: Option<Arc<dyn SvidSource>>,
    ) -> Result<Gateway, StartError> {
        let c = &loaded.config;
        if mesh.is_none() && needs_mesh(c) {
            return Err(StartError::NoSvidSource);
        }
        let workers = if c.workers == 0 { crate::worker::default_count() } else { c.workers };
        let rt = compile(loaded, &metrics, None, workers, mesh.as_ref())?;
        let gauge = |label: &str| metrics.open_connections(label);
        let mut groups: Vec<(ListenerSpec, Vec<std::net::TcpListener>)> = Vec::new();
        let builtin = [
            (c.listeners.http.as_ref().map(|l| l.address), Kind::Plain, LISTENER_HTTP),
            (c.listeners.https.as_ref().map(|l| l.address), Kind::Https, LISTENER_HTTPS),
            (c.listeners.mesh.as_ref().map(|l| l.address), Kind::Mesh, LISTENER_MESH),
        ];
        for (addr, kind, name) in builtin {
            if let Some(addr) = addr {
                let spec = ListenerSpec { kind, name: name.into(), gauge: gauge(name) };
                groups.push((spec, bind_all(name, addr, workers)?));
            }
        }
        for l in &c.listeners.local {
            let spec = ListenerSpec { kind: Kind::Plain, name: l.name.as_str().into(), gauge: gauge("local") };
            groups.push((spec, bind_all("local", l.address, workers)?));
        }
        let bound = |name: &str| {
            groups.iter().find(|(s, _)| &*s.name == name).and_then(|(_, ls)| ls.first()?.local_addr().ok())
        };
        let (http_addr, https_addr, mesh_addr) = (bound(LISTENER_HTTP), bound(LISTENER_HTTPS), bound(LISTENER_MESH));
        let local_addrs =
            c.listeners.local.iter().filter_map(|l| Some((l.name.clone(), bound(&l.name)?))).collect::<Vec<_>>();
        let admin_l = TcpListener::bind(c.admin.address).await.map_err(|source| StartError::Bind {
            what: "admin",
            addr: c.admin.address,
            source,
        })?;
        rt.activate(&metrics);
        let max_conns = rt.limits.max_connections;
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(rt),
            unrouted: metrics.route(""),
            metrics,
            draining: AtomicBool::new(false),
            https_port: https_addr.map_or(0, |a| a.port()),
        });
        let (drain_tx, drain_rx) = watch::channel(false);
        let gw = Gateway {
            http_addr,
            https_addr,
            mesh_addr,
            local_addrs,
            admin_addr: admin_l.local_addr().map_err(|source| StartError::Bind {
                what: "admin",
                addr: c.admin.address,
                source,
            })?,
            shared,
            stop_accepting: CancellationToken::new(),
            stop_admin: CancellationToken::new(),
            workers_done: CancellationToken::new(),
            drain_tx,
            tasks: TaskTracker::new(),
            conn_limit: Arc::new(Semaphore::new(max_conns)),
            conn_limit_size: AtomicUsize::new(max_conns),
            workers,
            mesh,
        };
        for i in 0..workers {
            let mine: Vec<(std::net::TcpListener, ListenerSpec)> =
                groups.iter_mut().filter_map(|(spec, ls)| Some((ls.pop()?, spec.clone()))).collect();
            let (shared, stop, done, drain_rx, tasks, limit) = (
                gw.shared.clone(),
                gw.stop_accepting.clone(),
                gw.workers_done.clone(),
                drain_rx.clone(),
                gw.tasks.clone(),
                gw.conn_limit.clone(),
            );
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StartError::Worker)?;
            std::thread::Builder::new()
                .name(format!("palisade-worker-{i}"))
                .spawn(move || {
                    crate::worker::set_current(i);
                    runtime.block_on(async move {
                        for (l, spec) in mine {
                            match TcpListener::from_std(l) {
                                Ok(l) => {
                                    tokio::spawn(accept_loop(
                                        l,
                                        spec,
                                        shared.clone(),
                                        stop.clone(),
                                        drain_rx.clone(),
                                        tasks.clone(),
                                        limit.clone(),
                                    ));
                                }
                                Err(e) => tracing::error!(error = %e, "cannot register listener"),
                            }
                        }
                        done.cancelled().await;
                    });
                })
                .map_err(StartError::Worker)?;
        }
        tokio::spawn(admin::serve(admin_l, gw.shared.clone(), gw.stop_admin.clone()));
        Ok(gw)
    }

    /// Validate, compile and atomically swap in a new config. In-flight requests finish on
    /// the old one. On error nothing changes.
    pub fn reload(&self, loaded: &LoadedConfig) -> Result<(), ConfigError> {
        let old = self.shared.runtime.load_full();
        let rt = match compile(loaded, &self.shared.metrics, Some(&old), self.workers, self.mesh.as_ref()) {
            Ok(rt) => rt,
            Err(e) => {
                self.shared.metrics.reload(false);
                return Err(e);
            }
        };
        let (a, b) = (&old.config.listeners, &loaded.config.listeners);
        let addr_changed = a.http.as_ref().map(|l| l.address) != b.http.as_ref().map(|l| l.address)
            || a.https.as_ref().map(|l| l.address) != b.https.as_ref().map(|l| l.address)
            || a.mesh != b.mesh
            || a.local != b.local
            || old.config.admin != loaded.config.admin
            || old.config.workers != loaded.config.workers;
        if addr_changed {
            tracing::warn!("listener addresses and worker count take effect after a restart");
        }
        if old.config.mesh != loaded.config.mesh {
            tracing::warn!(
                "changes to the mesh section (CA server, credentials, trust domain) take effect after a restart"
            );
        }
        self.resize_conn_limit(rt.limits.max_connections);
        rt.activate(&self.shared.metrics);
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
        self.workers_done.cancel();
        self.stop_admin.cancel();
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    spec: ListenerSpec,
    shared: Arc<Shared>,
    stop: CancellationToken,
    drain_rx: watch::Receiver<bool>,
    tasks: TaskTracker,
    limit: Arc<Semaphore>,
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
        let spec = spec.clone();
        tasks.spawn(async move {
            spec.gauge.inc();
            serve(stream, peer, spec.kind, spec.name.clone(), shared, drain_rx).await;
            spec.gauge.dec();
            drop(permit);
        });
    }
}

enum Proto {
    H1,
    H2,
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    kind: Kind,
    listener: Arc<str>,
    shared: Arc<Shared>,
    drain_rx: watch::Receiver<bool>,
) {
    let rt = shared.runtime.load_full();
    let state = Arc::new(ConnState::default());
    let https = kind != Kind::Plain;
    let mut conn = ConnInfo {
        client: peer,
        client_ip_value: crate::headers::ip_value(peer.ip()),
        https,
        listener,
        state: state.clone(),
        https_port: shared.https_port,
        peer_cert: None,
    };
    let tracker = || FramingTracker::new(rt.limits.max_header_bytes + 8192);
    if https {
        let acceptor = if kind == Kind::Mesh { rt.mesh_tls.clone() } else { rt.tls.clone() };
        let Some(acceptor) = acceptor else { return };
        let tls = match tokio::time::timeout(rt.limits.header_read_timeout.0, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        conn.peer_cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| Arc::new(PeerCert::new(Arc::from(c.as_ref()))));
        let conn = Arc::new(conn);
        let io = ConnIo::new(tls, state.clone(), (!h2).then(tracker));
        serve_http(io, conn, shared, &rt, drain_rx, if h2 { Proto::H2 } else { Proto::H1 }).await;
    } else {
        // Plain listeners speak HTTP/1.1 only (no h2c): HTTP/2 is offered over TLS via ALPN.
        let conn = Arc::new(conn);
        let io = ConnIo::new(stream, state.clone(), Some(tracker()));
        serve_http(io, conn, shared, &rt, drain_rx, Proto::H1).await;
    }
}

async fn serve_http<I>(
    io: ConnIo<I>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    rt: &Runtime,
    drain_rx: watch::Receiver<bool>,
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
        // The watchdog below applies `header_read_timeout`: hyper's own arms a timer per request.
        .header_read_timeout(None)
        .max_buf_size((limits.max_header_bytes + 8192).max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let builder = match proto {
        Proto::H1 => builder.http1_only(),
        Proto::H2 => builder.http2_only(),
    };
    let header_timeout = matches!(proto, Proto::H1).then_some(limits.header_read_timeout.0);
    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), conn.clone(), req));
    let conn_fut = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn_fut);
    // The timeouts run in a task of their own, so that a request wakes this task without polling
    // a timer or the drain signal as well: the watchdog wakes it only to close.
    let watchdog = tokio::spawn(conn_watchdog(state.clone(), drain_rx, limits.idle_timeout.0, header_timeout));
    let mut graceful = false;
    loop {
        tokio::select! {
            biased;
            _ = conn_fut.as_mut() => break,
            () = state.close.notified() => {
                if state.close_kind.load(Ordering::Acquire) == CLOSE_NOW {
                    tracing::debug!("request head not received within header_read_timeout: closing");
                    break;
                }
                if !graceful {
                    graceful = true;
                    conn_fut.as_mut().graceful_shutdown();
                }
            }
        }
    }
    watchdog.abort();
}

/// A connection's timeouts, checked every `period`:
/// - idle: no request in flight and no bytes moving for `idle` closes it gracefully;
/// - header (HTTP/1.1): a request head must arrive whole within `header` of its first byte, and
///   the first one within `header` of the connection's start (slowloris), else it is closed at
///   once. A keep-alive connection waiting for its next request is bound by `idle`.
///
/// A drain signal closes gracefully at once. Each check counts time only from the check that
/// first saw the state, so a timeout fires between its limit and its limit plus one period,
/// never early.
async fn conn_watchdog(
    state: Arc<ConnState>,
    mut drain_rx: watch::Receiver<bool>,
    idle: Duration,
    header: Option<Duration>,
) {
    let close = |kind: u8| {
        state.close_kind.store(kind, Ordering::Release);
        state.close.notify_one();
    };
    if *drain_rx.borrow() {
        return close(CLOSE_GRACEFUL);
    }
    let period = (header.map_or(idle, |h| h.min(idle)) / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_for: Option<Duration> = None;
    // (heads completed when the wait was first seen, time waited since)
    let mut head_wait: Option<(u64, Duration)> = None;
    loop {
        tokio::select! {
            _ = drain_rx.changed() => return close(CLOSE_GRACEFUL),
            _ = tick.tick() => {}
        }
        idle_for = if state.idle_tick() { Some(idle_for.map_or(Duration::ZERO, |t| t + period)) } else { None };
        if idle_for.is_some_and(|t| t >= idle) {
            return close(CLOSE_GRACEFUL);
        }
        let Some(header) = header else { continue };
        let heads = state.heads.load(Ordering::Relaxed);
        let waiting =
            state.partial_head.load(Ordering::Relaxed) || (heads == 0 && state.in_flight.load(Ordering::Relaxed) == 0);
        head_wait = match head_wait {
            Some((n, t)) if waiting && n == heads => Some((n, t + period)),
            _ if waiting => Some((heads, Duration::ZERO)),
            _ => None,
        };
        if head_wait.is_some_and(|(_, t)| t >= header) {
            return close(CLOSE_NOW);
        }
    }
}
