//! The two built-in demo services, `orders` and `payments`: small JSON APIs used by
//! `palisade up`, the examples and the tests. Both keep what they are sent in memory: orders
//! lists the orders created since start, payments the charges (with the order's card number as
//! it arrived: under `palisade up` the gateway has tokenized it, so payments holds only a token).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

fn request_id(h: &HeaderMap) -> Value {
    h.get("x-request-id").and_then(|v| v.to_str().ok()).map_or(Value::Null, |s| Value::String(s.to_owned()))
}

/// Where the orders service charges payments: through its sidecar's outbound port in the mesh
/// (`palisade up`, the mesh tests), or not at all when standalone.
#[derive(Clone, Default)]
pub struct PaymentsLink {
    url: Option<String>,
    client: Option<Client<HttpConnector, Full<Bytes>>>,
}

impl PaymentsLink {
    /// `base`: e.g. `http://127.0.0.1:15001` (the sidecar's local listener for payments).
    pub fn new(base: Option<String>) -> PaymentsLink {
        let client = base.as_ref().map(|_| Client::builder(TokioExecutor::new()).build_http());
        PaymentsLink { url: base.map(|b| format!("{}/payments/charge", b.trim_end_matches('/'))), client }
    }

    /// POSTs a charge; `Err((status, body))` when the call fails or payments refuses it.
    async fn charge(&self, order: &Value, request_id: &Value) -> Result<Option<Value>, (StatusCode, Value)> {
        let (Some(url), Some(client)) = (&self.url, &self.client) else { return Ok(None) };
        let mut charge = json!({"order": order.get("item").cloned().unwrap_or(Value::Null), "amount_cents": 4900});
        if let Some(card) = order.pointer("/card/number") {
            charge["card"] = card.clone();
        }
        let mut req = http::Request::post(url.as_str()).header("content-type", "application/json");
        if let Some(id) = request_id.as_str() {
            req = req.header("x-request-id", id);
        }
        let req = req
            .body(Full::new(Bytes::from(charge.to_string())))
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, json!({"error": format!("bad charge request: {e}")})))?;
        let unreachable = |e: String| (StatusCode::BAD_GATEWAY, json!({"error": "payments unreachable", "detail": e}));
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(Some(body))
        } else {
            Err((
                StatusCode::BAD_GATEWAY,
                json!({"error": "payment refused", "payments_status": status.as_u16(), "payments_response": body}),
            ))
        }
    }
}

/// Orders created since start (the newest 100), with their ids.
type Created = Arc<Mutex<Vec<Value>>>;

fn remember(created: &Created, body: &Value) -> Value {
    let mut list = created.lock().unwrap_or_else(|e| e.into_inner());
    let n = 1003 + list.len();
    let mut order = body.clone();
    if let Some(o) = order.as_object_mut() {
        o.insert("id".into(), json!(format!("ord_{n}")));
    }
    if list.len() >= 100 {
        list.remove(0);
    }
    list.push(order.clone());
    order
}

pub fn orders(payments: PaymentsLink) -> Router {
    let created: Created = Arc::default();
    let listed = created.clone();
    Router::new()
        .route(
            "/orders",
            get(|h: HeaderMap| async move {
                let mut orders = vec![
                    json!({"id": "ord_1001", "item": "keyboard", "quantity": 1, "total_cents": 4900}),
                    json!({"id": "ord_1002", "item": "monitor", "quantity": 2, "total_cents": 31800}),
                ];
                orders.extend(listed.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
                Json(json!({"service": "orders", "request_id": request_id(&h), "orders": orders}))
            })
            .post(|h: HeaderMap, Json(body): Json<Value>| async move {
                let rid = request_id(&h);
                let body = remember(&created, &body);
                match payments.charge(&body, &rid).await {
                    Ok(None) => {
                        (StatusCode::CREATED, Json(json!({"service": "orders", "request_id": rid, "created": body})))
                    }
                    Ok(Some(payment)) => (
                        StatusCode::CREATED,
                        Json(json!({"service": "orders", "request_id": rid, "created": body, "payment": payment})),
                    ),
                    Err((status, err)) => (status, Json(err)),
                }
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
    let charges: Created = Arc::default();
    let listed = charges.clone();
    Router::new()
        .route(
            "/payments",
            get(|h: HeaderMap| async move {
                let mut payments =
                    vec![json!({"id": "pay_2001", "order": "ord_1001", "amount_cents": 4900, "status": "captured"})];
                payments.extend(listed.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
                Json(json!({"service": "payments", "request_id": request_id(&h), "payments": payments}))
            }),
        )
        .route(
            "/payments/charge",
            post(|h: HeaderMap, Json(body): Json<Value>| async move {
                // Stored as sent: the card field is whatever the caller (through the gateway) passed.
                {
                    let mut list = charges.lock().unwrap_or_else(|e| e.into_inner());
                    if list.len() >= 100 {
                        list.remove(0);
                    }
                    list.push(body.clone());
                }
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

pub fn by_name(name: &str, payments_url: Option<String>) -> Router {
    if name == "payments" {
        payments()
    } else {
        orders(PaymentsLink::new(payments_url))
    }
}

/// Serve a demo service on an already bound listener.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    axum::serve(listener, app).await
}

pub async fn run_standalone(name: &str, listen: SocketAddr, payments_url: Option<String>) -> anyhow::Result<()> {
    let l = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(service = name, address = %l.local_addr()?, "demo service listening");
    tokio::select! {
        r = serve(l, by_name(name, payments_url)) => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
