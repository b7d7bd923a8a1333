//! The one place where gateway errors become HTTP responses. Every error the gateway itself
//! produces is JSON `{"error": "...", "request_id": "..."}` with the matching status.

use http::{header, HeaderName, HeaderValue, Response, StatusCode};

use crate::body::ResponseBody;

/// Why a request did not get an upstream response. Carries where it came from, as pingora does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("no healthy upstream endpoint")]
    NoHealthyEndpoint,
    #[error("upstream connection failed")]
    UpstreamConnect,
    #[error("upstream request failed")]
    UpstreamFailed,
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("request body exceeds {0} bytes")]
    BodyTooLarge(u64),
    #[error("request headers exceed {0} bytes")]
    HeadersTooLarge(usize),
    #[error("malformed request body framing")]
    BadFraming,
    #[error("ambiguous request: {0}")]
    Ambiguous(&'static str),
    /// A filter refused the request; `headers` go on the response (e.g. `WWW-Authenticate`).
    #[error("{message}")]
    Rejected { status: StatusCode, message: String, headers: Vec<(HeaderName, HeaderValue)> },
}

impl ProxyError {
    /// A filter's refusal with no extra response headers.
    pub fn rejected(status: StatusCode, message: impl Into<String>) -> ProxyError {
        ProxyError::Rejected { status, message: message.into(), headers: Vec::new() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoHealthyEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamConnect | ProxyError::UpstreamFailed => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BadFraming | ProxyError::Ambiguous(_) => StatusCode::BAD_REQUEST,
            ProxyError::Rejected { status, .. } => *status,
        }
    }

    /// Errors after which the client connection must not be reused.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadFraming
                | ProxyError::Ambiguous(_)
                | ProxyError::BodyTooLarge(_)
                | ProxyError::HeadersTooLarge(_)
        )
    }

    /// Whether another attempt on a different endpoint is safe (nothing reached the upstream app).
    pub fn retryable(&self) -> bool {
        matches!(self, ProxyError::UpstreamConnect)
    }
}

pub fn json_response(status: StatusCode, message: &str, request_id: &str) -> Response<ResponseBody> {
    let body = serde_json::json!({ "error": message, "request_id": request_id }).to_string();
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !request_id.is_empty() {
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(crate::headers::X_REQUEST_ID, v);
        }
    }
    resp
}

pub(crate) fn error_response(err: &ProxyError, request_id: &str) -> Response<ResponseBody> {
    let mut resp = json_response(err.status(), &err.to_string(), request_id);
    if let ProxyError::Rejected { headers, .. } = err {
        for (n, v) in headers {
            resp.headers_mut().append(n.clone(), v.clone());
        }
    }
    if err.closes_connection() {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_bodies_are_json_with_status() {
        for (err, status) in [
            (ProxyError::NoRoute, 404),
            (ProxyError::UpstreamConnect, 502),
            (ProxyError::NoHealthyEndpoint, 503),
            (ProxyError::UpstreamTimeout, 504),
            (ProxyError::BodyTooLarge(10), 413),
            (ProxyError::HeadersTooLarge(10), 431),
            (ProxyError::Ambiguous("x"), 400),
        ] {
            let resp = error_response(&err, "abc");
            assert_eq!(resp.status().as_u16(), status);
            assert_eq!(resp.headers()["content-type"], "application/json");
            let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            assert_eq!(v["request_id"], "abc");
            assert_eq!(v["error"], err.to_string());
        }
    }
}
