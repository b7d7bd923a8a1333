//! Whole-file semantic checks. Every problem is collected, not just the first.

use std::collections::HashSet;

use crate::diagnostic::{did_you_mean, Issue};

use super::model::*;

pub(super) fn validate(c: &Config) -> Vec<Issue> {
    let mut out = Vec::new();
    let l = &c.listeners;
    if l.http.is_none() && l.https.is_none() && l.mesh.is_none() && l.local.is_empty() {
        out.push(Issue::new("listeners", "at least one of listeners.http, https, mesh or local is required"));
    }
    validate_mesh(c, &mut out);
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

    validate_security(c, &mut out);
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
        if let Some(ls) = &r.matches.listeners {
            if ls.is_empty() {
                out.push(Issue::new(
                    format!("{base}.match.listeners"),
                    "list at least one listener (omit the field for every listener except mesh)",
                ));
            }
            let known = listener_names(&c.listeners);
            for (j, name) in ls.iter().enumerate() {
                if !known.contains(&name.as_str()) {
                    let hint = did_you_mean(name, known.iter().copied());
                    out.push(Issue::new(
                        format!("{base}.match.listeners[{j}]"),
                        format!("unknown listener {name:?}{hint}"),
                    ));
                }
            }
        }
        validate_route_security(c, r, &base, &mut out);
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

fn check_cidr(s: &str) -> bool {
    let (ip, len) = s.split_once('/').unwrap_or((s, ""));
    match ip.parse::<std::net::IpAddr>() {
        Ok(a) => len.is_empty() || len.parse::<u8>().is_ok_and(|n| n <= if a.is_ipv4() { 32 } else { 128 }),
        Err(_) => false,
    }
}

const JWT_ALGS: &[&str] = &["ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"];

fn validate_security(c: &Config, out: &mut Vec<Issue>) {
    if let Some(w) = &c.waf {
        if w.rules.is_empty() && w.directives.trim().is_empty() {
            out.push(Issue::new("waf.rules", "list at least one SecLang file (or give directives)"));
        }
        if !(1..=4).contains(&w.paranoia_level) {
            out.push(Issue::new("waf.paranoia_level", "must be 1, 2, 3 or 4"));
        }
        if w.inbound_threshold == 0 {
            out.push(Issue::new("waf.inbound_threshold", "must be at least 1 (0 would block every request)"));
        }
        if w.outbound_threshold == 0 {
            out.push(Issue::new("waf.outbound_threshold", "must be at least 1"));
        }
    }
    if let Some(v) = &c.vault {
        if !(v.server.starts_with("https://") || v.server.starts_with("http://")) {
            out.push(Issue::new("vault.server", "the server must be an http(s) URL"));
        }
        if v.timeout.0.is_zero() {
            out.push(Issue::new("vault.timeout", "must be greater than zero"));
        }
    }
    for (i, p) in c.client_ip.trusted_proxies.iter().enumerate() {
        if !check_cidr(p) {
            out.push(Issue::new(format!("client_ip.trusted_proxies[{i}]"), format!("invalid CIDR {p:?}")));
        }
    }
    let mut issuers = HashSet::new();
    for (i, iss) in c.authentication.jwt_issuers.iter().enumerate() {
        let base = format!("authentication.jwt_issuers[{i}]");
        if !(iss.issuer.starts_with("https://") || iss.issuer.starts_with("http://")) {
            out.push(Issue::new(format!("{base}.issuer"), "the issuer must be an http(s) URL"));
        }
        if !issuers.insert(iss.issuer.trim_end_matches('/')) {
            out.push(Issue::new(format!("{base}.issuer"), format!("issuer {:?} is listed twice", iss.issuer)));
        }
        if let Some(u) = &iss.jwks_uri {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                out.push(Issue::new(format!("{base}.jwks_uri"), "jwks_uri must be an http(s) URL"));
            }
        }
        if iss.algorithms.is_empty() {
            out.push(Issue::new(format!("{base}.algorithms"), "at least one algorithm is required"));
        }
        for (j, a) in iss.algorithms.iter().enumerate() {
            if !JWT_ALGS.contains(&a.as_str()) {
                let why = if a.eq_ignore_ascii_case("none") || a.starts_with("HS") {
                    " (only asymmetric algorithms are accepted)".to_string()
                } else {
                    did_you_mean(a, JWT_ALGS.iter().copied())
                };
                out.push(Issue::new(format!("{base}.algorithms[{j}]"), format!("unsupported algorithm {a:?}{why}")));
            }
        }
        if iss.typ.is_empty() {
            out.push(Issue::new(format!("{base}.typ"), "at least one accepted typ is required"));
        }
        if iss.max_token_bytes < 256 {
            out.push(Issue::new(format!("{base}.max_token_bytes"), "must be at least 256"));
        }
    }
    if let Some(k) = &c.authentication.api_keys {
        if !valid_header_name(&k.header) {
            out.push(Issue::new("authentication.api_keys.header", format!("invalid header name {:?}", k.header)));
        }
        let mut per_client: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut hashes = HashSet::new();
        for (i, e) in k.keys.iter().enumerate() {
            let base = format!("authentication.api_keys.keys[{i}]");
            let hex = e.hash.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(Issue::new(
                    format!("{base}.hash"),
                    "must be sha256:<64 hex digits> (the key itself never goes in the config; see `palisade apikey generate`)",
                ));
            } else if !hashes.insert(hex.to_ascii_lowercase()) {
                out.push(Issue::new(format!("{base}.hash"), "this key hash is listed twice"));
            }
            let n = per_client.entry(&e.client).or_default();
            *n += 1;
            if *n == 3 {
                out.push(Issue::new(
                    format!("{base}.client"),
                    format!("client {:?} has more than two keys (two are active during a rotation)", e.client),
                ));
            }
        }
    }
    if let Some(r) = &c.rate_limiting.redis {
        if !r.url.starts_with("redis://") {
            out.push(Issue::new(
                "rate_limiting.redis.url",
                "must be a redis:// URL (TLS to Redis is not supported yet)",
            ));
        } else if r.url.split("://").nth(1).and_then(|rest| rest.split('/').next()).is_some_and(|a| a.contains('@')) {
            out.push(Issue::new(
                "rate_limiting.redis.url",
                "credentials do not go in the URL; use rate_limiting.redis.password (${ENV} or file:)",
            ));
        }
        if r.timeout.0.is_zero() {
            out.push(Issue::new("rate_limiting.redis.timeout", "must be greater than zero"));
        }
    }
}

const RATE_KEYS: &[&str] = &["principal", "client_id", "api_key", "client_ip", "route"];

fn validate_route_security(c: &Config, r: &Route, base: &str, out: &mut Vec<Issue>) {
    if let Some(w) = &r.waf {
        if c.waf.is_none() && w.mode != WafMode::Off {
            out.push(Issue::new(format!("{base}.waf"), "a route's waf needs the top-level waf section (its rules)"));
        }
        if let Some(pl) = w.paranoia_level {
            if !(1..=4).contains(&pl) {
                out.push(Issue::new(format!("{base}.waf.paranoia_level"), "must be 1, 2, 3 or 4"));
            }
        }
        for (j, x) in w.exclusions.iter().enumerate() {
            let p = format!("{base}.waf.exclusions[{j}]");
            match (&x.rule, &x.tag) {
                (Some(_), Some(_)) => out.push(Issue::new(p, "set rule or tag, not both")),
                (None, None) => out.push(Issue::new(p, "set rule (an id or FIRST-LAST) or tag")),
                _ => {}
            }
        }
    }
    if let Some(a) = &r.authn {
        if a.methods.is_empty() {
            out.push(Issue::new(format!("{base}.authn.methods"), "at least one of jwt, api_key, mtls is required"));
        }
        let mut seen = HashSet::new();
        for (j, m) in a.methods.iter().enumerate() {
            let p = format!("{base}.authn.methods[{j}]");
            if !seen.insert(*m) {
                out.push(Issue::new(p.clone(), "listed twice"));
            }
            match m {
                AuthnMethod::Jwt if c.authentication.jwt_issuers.is_empty() => {
                    out.push(Issue::new(p, "jwt needs authentication.jwt_issuers"))
                }
                AuthnMethod::ApiKey if c.authentication.api_keys.is_none() => {
                    out.push(Issue::new(p, "api_key needs authentication.api_keys"))
                }
                AuthnMethod::Mtls
                    if c.listeners.https.as_ref().and_then(|h| h.client_auth.as_ref()).is_none()
                        && !route_listens_on(r, LISTENER_MESH) =>
                {
                    out.push(Issue::new(p, "mtls needs listeners.https.client_auth, or a route on the mesh listener"))
                }
                _ => {}
            }
        }
        if (a.query_token || a.require_dpop) && !a.methods.contains(&AuthnMethod::Jwt) {
            out.push(Issue::new(format!("{base}.authn"), "query_token and require_dpop apply to the jwt method"));
        }
    }
    if let Some(z) = &r.authz {
        for (j, q) in z.require.iter().enumerate() {
            for (k, m) in q.methods.iter().enumerate() {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                    out.push(Issue::new(
                        format!("{base}.authz.require[{j}].methods[{k}]"),
                        format!("invalid method {m:?}"),
                    ));
                }
            }
            if r.authn.is_none() && (!q.scopes.is_empty() || !q.roles.is_empty() || !q.claims.is_empty()) {
                out.push(Issue::new(
                    format!("{base}.authz.require[{j}]"),
                    "scopes, roles and claims need an authn section on the route",
                ));
            }
        }
        if r.authn.is_none()
            && !z.allow_anonymous
            && z.require.is_empty()
            && c.authorization.policies.is_empty()
            && c.authorization.mesh_policy.is_none()
        {
            out.push(Issue::new(
                format!("{base}.authz"),
                "nothing can permit a request here: add require entries, policies or authn",
            ));
        }
    }
    let mut rl_names = HashSet::new();
    for (j, rl) in r.rate_limit.iter().enumerate() {
        let p = format!("{base}.rate_limit[{j}]");
        if rl.limit == 0 {
            out.push(Issue::new(format!("{p}.limit"), "must be at least 1"));
        }
        if rl.period.0.is_zero() {
            out.push(Issue::new(format!("{p}.period"), "must be greater than zero"));
        }
        if !rl_names.insert(&rl.name) {
            out.push(Issue::new(format!("{p}.name"), format!("duplicate rate limit name {:?}", rl.name)));
        }
        if rl.key.is_empty() {
            out.push(Issue::new(format!("{p}.key"), "at least one key part is required"));
        }
        for (k, part) in rl.key.iter().enumerate() {
            let ok = RATE_KEYS.contains(&part.as_str()) || part.strip_prefix("header:").is_some_and(valid_header_name);
            if !ok {
                let hint = did_you_mean(part, RATE_KEYS.iter().copied());
                out.push(Issue::new(
                    format!("{p}.key[{k}]"),
                    format!("unknown key part {part:?}{hint} (or header:<name>)"),
                ));
            }
        }
        if rl.store == RateStore::Redis && c.rate_limiting.redis.is_none() {
            out.push(Issue::new(format!("{p}.store"), "store: redis needs rate_limiting.redis"));
        }
    }
    if let Some(v) = &r.validate {
        if v.max_json_depth == 0 {
            out.push(Issue::new(format!("{base}.validate.max_json_depth"), "must be at least 1"));
        }
        if v.json_schema.is_some() && v.openapi.is_some() {
            out.push(Issue::new(format!("{base}.validate"), "set json_schema or openapi, not both"));
        }
    }
    if let Some(t) = &r.transform {
        validate_transform(c, t, &format!("{base}.transform"), out);
    }
}

const TOKEN_FORMATS: &[&str] = &["card", "ssn", "phone", "digits"];

/// An RFC 6901 pointer to a member (not the whole document): `/a/b`, `~0` and `~1` escapes.
fn check_pointer(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} is not a JSON pointer: write e.g. /card/number"));
    }
    let mut chars = p.chars();
    while let Some(ch) = chars.next() {
        if ch == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!("{p:?}: `~` must be followed by 0 or 1 (RFC 6901)"));
        }
    }
    Ok(())
}

fn check_vault_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > 128 || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(format!("invalid vault key name {k:?} (letters, digits, - _ .)"));
    }
    Ok(())
}

fn validate_transform(c: &Config, t: &Transform, base: &str, out: &mut Vec<Issue>) {
    if t.max_body_bytes == 0 {
        out.push(Issue::new(format!("{base}.max_body_bytes"), "must be at least 1"));
    }
    let mut needs_vault = !t.request.is_empty();
    // One field rule: its pointer, and exactly one of a token rule (`tok`) or an encryption rule (`enc`).
    let check_field = |p: String,
                       pointer: &str,
                       (tok_name, tok): (&str, Option<&TokenizeRule>),
                       (enc_name, enc): (&str, Option<&EncryptRule>),
                       out: &mut Vec<Issue>| {
        if let Err(m) = check_pointer(pointer) {
            out.push(Issue::new(format!("{p}.pointer"), m));
        }
        match (tok, enc) {
            (Some(rule), None) => {
                if let Err(m) = check_vault_key(&rule.key) {
                    out.push(Issue::new(format!("{p}.{tok_name}.key"), m));
                }
                if !TOKEN_FORMATS.contains(&rule.format.as_str()) {
                    out.push(Issue::new(format!("{p}.{tok_name}.format"), "format is one of card, ssn, phone, digits"));
                }
            }
            (None, Some(e)) => {
                if let Err(m) = check_vault_key(&e.key) {
                    out.push(Issue::new(format!("{p}.{enc_name}.key"), m));
                }
            }
            _ => out.push(Issue::new(p, format!("give exactly one of {tok_name} or {enc_name}"))),
        }
    };
    for (j, q) in t.request.iter().enumerate() {
        let p = format!("{base}.request[{j}]");
        check_field(p, &q.pointer, ("tokenize", q.tokenize.as_ref()), ("encrypt", q.encrypt.as_ref()), out);
    }
    for (j, q) in t.response.iter().enumerate() {
        let p = format!("{base}.response[{j}]");
        check_field(p, &q.pointer, ("detokenize", q.detokenize.as_ref()), ("decrypt", q.decrypt.as_ref()), out);
        needs_vault |= !q.reveal.roles.is_empty() || !q.reveal.scopes.is_empty();
    }
    if needs_vault && c.vault.is_none() {
        out.push(Issue::new(base, "tokenize, encrypt and reveal need the top-level vault section"));
    }
}

/// Whether route `r` takes requests from the listener `name` (see `RouteMatch::listeners`).
fn route_listens_on(r: &Route, name: &str) -> bool {
    match &r.matches.listeners {
        Some(ls) => ls.iter().any(|l| l == name),
        None => name != LISTENER_MESH,
    }
}

/// Names of the configured listeners, as routes refer to them.
fn listener_names(l: &Listeners) -> Vec<&str> {
    let builtin =
        [(l.http.is_some(), LISTENER_HTTP), (l.https.is_some(), LISTENER_HTTPS), (l.mesh.is_some(), LISTENER_MESH)];
    let mut out: Vec<&str> = builtin.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
    out.extend(l.local.iter().map(|x| x.name.as_str()));
    out
}

/// A trust domain as SPIFFE IDs carry it (lowercase letters, digits, '.', '-', '_').
fn check_trust_domain(td: &str) -> Result<(), String> {
    match crate::mesh::SpiffeId::parse(&format!("spiffe://{td}/x")) {
        Ok(id) if id.trust_domain() == td => Ok(()),
        _ => Err(format!("invalid trust domain {td:?} (use a-z, 0-9, '.', '-' and '_')")),
    }
}

fn validate_mesh(c: &Config, out: &mut Vec<Issue>) {
    let l = &c.listeners;
    if let Some(m) = &c.mesh {
        let https = m.server.starts_with("https://");
        let rest = m.server.strip_prefix("https://").or_else(|| m.server.strip_prefix("http://"));
        match rest {
            None => out.push(Issue::new("mesh.server", "must be an http:// or https:// URL")),
            Some(r) if r.split('/').next().is_none_or(str::is_empty) => {
                out.push(Issue::new("mesh.server", "the URL has no host"))
            }
            Some(r) if r.split('/').next().is_some_and(|a| a.contains('@')) => {
                out.push(Issue::new("mesh.server", "credentials do not go in the URL; use mesh.join_token"))
            }
            Some(_) => {}
        }
        if m.server_ca.is_some() && !https {
            out.push(Issue::new("mesh.server_ca", "server_ca needs an https:// mesh.server"));
        }
        if let Err(e) = check_trust_domain(&m.trust_domain) {
            out.push(Issue::new("mesh.trust_domain", e));
        }
        match (&m.join_token, &m.k8s_token_file) {
            (Some(_), Some(_)) => {
                out.push(Issue::new("mesh.k8s_token_file", "set join_token or k8s_token_file, not both"))
            }
            (None, None) => out.push(Issue::new("mesh", "one of join_token or k8s_token_file is required")),
            _ => {}
        }
    }
    if c.authorization.mesh_policy.is_some() && c.mesh.is_none() {
        out.push(Issue::new(
            "authorization.mesh_policy",
            "a mesh policy needs the mesh section (its rules are chosen by this proxy's SPIFFE ID)",
        ));
    }
    if l.mesh.is_some() && c.mesh.is_none() {
        out.push(Issue::new("listeners.mesh", "the mesh listener needs the top-level mesh section"));
    }
    let mut names = HashSet::new();
    for (i, ll) in l.local.iter().enumerate() {
        let p = format!("listeners.local[{i}].name");
        if [LISTENER_HTTP, LISTENER_HTTPS, LISTENER_MESH].contains(&ll.name.as_str()) {
            out.push(Issue::new(p, format!("{:?} is the name of a built-in listener", ll.name)));
        } else if ll.name.is_empty() || !ll.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            out.push(Issue::new(p, "listener names use letters, digits, '-', '_' and '.'"));
        } else if !names.insert(ll.name.as_str()) {
            out.push(Issue::new(p, format!("duplicate listener name {:?}", ll.name)));
        }
    }
    // Two listeners on one fixed address cannot both bind.
    let mut addrs = HashSet::new();
    let all = [
        (l.http.as_ref().map(|x| x.address), "listeners.http.address".to_owned()),
        (l.https.as_ref().map(|x| x.address), "listeners.https.address".to_owned()),
        (l.mesh.as_ref().map(|x| x.address), "listeners.mesh.address".to_owned()),
    ]
    .into_iter()
    .chain(l.local.iter().enumerate().map(|(i, x)| (Some(x.address), format!("listeners.local[{i}].address"))));
    for (a, p) in all {
        if let Some(a) = a.filter(|a| a.port() != 0) {
            if !addrs.insert(a) {
                out.push(Issue::new(p, format!("address {a} is used by another listener")));
            }
        }
    }
    for (name, u) in &c.upstreams {
        let base = format!("upstreams.{name}");
        match (&u.identity, u.mesh) {
            (None, true) => {
                out.push(Issue::new(format!("{base}.identity"), "mesh: true needs the upstream's SPIFFE ID"))
            }
            (Some(_), false) => out.push(Issue::new(format!("{base}.identity"), "identity needs mesh: true")),
            (Some(id), true) => match crate::mesh::SpiffeId::parse(id) {
                Err(e) => out.push(Issue::new(format!("{base}.identity"), e)),
                Ok(id) => {
                    if let Some(m) = c.mesh.as_ref().filter(|m| m.trust_domain != id.trust_domain()) {
                        out.push(Issue::new(
                            format!("{base}.identity"),
                            format!("{id} is not in the mesh trust domain {:?}", m.trust_domain),
                        ));
                    }
                }
            },
            (None, false) => {}
        }
        if u.mesh {
            if c.mesh.is_none() {
                out.push(Issue::new(format!("{base}.mesh"), "mesh upstreams need the top-level mesh section"));
            }
            if u.tls.is_some() {
                out.push(Issue::new(
                    format!("{base}.tls"),
                    "tls and mesh: true are exclusive (the mesh brings its own TLS)",
                ));
            }
        }
    }
}

#[cfg(test)]
mod transform_tests {
    use std::path::Path;

    const BASE: &str = "listeners: { http: { address: 127.0.0.1:8080 } }\n\
upstreams: { orders: { endpoints: [\"127.0.0.1:9001\"] } }\n\
routes:\n  - name: orders\n    upstream: orders\n    transform:\n";

    fn check(vault: bool, transform: &str) -> String {
        let v = if vault { "vault: { server: \"http://127.0.0.1:9400\", token: \"${T}\" }\n" } else { "" };
        match super::super::parse_str("gw.yaml", &format!("{v}{BASE}{transform}"), Path::new(".")) {
            Ok(l) => format!("<ok {}>", l.config.routes[0].transform.as_ref().map_or(0, |t| t.request.len())),
            Err(e) => e.summary(),
        }
    }

    #[test]
    fn transform_rules_are_checked() {
        let good = "      request: [ { pointer: /card/number, tokenize: { key: cards, format: card } } ]\n";
        assert_eq!(check(true, good), "<ok 1>");
        assert_eq!(
            check(false, good),
            "gw.yaml:7:14: routes[0].transform: tokenize, encrypt and reveal need the top-level vault section"
        );
        let masking_only = "      response: [ { pointer: /card/number, detokenize: { key: cards, format: card } } ]\n";
        assert_eq!(check(false, masking_only), "<ok 0>", "masking needs no vault");
        let bad = "      request: [ { pointer: card, tokenize: { key: cards, format: iban }, encrypt: { key: k } } ]\n";
        let e = check(true, bad);
        assert!(e.contains("routes[0].transform.request[0].pointer: \"card\" is not a JSON pointer"), "{e}");
        assert!(e.contains("routes[0].transform.request[0]: give exactly one of tokenize or encrypt"), "{e}");
        let bad = "      request: [ { pointer: /a~2, encrypt: { key: \"bad key\" } } ]\n";
        let e = check(true, bad);
        assert!(e.contains("`~` must be followed by 0 or 1"), "{e}");
        assert!(e.contains("request[0].encrypt.key: invalid vault key name \"bad key\""), "{e}");
    }
}
