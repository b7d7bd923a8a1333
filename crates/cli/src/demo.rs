//! The two built-in demo services, `orders` and `payments`: small JSON APIs used by
//! `palisade up`, the examples and the tests.

use std::net::SocketAddr;

use axum::extract::{Path, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

fn request_id(h: &HeaderMap) -> Value {
    h.get("x-request-id").and_then(|v| v.to_str().ok()).map_or(Value::Null, |s| Value::String(s.to_owned()))
}

pub fn orders() -> Router {
    Router::new()
        .route(
            "/orders",
            get(|h: HeaderMap| async move {
                Json(json!({
                    "service": "orders",
                    "request_id": request_id(&h),
                    "orders": [
                        {"id": "ord_1001", "item": "keyboard", "quantity": 1, "total_cents": 4900},
                        {"id": "ord_1002", "item": "monitor", "quantity": 2, "total_cents": 31800}
                    ]
                }))
            })
            .post(|h: HeaderMap, Json(body): Json<Value>| async move {
                (
                    StatusCode::CREATED,
                    Json(json!({"service": "orders", "request_id": request_id(&h), "created": body})),
                )
            }),
        )
        .route(
            "/orders/{id}",
            get(|Path(id): Path<String>, h: HeaderMap| async move {
                Json(json!({"service": "orders", "request_id": request_id(&h), "order": {"id": id, "status": "shipped"}}))
            }),
        )
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .fallback(not_found)
}

pub fn payments() -> Router {
    Router::new()
        .route(
            "/payments",
            get(|h: HeaderMap| async move {
                Json(json!({
                    "service": "payments",
                    "request_id": request_id(&h),
                    "payments": [{"id": "pay_2001", "order": "ord_1001", "amount_cents": 4900, "status": "captured"}]
                }))
            }),
        )
        .route(
            "/payments/charge",
            post(|h: HeaderMap, Json(body): Json<Value>| async move {
                (
                    StatusCode::CREATED,
                    Json(json!({"service": "payments", "request_id": request_id(&h), "charged": body, "status": "captured"})),
                )
            }),
        )
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .fallback(not_found)
}

async fn not_found(req: Request) -> (StatusCode, Json<Value>) {
    (StatusCode::NOT_FOUND, Json(json!({"error": format!("no such resource: {}", req.uri().path())})))
}

pub fn by_name(name: &str) -> Router {
    if name == "payments" {
        payments()
    } else {
        orders()
    }
}

/// Serve a demo service on an already bound listener.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    axum::serve(listener, app).await
}

pub async fn run_standalone(name: &str, listen: SocketAddr) -> anyhow::Result<()> {
    let l = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(service = name, address = %l.local_addr()?, "demo service listening");
    tokio::select! {
        r = serve(l, by_name(name)) => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
