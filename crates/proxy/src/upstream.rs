//! Upstream pools: endpoints, load balancing (round robin, least-request), keep-alive
//! connection pooling (`client`, one per worker), active health checks and passive ejection.
//!
//! Invariant: an endpoint receives new requests only while it is `healthy` (active checks)
//! and not ejected (passive); with neither check configured every endpoint stays in.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use palisade_core::config::{Balance, HealthCheck, Upstream};
use prometheus_client::metrics::gauge::Gauge;

use crate::body::RequestBody;
use crate::client::Client;
use crate::metrics::Metrics;

pub struct Endpoint {
    pub(crate) address: String,
    /// `scheme://authority/`: where the client connects (and the `Host` when the request has none).
    pub(crate) base: Uri,
    healthy: AtomicBool,
    ejected_until_ms: AtomicU64,
    failures: AtomicU32,
    in_flight: AtomicUsize,
    health_passes: AtomicU32,
    health_fails: AtomicU32,
    gauge: Gauge,
}

impl Endpoint {
    pub(crate) fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Pool {
    pub(crate) name: Arc<str>,
    pub(crate) config: Upstream,
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    /// One keep-alive client per worker thread (and a last one for the main runtime), so a
    /// request and its upstream connection never cross threads.
    clients: Box<[Arc<Client>]>,
    rr: AtomicUsize,
    epoch: Instant,
    health_started: AtomicBool,
}

impl Pool {
    pub(crate) fn new(
        name: &str,
        config: &Upstream,
        clients: Box<[Arc<Client>]>,
        tls: bool,
        metrics: &Metrics,
    ) -> Result<Pool, String> {
        let scheme = if tls { Scheme::HTTPS } else { Scheme::HTTP };
        let endpoints = config
            .endpoints
            .iter()
            .map(|ep| {
                let authority: Authority = ep.parse().map_err(|e| format!("endpoint {ep:?}: {e}"))?;
                let base = Uri::builder()
                    .scheme(scheme.clone())
                    .authority(authority)
                    .path_and_query("/")
                    .build()
                    .map_err(|e| format!("endpoint {ep:?}: {e}"))?;
                let gauge = metrics.endpoint_gauge(name, ep);
                gauge.set(1);
                Ok(Arc::new(Endpoint {
                    address: ep.clone(),
                    base,
                    healthy: AtomicBool::new(true),
                    ejected_until_ms: AtomicU64::new(0),
                    failures: AtomicU32::new(0),
                    in_flight: AtomicUsize::new(0),
                    health_passes: AtomicU32::new(0),
                    health_fails: AtomicU32::new(0),
                    gauge,
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Pool {
            name: name.into(),
            config: config.clone(),
            endpoints,
            clients,
            rr: AtomicUsize::new(0),
            epoch: Instant::now(),
            health_started: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Healthy and not ejected. `now` is read from the clock only when an ejection must be
    /// compared with it (never, while nothing has been ejected).
    fn available(&self, ep: &Endpoint, now: &std::cell::Cell<Option<u64>>) -> bool {
        if !ep.healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = ep.ejected_until_ms.load(Ordering::Relaxed);
        until == 0
            || until
                <= now.get().unwrap_or_else(|| {
                    let t = self.now_ms();
                    now.set(Some(t));
                    t
                })
    }

    /// Pick an endpoint, avoiding `exclude` (the one that just failed) when another is available.
    pub(crate) fn select(&self, exclude: Option<usize>) -> Option<usize> {
        let n = self.endpoints.len();
        let now = std::cell::Cell::new(None);
        let start = self.rr.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n).map(|i| (start + i) % n);
        let ok = |i: &usize| Some(*i) != exclude && self.available(&self.endpoints[*i], &now);
        match self.config.balance {
            Balance::RoundRobin => candidates.clone().find(ok),
            Balance::LeastRequest => {
                candidates.filter(ok).min_by_key(|i| self.endpoints[*i].in_flight.load(Ordering::Relaxed))
            }
        }
        .or_else(|| exclude.filter(|i| self.available(&self.endpoints[*i], &now)))
    }

    /// The client owned by the calling worker thread.
    pub(crate) fn client(&self) -> &Client {
        let last = self.clients.len() - 1;
        &self.clients[crate::worker::current().min(last)]
    }

    /// Send `req` (origin-form URI) to endpoint `i` on the calling worker's client.
    pub(crate) async fn send(
        &self,
        i: usize,
        req: Request<RequestBody>,
    ) -> Result<http::Response<crate::client::UpstreamBody>, crate::client::ClientError> {
        self.client().request(i, &self.endpoints[i].base, req).await
    }

    pub(crate) fn acquire(&self, i: usize) -> Arc<Endpoint> {
        let ep = self.endpoints[i].clone();
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        ep
    }

    /// Passive health: record the outcome of a proxied request.
    pub(crate) fn report(&self, i: usize, success: bool) {
        let ep = &self.endpoints[i];
        if success {
            if ep.failures.load(Ordering::Relaxed) != 0 {
                ep.failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let limit = self.config.passive_ejection.consecutive_failures;
        if limit == 0 {
            return;
        }
        let n = ep.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= limit {
            ep.failures.store(0, Ordering::Relaxed);
            let until = self.now_ms() + self.config.passive_ejection.ejection_time.0.as_millis() as u64;
            ep.ejected_until_ms.store(until, Ordering::Relaxed);
            ep.gauge.set(0);
            let (ep2, wait) = (ep.clone(), self.config.passive_ejection.ejection_time.0);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                ep2.gauge.set(i64::from(ep2.healthy.load(Ordering::Relaxed)));
            });
            tracing::warn!(upstream = %self.name, endpoint = %ep.address, failures = n, "endpoint ejected after consecutive failures");
        }
    }

    /// Start active health checking once per pool; the task ends when the pool is dropped.
    pub(crate) fn start_health_checks(self: &Arc<Self>) {
        let Some(hc) = self.config.health_check.clone() else { return };
        if self.health_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(health_loop(weak, hc));
    }

    async fn check(&self, i: usize, hc: &HealthCheck) -> bool {
        let path = PathAndQuery::from_maybe_shared(hc.path.clone()).unwrap_or_else(|_| PathAndQuery::from_static("/"));
        let Ok(req) = Request::builder()
            .method(Method::GET)
            .uri(Uri::from(path))
            .header(http::header::USER_AGENT, "palisade-health-check")
            .body(RequestBody::empty())
        else {
            return false;
        };
        let checked = async {
            let resp = self.send(i, req).await.ok()?;
            let pass = resp.status().is_success();
            // Read the (small) body so the connection can be reused.
            http_body_util::BodyExt::collect(resp.into_body()).await.ok()?;
            Some(pass)
        };
        matches!(tokio::time::timeout(hc.timeout.0, checked).await, Ok(Some(true)))
    }

    fn record_check(&self, i: usize, pass: bool, hc: &HealthCheck) {
        let ep = &self.endpoints[i];
        if pass {
            ep.health_fails.store(0, Ordering::Relaxed);
            let n = ep.health_passes.fetch_add(1, Ordering::Relaxed) + 1;
            // As in Envoy, passing active checks also lifts a passive ejection.
            let ejected = ep.ejected_until_ms.load(Ordering::Relaxed) > self.now_ms();
            if (!ep.healthy.load(Ordering::Relaxed) || ejected) && n >= hc.healthy_threshold {
                ep.healthy.store(true, Ordering::Relaxed);
                ep.ejected_until_ms.store(0, Ordering::Relaxed);
                tracing::info!(upstream = %self.name, endpoint = %ep.address, "endpoint healthy");
            }
        } else {
            ep.health_passes.store(0, Ordering::Relaxed);
            let n = ep.health_fails.fetch_add(1, Ordering::Relaxed) + 1;
            if ep.healthy.load(Ordering::Relaxed) && n >= hc.unhealthy_threshold {
                ep.healthy.store(false, Ordering::Relaxed);
                tracing::warn!(upstream = %self.name, endpoint = %ep.address, failures = n, "endpoint unhealthy");
            }
        }
        self.update_gauges();
    }

    pub(crate) fn update_gauges(&self) {
        let now = std::cell::Cell::new(None);
        for ep in &self.endpoints {
            ep.gauge.set(i64::from(self.available(ep, &now)));
        }
    }
}

async fn health_loop(pool: Weak<Pool>, hc: HealthCheck) {
    let mut tick = tokio::time::interval(hc.interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(p) = pool.upgrade() else { return };
        let checks = (0..p.endpoints.len()).map(|i| {
            let p = p.clone();
            let hc = hc.clone();
            async move { (i, p.check(i, &hc).await) }
        });
        let mut set = tokio::task::JoinSet::new();
        for c in checks {
            set.spawn(c);
        }
        while let Some(r) = set.join_next().await {
            if let Ok((i, pass)) = r {
                p.record_check(i, pass, &hc);
            }
        }
    }
}

/// Build one worker's keep-alive client for a pool. `tls`: the client config and, when set, the
/// fixed server name to send and verify (else the endpoint host).
pub(crate) fn build_client(
    cfg: &Upstream,
    tls: Option<(rustls::ClientConfig, Option<rustls::pki_types::ServerName<'static>>)>,
) -> Arc<Client> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout.0));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let connector = match tls {
        Some((c, fixed)) => {
            let b = builder.with_tls_config(c).https_only();
            match fixed {
                Some(name) => b
                    .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
                    .enable_http1()
                    .wrap_connector(http),
                None => b.enable_http1().wrap_connector(http),
            }
        }
        None => builder
            .with_tls_config(
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map(|b| b.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth())
                    .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions")),
            )
            .https_or_http()
            .enable_http1()
            .wrap_connector(http),
    };
    Client::new(connector, cfg.endpoints.len(), cfg.keepalive_timeout.0, cfg.max_idle_per_endpoint)
}
