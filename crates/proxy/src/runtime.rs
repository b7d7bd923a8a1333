//! Compile a validated config into the runtime form the request path uses. The request path
//! never touches config types. An unchanged upstream keeps its pool (connections and health
//! state) across reloads.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use palisade_core::config::{Config, Limits};
use palisade_core::{ConfigError, Issue, LoadedConfig};
use tokio_rustls::TlsAcceptor;

use crate::audit::FileSink;
use crate::filter::{Filter, HeaderRewrite};
use crate::metrics::Metrics;
use crate::route::{CompiledRoute, Router};
use crate::security::Security;
use crate::tls;
use crate::upstream::{build_client, Pool};
use palisade_core::config::AuditShip;
use palisade_core::{AuditSink, SpiffeId, SvidSource};
use palisade_shipper::ShippingSink;
use rustls::pki_types::ServerName;

pub struct Runtime {
    pub(crate) router: Router,
    pub(crate) pools: HashMap<String, Arc<Pool>>,
    pub(crate) tls: Option<TlsAcceptor>,
    /// The mesh listener's mTLS (SVID from the gateway's source, read per handshake).
    pub(crate) mesh_tls: Option<TlsAcceptor>,
    pub(crate) limits: Limits,
    /// Port of the HTTPS listener when the HTTP listener only redirects.
    pub(crate) redirect_port: Option<u16>,
    pub(crate) access_log: bool,
    pub(crate) config: Config,
    pub(crate) audit: Option<Arc<dyn AuditSink>>,
    audit_file: Option<(std::path::PathBuf, Arc<dyn AuditSink>)>,
    shipper: Option<(AuditShip, Arc<ShippingSink>)>,
    trusted_proxies: Vec<ipnet::IpNet>,
    security: Security,
}

/// Whether the config needs an SVID source (a mesh listener or mesh upstreams).
pub(crate) fn needs_mesh(c: &Config) -> bool {
    c.listeners.mesh.is_some() || c.upstreams.values().any(|u| u.mesh)
}

const NO_SOURCE: &str = "the gateway was started without the mesh SVID source: restart it with the mesh section";

/// `workers` is the number of worker threads; each gets its own upstream clients. `mesh` is the
/// SVID source for the mesh listener and mesh upstreams.
pub fn compile(
    loaded: &LoadedConfig,
    metrics: &Arc<Metrics>,
    previous: Option<&Runtime>,
    workers: usize,
    mesh: Option<&Arc<dyn SvidSource>>,
) -> Result<Runtime, ConfigError> {
    compile_with(loaded, metrics, previous, workers, mesh, false)
}

/// `dry_run`: check the audit file's place instead of creating it (`palisade config check` writes nothing).
fn compile_with(
    loaded: &LoadedConfig,
    metrics: &Arc<Metrics>,
    previous: Option<&Runtime>,
    workers: usize,
    mesh: Option<&Arc<dyn SvidSource>>,
    dry_run: bool,
) -> Result<Runtime, ConfigError> {
    let c = &loaded.config;
    let mut issues: Vec<Issue> = Vec::new();

    let trust_domain = c.mesh.as_ref().map_or("", |m| m.trust_domain.as_str());
    let mesh_tls = match (&c.listeners.mesh, mesh) {
        (None, _) => None,
        (Some(_), Some(src)) => Some(TlsAcceptor::from(crate::mesh::server_config(src.clone(), trust_domain))),
        (Some(_), None) => {
            issues.push(Issue::new("listeners.mesh", NO_SOURCE));
            None
        }
    };

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
        let client_tls = match (&u.tls, &u.identity) {
            (Some(t), _) => match tls::upstream_client_config(loaded, &path, t) {
                Ok(cfg) => {
                    let sni = t.server_name.clone().and_then(|n| ServerName::try_from(n).ok());
                    Some((cfg, sni))
                }
                Err(i) => {
                    issues.push(i);
                    continue;
                }
            },
            (None, Some(id)) if u.mesh => {
                let (Some(src), Ok(id)) = (mesh, SpiffeId::parse(id)) else {
                    issues.push(Issue::new(format!("{path}.mesh"), NO_SOURCE));
                    continue;
                };
                let cfg = (*crate::mesh::client_config(src.clone(), id)).clone();
                Some((cfg, ServerName::try_from(crate::mesh::MESH_SNI).ok()))
            }
            _ => None,
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

    let audit_file = c.audit.file.as_ref().map(|f| loaded.resolve_path(f));
    let file_sink: Option<Arc<dyn AuditSink>> = match (&audit_file, previous) {
        (Some(f), Some(p)) if p.audit_file.as_ref().map(|(path, _)| path) == Some(f) => {
            p.audit_file.as_ref().map(|(_, s)| s.clone())
        }
        (Some(f), _) if dry_run => {
            if let Err(m) = FileSink::check(f) {
                issues.push(Issue::new("audit.file", m));
            }
            None
        }
        (Some(f), _) => match FileSink::open(f) {
            Ok(s) => Some(Arc::new(s)),
            Err(m) => {
                issues.push(Issue::new("audit.file", m));
                None
            }
        },
        (None, _) => None,
    };
    // The shipper holds its spool directory locked: a reload with the same settings keeps it.
    let shipper: Option<(AuditShip, Arc<ShippingSink>)> = match (&c.audit.ship, previous) {
        (Some(ship), Some(p)) if p.shipper.as_ref().is_some_and(|(old, _)| old == ship) => p.shipper.clone(),
        (Some(ship), _) => match crate::audit::open_shipper(ship, &loaded.base_dir, dry_run) {
            Ok(s) => s.map(|s| (ship.clone(), s)),
            Err(m) => {
                issues.push(Issue::new("audit.ship", m));
                None
            }
        },
        (None, _) => None,
    };
    let mut sinks: Vec<Arc<dyn AuditSink>> = file_sink.iter().cloned().collect();
    if let Some((_, s)) = &shipper {
        sinks.push(s.clone());
    }
    // A proxy with a mesh listener and no http(s) listener is a sidecar.
    let sidecar = c.listeners.mesh.is_some() && c.listeners.http.is_none() && c.listeners.https.is_none();
    let audit: Option<Arc<dyn AuditSink>> = (!sinks.is_empty()).then(|| {
        Arc::new(crate::audit::Labeled {
            sinks,
            source: if sidecar { "sidecar" } else { "gateway" },
            service: mesh.map(|m| m.current().spiffe_id.to_string()),
        }) as Arc<dyn AuditSink>
    });
    let audit_file = audit_file.zip(file_sink);
    let trusted_proxies = c.client_ip.trusted_proxies.iter().filter_map(|p| parse_net(p)).collect();

    let security = Security::compile(loaded, previous.map(|p| &p.security), mesh, &mut issues);
    let mut router = Router::default();
    for (i, r) in c.routes.iter().enumerate() {
        let Some(pool) = pools.get(&r.upstream) else { continue };
        let mut filters: Vec<Arc<dyn Filter>> = security.route_filters(loaded, i, r, &mut issues);
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
        mesh_tls,
        limits: c.limits.clone(),
        redirect_port,
        access_log: c.access_log.enabled,
        config: c.clone(),
        audit,
        audit_file,
        shipper,
        trusted_proxies,
        security,
    })
}

fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>().ok().or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

impl Runtime {
    /// The client's address: the peer, or, when the peer is a trusted proxy, the rightmost
    /// `X-Forwarded-For` entry that is not a trusted proxy.
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        if self.trusted_proxies.is_empty() || !trusted(&peer) {
            return peer;
        }
        let mut client = peer;
        for v in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(v) = v.to_str() else { return client };
            for part in v.rsplit(',') {
                match part.trim().parse::<IpAddr>() {
                    Ok(ip) if trusted(&ip) => client = ip,
                    Ok(ip) => return ip,
                    Err(_) => return client,
                }
            }
        }
        client
    }

    /// Start background work (health checks) for pools that do not run it yet.
    pub(crate) fn activate(&self, metrics: &Metrics) {
        self.security.activate();
        metrics.set_audit_shipper(self.shipper.as_ref().map(|(_, s)| s));
        for p in self.pools.values() {
            p.start_health_checks();
            p.update_gauges();
        }
    }
}

/// Validate and compile without starting anything (`palisade config check`).
pub fn check(loaded: &LoadedConfig) -> Result<(), ConfigError> {
    // The SVID is fetched at start; the configs built here never ask for it.
    let none = crate::mesh::NoSvid::new().map_err(|m| loaded.locate(vec![Issue::new("mesh", m)]))?;
    let source: Arc<dyn SvidSource> = Arc::new(none);
    compile_with(loaded, &Arc::new(Metrics::new()), None, 1, Some(&source), true).map(|_| ())
}
