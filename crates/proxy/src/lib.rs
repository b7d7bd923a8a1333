//! Palisade's proxy engine, shared by the edge gateway and the mesh sidecar: listeners and TLS
//! (including the SVID-authenticated mesh listener and mesh upstreams, see [`mesh`]),
//! request-smuggling defence, routing, upstream pools with health checks, the phase-named filter
//! chain, and the admin listener. It does not fetch or rotate SVIDs: the caller passes an
//! `SvidSource` to [`Gateway::start_with`]. It prints nothing and never exits;
//! the `palisade` binary wires it up.

mod admin;
pub mod audit;
mod body;
mod client;
mod error;
pub mod filter;
pub mod framing;
pub mod headers;
pub mod identity;
pub mod mesh;
mod metrics;
pub mod route;
mod runtime;
mod security;
mod server;
mod service;
mod tls;
mod upstream;
mod worker;

pub use body::{RequestBody, ResponseBody};
pub use error::ProxyError;
pub use filter::{Filter, Flow, Session};
pub use metrics::Metrics;
pub use runtime::check;
pub use security::route_rules;
pub use server::{Gateway, StartError};

/// Entry points for fuzzing the request-head handling (no sockets).
pub mod fuzzing {
    use crate::framing::FramingTracker;

    /// Feed raw client bytes through the smuggling tracker, then parse any head the way the
    /// gateway inspects it (host normalization, header rules). Must never panic.
    pub fn request_head(data: &[u8]) {
        let split = data.len() / 2;
        let mut t = FramingTracker::new(16 * 1024);
        if t.feed(&data[..split]).is_ok() {
            let _ = t.feed(&data[split..]);
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(_)) = req.parse(data) {
            let mut map = http::HeaderMap::new();
            for h in req.headers.iter() {
                if let (Ok(n), Ok(v)) =
                    (http::HeaderName::from_bytes(h.name.as_bytes()), http::HeaderValue::from_bytes(h.value))
                {
                    map.append(n, v);
                }
            }
            if let Some(host) = map.get(http::header::HOST).and_then(|v| v.to_str().ok()) {
                let _ = crate::route::normalize_host(host);
            }
            if let Some(id) = map.get(crate::headers::X_REQUEST_ID) {
                let _ = crate::headers::valid_request_id(id);
            }
            crate::headers::strip_hop_by_hop(&mut map);
            let _ = crate::headers::head_size(&map, req.path.map_or(0, str::len));
        }
    }
}
