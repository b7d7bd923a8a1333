//! Route matching: host (exact or `*.` wildcard), path (exact, segment-aware prefix, anchored
//! regex), method and the listener the request arrived on; the first route that matches, in
//! config order, wins. A route without `listeners` never takes requests from the mesh listener.

use std::sync::Arc;

use http::Method;
use palisade_core::config::{Route, LISTENER_MESH};
use regex::Regex;

use crate::filter::Filter;
use crate::metrics::RouteMetrics;
use crate::upstream::Pool;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HostPattern {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

impl HostPattern {
    pub(crate) fn parse(s: &str) -> HostPattern {
        let s = s.to_ascii_lowercase();
        match s.strip_prefix('*') {
            Some(rest) => HostPattern::Suffix(rest.to_string()),
            None => HostPattern::Exact(s),
        }
    }

    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(sfx) => host.len() > sfx.len() && host.ends_with(sfx.as_str()),
        }
    }
}

#[derive(Debug)]
pub(crate) enum PathMatcher {
    Any,
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl PathMatcher {
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Any => true,
            PathMatcher::Exact(p) => p == path,
            PathMatcher::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (path.len() == p.len() || p.ends_with('/') || path.as_bytes().get(p.len()) == Some(&b'/'))
            }
            PathMatcher::Regex(re) => re.is_match(path),
        }
    }
}

/// A route in its runtime form.
pub struct CompiledRoute {
    pub name: Arc<str>,
    hosts: Vec<HostPattern>,
    path: PathMatcher,
    methods: Vec<Method>,
    /// `None`: every listener except `mesh`.
    listeners: Option<Vec<Arc<str>>>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) filters: Vec<Arc<dyn Filter>>,
    pub(crate) metrics: RouteMetrics,
    /// Largest body a filter buffers (`wants_body`); `None` streams the body untouched.
    pub(crate) body_limit: Option<u64>,
    /// Has authentication or authorization: every request on it is audited.
    pub(crate) protected: bool,
}

impl CompiledRoute {
    pub(crate) fn new(
        r: &Route,
        pool: Arc<Pool>,
        filters: Vec<Arc<dyn Filter>>,
        metrics: RouteMetrics,
    ) -> Result<CompiledRoute, String> {
        let path = match &r.matches.path {
            None => PathMatcher::Any,
            Some(p) => match (&p.exact, &p.prefix, &p.regex) {
                (Some(e), None, None) => PathMatcher::Exact(e.clone()),
                (None, Some(pre), None) if pre == "/" => PathMatcher::Any,
                (None, Some(pre), None) => PathMatcher::Prefix(pre.clone()),
                (None, None, Some(re)) => {
                    PathMatcher::Regex(Regex::new(&format!("^(?:{re})$")).map_err(|e| e.to_string())?)
                }
                _ => return Err("set exactly one of exact, prefix or regex".into()),
            },
        };
        let methods = r
            .matches
            .methods
            .iter()
            .map(|m| Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let body_limit = filters.iter().filter_map(|f| f.wants_body()).max();
        Ok(CompiledRoute {
            protected: r.authn.is_some() || r.authz.is_some(),
            body_limit,
            name: r.name.as_str().into(),
            hosts: r.matches.hosts.iter().map(|h| HostPattern::parse(h)).collect(),
            path,
            methods,
            listeners: r.matches.listeners.as_ref().map(|ls| ls.iter().map(|l| Arc::from(l.as_str())).collect()),
            pool,
            filters,
            metrics,
        })
    }

    fn listens_on(&self, listener: &str) -> bool {
        match &self.listeners {
            Some(ls) => ls.iter().any(|l| &**l == listener),
            None => listener != LISTENER_MESH,
        }
    }

    fn matches(&self, listener: &str, host: &str, path: &str, method: &Method) -> bool {
        self.listens_on(listener)
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host)))
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.path.matches(path)
    }
}

#[derive(Default)]
pub(crate) struct Router {
    pub(crate) routes: Vec<Arc<CompiledRoute>>,
}

impl Router {
    /// `host` must already be normalized (see [`normalize_host`]); `listener` is the name of
    /// the listener the request came in on.
    pub(crate) fn find(&self, listener: &str, host: &str, path: &str, method: &Method) -> Option<&Arc<CompiledRoute>> {
        self.routes.iter().find(|r| r.matches(listener, host, path, method))
    }
}

/// Lower-case, without port and trailing dot. `[::1]:80` becomes `[::1]`.
pub fn normalize_host(raw: &str) -> String {
    let h = if raw.starts_with('[') {
        match raw.find(']') {
            Some(i) => &raw[..=i],
            None => raw,
        }
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let w = HostPattern::parse("*.Example.com");
        assert!(w.matches("api.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("badexample.com"));
        assert!(HostPattern::parse("api.example.com").matches("api.example.com"));
    }

    #[test]
    fn prefix_is_segment_aware() {
        let p = PathMatcher::Prefix("/orders".into());
        assert!(p.matches("/orders"));
        assert!(p.matches("/orders/1"));
        assert!(!p.matches("/ordersx"));
        assert!(!p.matches("/order"));
        let p = PathMatcher::Prefix("/api/".into());
        assert!(p.matches("/api/x"));
        assert!(!p.matches("/api"));
    }

    #[test]
    fn regex_is_anchored() {
        let p = PathMatcher::Regex(Regex::new("^(?:/users/[0-9]+)$").unwrap_or_else(|e| unreachable!("{e}")));
        assert!(p.matches("/users/42"));
        assert!(!p.matches("/users/42/x"));
        assert!(!p.matches("/x/users/42"));
    }

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("API.example.com:8443"), "api.example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
    }
}
