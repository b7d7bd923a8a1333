//! Errors and the one place they become HTTP responses: JSON `{"error", "error_description"}`
//! for `/ui/api`, an HTML page for browser navigations. Descriptions never contain a token,
//! cookie or code value.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A failure of the server's data backend (for example, the alert store).
#[derive(Debug, Clone, thiserror::Error)]
#[error("dashboard data backend failed: {0}")]
pub struct DataError(pub String);

/// An error answered as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) description: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> ApiError {
        ApiError { status, error, description: description.into() }
    }
    pub(crate) fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a dashboard session or the admin token is required")
    }
    pub(crate) fn bad_request(description: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
    pub(crate) fn not_found(description: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", description)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"palisade-ui\""));
        }
        r
    }
}

/// Why an OIDC sign-in was refused. Shown to the user on an error page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OidcError {
    #[error("the issuer's metadata could not be used: {0}")]
    Discovery(String),
    #[error("the token endpoint failed: {0}")]
    Token(String),
    #[error("the ID token was refused: {0}")]
    IdToken(&'static str),
    #[error("the sign-in request is unknown or expired; start again")]
    State,
    #[error("the issuer refused the sign-in: {0}")]
    Denied(String),
    #[error("your account has none of the roles allowed to use the dashboard")]
    Role,
}

impl OidcError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            OidcError::Discovery(_) | OidcError::Token(_) => StatusCode::BAD_GATEWAY,
            OidcError::IdToken(_) | OidcError::Denied(_) => StatusCode::UNAUTHORIZED,
            OidcError::State => StatusCode::BAD_REQUEST,
            OidcError::Role => StatusCode::FORBIDDEN,
        }
    }
}
