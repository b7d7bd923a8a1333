//! Fetching issuer metadata and JWKS over HTTP(S): one GET with a 5 s deadline for the whole
//! exchange and a 1 MiB body cap, no redirects followed. A client is built per fetch (fetches
//! happen every few minutes), so no connection outlives the fetch that opened it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};

pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const MAX_BODY: usize = 1 << 20;

/// Build the TLS client configuration for one issuer: the extra CA if given, else Mozilla's roots.
pub(crate) fn tls_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    palisade_core::net::client_tls(ca_pem).map(Arc::new).map_err(|m| format!("ca_pem {m}"))
}

/// GET `uri` and parse the body as a JSON object. Errors name the URI and what failed, never
/// the body.
pub(crate) async fn get_json(tls: &rustls::ClientConfig, uri: &str) -> Result<Map<String, Value>, String> {
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls.clone()).https_or_http().enable_http1().build();
    let client: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
    let req = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|_| format!("{uri}: not a valid request URI"))?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| format!("{uri}: {e}"))?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("{uri}: HTTP status {}", resp.status().as_u16()));
        }
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("{uri}: reading the body failed: {e}"))?
            .to_bytes();
        Ok(body)
    };
    let body = tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{uri}: no complete response within {} s", FETCH_TIMEOUT.as_secs()))??;
    serde_json::from_slice(&body).map_err(|_| format!("{uri}: the body is not a JSON object"))
}

pub(crate) fn is_http_url(s: &str) -> bool {
    let lower = s.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    (lower.starts_with("https://") && s.len() > 8) || (lower.starts_with("http://") && s.len() > 7)
}
