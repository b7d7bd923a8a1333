//! Whole-file semantic checks. Every problem is collected, not just the first.

use std::collections::HashSet;

use crate::diagnostic::{did_you_mean, Issue};

use super::model::*;

pub(super) fn validate(c: &Config) -> Vec<Issue> {
    let mut out = Vec::new();
    let l = &c.listeners;
    if l.http.is_none() && l.https.is_none() {
        out.push(Issue::new("listeners", "at least one of listeners.http or listeners.https is required"));
    }
    if let Some(h) = &l.http {
        if h.redirect_to_https && l.https.is_none() {
            out.push(Issue::new("listeners.http.redirect_to_https", "redirect_to_https needs listeners.https"));
        }
    }
    if let Some(s) = &l.https {
        if s.certificates.is_empty() {
            out.push(Issue::new("listeners.https.certificates", "at least one certificate is required"));
        }
        let mut seen = HashSet::new();
        for (i, cert) in s.certificates.iter().enumerate() {
            for (j, name) in cert.server_names.iter().enumerate() {
                let p = format!("listeners.https.certificates[{i}].server_names[{j}]");
                if let Err(m) = check_host_pattern(name) {
                    out.push(Issue::new(p.clone(), m));
                }
                if !seen.insert(name.to_ascii_lowercase()) {
                    out.push(Issue::new(p, format!("server name {name:?} is listed for two certificates")));
                }
            }
        }
    }
    if c.workers > 1024 {
        out.push(Issue::new("workers", "at most 1024 worker threads (0 = one per core)"));
    }
    let lim = &c.limits;
    if lim.max_header_bytes < 1024 {
        out.push(Issue::new("limits.max_header_bytes", "must be at least 1024"));
    }
    if lim.max_connections == 0 {
        out.push(Issue::new("limits.max_connections", "must be at least 1"));
    }
    for (f, d) in [("header_read_timeout", lim.header_read_timeout), ("idle_timeout", lim.idle_timeout)] {
        if d.0.is_zero() {
            out.push(Issue::new(format!("limits.{f}"), "must be greater than zero"));
        }
    }

    for (name, u) in &c.upstreams {
        let base = format!("upstreams.{name}");
        if u.endpoints.is_empty() {
            out.push(Issue::new(format!("{base}.endpoints"), "at least one endpoint is required"));
        }
        let mut seen = HashSet::new();
        for (i, ep) in u.endpoints.iter().enumerate() {
            let p = format!("{base}.endpoints[{i}]");
            if let Err(m) = check_endpoint(ep) {
                out.push(Issue::new(p.clone(), m));
            }
            if !seen.insert(ep) {
                out.push(Issue::new(p, format!("endpoint {ep:?} is listed twice")));
            }
        }
        for (f, d) in [("connect_timeout", u.connect_timeout), ("request_timeout", u.request_timeout)] {
            if d.0.is_zero() {
                out.push(Issue::new(format!("{base}.{f}"), "must be greater than zero"));
            }
        }
        if let Some(h) = &u.health_check {
            if !h.path.starts_with('/') {
                out.push(Issue::new(format!("{base}.health_check.path"), "must start with '/'"));
            }
            if h.interval.0.is_zero() || h.timeout.0.is_zero() {
                out.push(Issue::new(format!("{base}.health_check"), "interval and timeout must be greater than zero"));
            }
            if h.healthy_threshold == 0 {
                out.push(Issue::new(format!("{base}.health_check.healthy_threshold"), "must be at least 1"));
            }
            if h.unhealthy_threshold == 0 {
                out.push(Issue::new(format!("{base}.health_check.unhealthy_threshold"), "must be at least 1"));
            }
        }
        if let Some(tls) = &u.tls {
            if let Some(sn) = &tls.server_name {
                if check_host_pattern(sn).is_err() || sn.starts_with("*.") {
                    out.push(Issue::new(format!("{base}.tls.server_name"), format!("invalid server name {sn:?}")));
                }
            }
        }
    }

    let mut names = HashSet::new();
    for (i, r) in c.routes.iter().enumerate() {
        let base = format!("routes[{i}]");
        if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            out.push(Issue::new(format!("{base}.name"), "route names use letters, digits, '-', '_' and '.'"));
        } else if !names.insert(&r.name) {
            out.push(Issue::new(format!("{base}.name"), format!("duplicate route name {:?}", r.name)));
        }
        if !c.upstreams.contains_key(&r.upstream) {
            let hint = did_you_mean(&r.upstream, c.upstreams.keys().map(String::as_str));
            out.push(Issue::new(format!("{base}.upstream"), format!("unknown upstream {:?}{hint}", r.upstream)));
        }
        for (j, h) in r.matches.hosts.iter().enumerate() {
            if let Err(m) = check_host_pattern(h) {
                out.push(Issue::new(format!("{base}.match.hosts[{j}]"), m));
            }
        }
        for (j, m) in r.matches.methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                out.push(Issue::new(
                    format!("{base}.match.methods[{j}]"),
                    format!("invalid method {m:?} (use upper case, e.g. GET)"),
                ));
            }
        }
        if let Some(pm) = &r.matches.path {
            let set = [pm.exact.is_some(), pm.prefix.is_some(), pm.regex.is_some()];
            if set.iter().filter(|b| **b).count() != 1 {
                out.push(Issue::new(format!("{base}.match.path"), "set exactly one of exact, prefix or regex"));
            }
            for (f, v) in [("exact", &pm.exact), ("prefix", &pm.prefix)] {
                if let Some(p) = v {
                    if !p.starts_with('/') {
                        out.push(Issue::new(
                            format!("{base}.match.path.{f}"),
                            format!("path {p:?} must start with '/'"),
                        ));
                    }
                }
            }
            if let Some(re) = &pm.regex {
                if let Err(e) = regex::Regex::new(&format!("^(?:{re})$")) {
                    let first = e.to_string().lines().last().unwrap_or_default().trim().to_string();
                    out.push(Issue::new(format!("{base}.match.path.regex"), format!("invalid regex: {first}")));
                }
            }
        }
        for (section, ops) in [("request_headers", &r.request_headers), ("response_headers", &r.response_headers)] {
            for (k, v) in &ops.set {
                if !valid_header_name(k) {
                    out.push(Issue::new(format!("{base}.{section}.set.{k}"), format!("invalid header name {k:?}")));
                }
                if v.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                    out.push(Issue::new(format!("{base}.{section}.set.{k}"), "header value has control characters"));
                }
            }
            for (j, k) in ops.remove.iter().enumerate() {
                if !valid_header_name(k) {
                    out.push(Issue::new(format!("{base}.{section}.remove[{j}]"), format!("invalid header name {k:?}")));
                }
            }
        }
    }
    out
}

fn valid_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn valid_dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// `example.com`, `*.example.com` or an IP address.
pub(crate) fn check_host_pattern(h: &str) -> Result<(), String> {
    if h.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let rest = h.strip_prefix("*.").unwrap_or(h);
    if rest.is_empty() || rest.len() > 253 || !rest.split('.').all(valid_dns_label) {
        return Err(format!("invalid host name {h:?} (use exact names or a leading \"*.\" wildcard)"));
    }
    Ok(())
}

fn check_endpoint(ep: &str) -> Result<(), String> {
    if ep.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = ep.rsplit_once(':') else {
        return Err(format!("endpoint {ep:?} must be host:port"));
    };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("endpoint {ep:?} has an invalid port"));
    }
    if host.starts_with("*.") || check_host_pattern(host).is_err() {
        return Err(format!("endpoint {ep:?} has an invalid host"));
    }
    Ok(())
}
