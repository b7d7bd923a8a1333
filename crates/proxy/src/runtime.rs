//! Compile a validated config into the runtime form the request path uses. The request path
//! never touches config types. An unchanged upstream keeps its pool (connections and health
//! state) across reloads.

use std::collections::HashMap;
use std::sync::Arc;

use palisade_core::config::{Config, Limits};
use palisade_core::{ConfigError, Issue, LoadedConfig};
use tokio_rustls::TlsAcceptor;

use crate::filter::{Filter, HeaderRewrite};
use crate::metrics::Metrics;
use crate::route::{CompiledRoute, Router};
use crate::tls;
use crate::upstream::{build_client, Pool};

pub struct Runtime {
    pub(crate) router: Router,
    pub(crate) pools: HashMap<String, Arc<Pool>>,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) limits: Limits,
    /// Port of the HTTPS listener when the HTTP listener only redirects.
    pub(crate) redirect_port: Option<u16>,
    pub(crate) access_log: bool,
    pub(crate) config: Config,
}

/// `workers` is the number of worker threads; each gets its own upstream clients.
pub fn compile(
    loaded: &LoadedConfig,
    metrics: &Arc<Metrics>,
    previous: Option<&Runtime>,
    workers: usize,
) -> Result<Runtime, ConfigError> {
    let c = &loaded.config;
    let mut issues: Vec<Issue> = Vec::new();

    let tls = match &c.listeners.https {
        Some(l) => match tls::server_config(loaded, l) {
            Ok(cfg) => Some(TlsAcceptor::from(cfg)),
            Err(mut i) => {
                issues.append(&mut i);
                None
            }
        },
        None => None,
    };

    let mut pools = HashMap::new();
    for (name, u) in &c.upstreams {
        let path = format!("upstreams.{name}");
        if let Some(prev) = previous.and_then(|p| p.pools.get(name)) {
            if prev.config == *u {
                pools.insert(name.clone(), prev.clone());
                continue;
            }
        }
        let client_tls = match &u.tls {
            Some(t) => match tls::upstream_client_config(loaded, &path, t) {
                Ok(cfg) => Some(cfg),
                Err(i) => {
                    issues.push(i);
                    continue;
                }
            },
            None => None,
        };
        let tls_on = client_tls.is_some();
        let clients = (0..=workers).map(|_| build_client(u, client_tls.clone())).collect();
        match Pool::new(name, u, clients, tls_on, metrics) {
            Ok(p) => {
                pools.insert(name.clone(), Arc::new(p));
            }
            Err(m) => issues.push(Issue::new(format!("{path}.endpoints"), m)),
        }
    }

    let mut router = Router::default();
    for (i, r) in c.routes.iter().enumerate() {
        let Some(pool) = pools.get(&r.upstream) else { continue };
        let mut filters: Vec<Arc<dyn Filter>> = Vec::new();
        for (section, ops, response) in
            [("request_headers", &r.request_headers, false), ("response_headers", &r.response_headers, true)]
        {
            match HeaderRewrite::new(ops, response) {
                Ok(Some(f)) => filters.push(Arc::new(f)),
                Ok(None) => {}
                Err(m) => issues.push(Issue::new(format!("routes[{i}].{section}"), m)),
            }
        }
        match CompiledRoute::new(r, pool.clone(), filters, metrics.route(&r.name)) {
            Ok(cr) => router.routes.push(Arc::new(cr)),
            Err(m) => issues.push(Issue::new(format!("routes[{i}].match"), m)),
        }
    }

    if !issues.is_empty() {
        return Err(loaded.locate(issues));
    }
    let redirect_port = match (&c.listeners.http, &c.listeners.https) {
        (Some(h), Some(s)) if h.redirect_to_https => Some(s.address.port()),
        _ => None,
    };
    Ok(Runtime {
        router,
        pools,
        tls,
        limits: c.limits.clone(),
        redirect_port,
        access_log: c.access_log.enabled,
        config: c.clone(),
    })
}

impl Runtime {
    /// Start background work (health checks) for pools that do not run it yet.
    pub(crate) fn activate(&self) {
        for p in self.pools.values() {
            p.start_health_checks();
            p.update_gauges();
        }
    }
}

/// Validate and compile without starting anything (`palisade config check`).
pub fn check(loaded: &LoadedConfig) -> Result<(), ConfigError> {
    compile(loaded, &Arc::new(Metrics::new()), None, 1).map(|_| ())
}
