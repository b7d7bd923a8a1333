//! The JSON API under `/vault/v1/`, shaped like Vault's transit engine. Binary values (plaintext,
//! context, input, tweak) are standard base64. A body `{"batch":[...]}` runs the operation per
//! item (answer `{"batch":[...]}` in order, each item a result or an `error`); otherwise one item.
//! Errors are `{"error": code, "error_description": text}`; this module is the one place that
//! turns a [`VaultError`] into a response.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::error::{invalid, VaultError};
use crate::keys::KeyType;
use crate::tokenize::{FormatSpec, TokenFormat};
use crate::vault::{
    Caller, DataKeyItem, DecryptItem, DetokenizeItem, EncryptItem, KeyConfig, KeyOptions, TokenMode, TokenizeItem,
    Vault, VerifyItem,
};

/// Largest request body.
pub const MAX_BODY_BYTES: usize = 32 << 20;
/// Grace period of `DELETE /vault/v1/keys/{name}` without a body.
pub const DEFAULT_DELETION_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Maps a request's headers to the principal it authenticates, or `None` (answered 401). The
/// server checks its admin token or an access token here.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    async fn authenticate(&self, headers: &HeaderMap) -> Option<String>;
}

#[derive(Clone)]
struct Api {
    vault: Vault,
    auth: Arc<dyn Authenticator>,
}

/// The API routes (`/vault/v1/...`), ready to be merged into the server's router.
pub fn router(vault: Vault, auth: Arc<dyn Authenticator>) -> Router {
    Router::new()
        .route("/vault/v1/keys", get(list_keys))
        .route("/vault/v1/keys/{name}", post(create_key).get(read_key).delete(delete_key))
        .route("/vault/v1/keys/{name}/rotate", post(rotate))
        .route("/vault/v1/keys/{name}/config", post(config))
        .route("/vault/v1/keys/{name}/cancel-deletion", post(cancel_deletion))
        .route("/vault/v1/export/{name}", get(export))
        .route("/vault/v1/encrypt/{name}", post(encrypt))
        .route("/vault/v1/decrypt/{name}", post(decrypt))
        .route("/vault/v1/rewrap/{name}", post(rewrap))
        .route("/vault/v1/datakey/{kind}/{name}", post(datakey))
        .route("/vault/v1/sign/{name}", post(sign))
        .route("/vault/v1/verify/{name}", post(verify))
        .route("/vault/v1/hmac/{name}", post(hmac))
        .route("/vault/v1/tokenize/{name}", post(tokenize))
        .route("/vault/v1/detokenize/{name}", post(detokenize))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Api { vault, auth })
}

fn error_json(status: StatusCode, code: &str, description: &str) -> Response {
    (status, Json(json!({"error": code, "error_description": description}))).into_response()
}

fn error_response(e: &VaultError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_json(status, e.code(), &e.public_description())
}

fn item_error(e: &VaultError) -> Value {
    json!({"error": e.code(), "error_description": e.public_description()})
}

fn unauthorized() -> Response {
    let mut r = error_json(StatusCode::UNAUTHORIZED, "unauthorized", "authentication required");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn caller(api: &Api, headers: &HeaderMap) -> Result<Caller, Response> {
    let principal = api.auth.authenticate(headers).await.ok_or_else(unauthorized)?;
    let mut c = Caller::new(principal);
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        c.request_id = id.chars().take(128).collect();
    }
    Ok(c)
}

/// Parse a body as JSON without echoing any of it in the error (it may hold secrets).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, VaultError> {
    serde_json::from_slice(body).map_err(|e| {
        invalid(format!("malformed JSON body ({:?} error at line {} column {})", e.classify(), e.line(), e.column()))
    })
}

fn b64(field: &str, s: Option<&str>) -> Result<Vec<u8>, VaultError> {
    match s {
        None => Ok(Vec::new()),
        Some(s) => STANDARD.decode(s).map_err(|_| invalid(format!("{field} is not base64"))),
    }
}

/// A body that is one item or `{"batch": [items]}`.
enum Body<T> {
    One(T),
    Batch(Vec<T>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchOf<T> {
    batch: Vec<T>,
}

fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<Body<T>, VaultError> {
    let v: Value = parse(bytes)?;
    if v.get("batch").is_some() {
        let b: BatchOf<T> =
            serde_json::from_value(v).map_err(|e| invalid(format!("malformed batch ({:?})", e.classify())))?;
        Ok(Body::Batch(b.batch))
    } else {
        let one: T =
            serde_json::from_value(v).map_err(|e| invalid(format!("malformed request ({:?})", e.classify())))?;
        Ok(Body::One(one))
    }
}

/// Run a single or batch operation and shape the answer. Items that fail to convert (bad base64)
/// become per-item errors in a batch.
async fn run<J, I, T, F1, FB>(
    bytes: &[u8],
    convert: impl Fn(J) -> Result<I, VaultError>,
    single: F1,
    batch: FB,
    render: impl Fn(T) -> Value,
) -> Response
where
    J: DeserializeOwned,
    F1: AsyncFnOnce(I) -> Result<T, VaultError>,
    FB: AsyncFnOnce(Vec<I>) -> Result<Vec<Result<T, VaultError>>, VaultError>,
{
    let parsed = match body::<J>(bytes) {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    match parsed {
        Body::One(j) => match convert(j) {
            Ok(item) => match single(item).await {
                Ok(t) => Json(render(t)).into_response(),
                Err(e) => error_response(&e),
            },
            Err(e) => error_response(&e),
        },
        Body::Batch(js) => {
            let mut slots: Vec<Result<usize, VaultError>> = Vec::with_capacity(js.len());
            let mut items = Vec::with_capacity(js.len());
            for j in js {
                match convert(j) {
                    Ok(i) => {
                        slots.push(Ok(items.len()));
                        items.push(i);
                    }
                    Err(e) => slots.push(Err(e)),
                }
            }
            let results = match batch(items).await {
                Ok(r) => r,
                Err(e) => return error_response(&e),
            };
            let mut results: Vec<Option<Result<T, VaultError>>> = results.into_iter().map(Some).collect();
            let out: Vec<Value> = slots
                .into_iter()
                .map(|s| match s {
                    Ok(i) => match results.get_mut(i).and_then(Option::take) {
                        Some(Ok(t)) => render(t),
                        Some(Err(e)) => item_error(&e),
                        None => item_error(&VaultError::Rng),
                    },
                    Err(e) => item_error(&e),
                })
                .collect();
            Json(json!({ "batch": out })).into_response()
        }
    }
}

macro_rules! auth {
    ($api:expr, $headers:expr) => {
        match caller(&$api, &$headers).await {
            Ok(c) => c,
            Err(r) => return r,
        }
    };
}

fn respond<T: serde::Serialize>(r: Result<T, VaultError>) -> Response {
    match r {
        Ok(t) => Json(t).into_response(),
        Err(e) => error_response(&e),
    }
}

// ---- keys -------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateReq {
    #[serde(rename = "type")]
    key_type: String,
    #[serde(default)]
    exportable: bool,
    #[serde(default)]
    convergent: bool,
}

async fn create_key(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap, bytes: Bytes) -> Response {
    let who = auth!(api, headers);
    let r = async {
        let req: CreateReq = parse(&bytes)?;
        let key_type = KeyType::parse(&req.key_type).ok_or_else(|| {
            invalid("type is one of aes256-gcm, xchacha20-poly1305, aes256-gcm-siv, hmac-sha256, ed25519, ff1-aes256")
        })?;
        let opts = KeyOptions { key_type, exportable: req.exportable, convergent: req.convergent };
        api.vault.create_key(&who, &name, opts).await
    }
    .await;
    respond(r)
}

async fn list_keys(State(api): State<Api>, headers: HeaderMap) -> Response {
    let who = auth!(api, headers);
    respond(api.vault.list_keys(&who).await.map(|keys| json!({ "keys": keys })))
}

async fn read_key(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let who = auth!(api, headers);
    respond(api.vault.key_info(&who, &name).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteReq {
    grace_seconds: u64,
}

async fn delete_key(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap, bytes: Bytes) -> Response {
    let who = auth!(api, headers);
    let r = async {
        let grace = if bytes.iter().all(u8::is_ascii_whitespace) {
            DEFAULT_DELETION_GRACE
        } else {
            Duration::from_secs(parse::<DeleteReq>(&bytes)?.grace_seconds)
        };
        api.vault.schedule_deletion(&who, &name, grace).await
    }
    .await;
    respond(r)
}

async fn cancel_deletion(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let who = auth!(api, headers);
    respond(api.vault.cancel_deletion(&who, &name).await)
}

async fn rotate(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let who = auth!(api, headers);
    respond(api.vault.rotate(&who, &name).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigReq {
    min_decryption_version: Option<u32>,
    min_encryption_version: Option<u32>,
    disabled: Option<bool>,
}

async fn config(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap, bytes: Bytes) -> Response {
    let who = auth!(api, headers);
    let r = async {
        let c: ConfigReq = parse(&bytes)?;
        let cfg = KeyConfig {
            min_decryption_version: c.min_decryption_version,
            min_encryption_version: c.min_encryption_version,
            disabled: c.disabled,
        };
        api.vault.configure(&who, &name, cfg).await
    }
    .await;
    respond(r)
}

async fn export(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let who = auth!(api, headers);
    respond(api.vault.export(&who, &name).await)
}

// ---- encryption -------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptReq {
    plaintext: String,
    context: Option<String>,
    key_version: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CiphertextReq {
    ciphertext: String,
    context: Option<String>,
}

fn to_decrypt(j: CiphertextReq) -> Result<DecryptItem, VaultError> {
    Ok(DecryptItem { ciphertext: j.ciphertext, context: b64("context", j.context.as_deref())? })
}

fn render_encrypted(e: crate::vault::Encrypted) -> Value {
    json!({"ciphertext": e.ciphertext, "key_version": e.key_version})
}

async fn encrypt(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap, bytes: Bytes) -> Response {
    let who = auth!(api, headers);
    let v = &api.vault;
    run(
        &bytes,
        |j: EncryptReq| {
            Ok(EncryptItem {
                plaintext: Zeroizing::new(b64("plaintext", Some(&Zeroizing::new(j.plaintext)))?),
                context: b64("context", j.context.as_deref())?,
                key_version: j.key_version,
            })
        },
        async |i| v.encrypt(&who, &name, i).await,
        async |is| v.encrypt_batch(&who, &name, &is).await,
        render_encrypted,
    )
    .await
}

async fn decrypt(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap, bytes: Bytes) -> Response {
    let who = auth!(api, headers);
    let v = &api.vault;
    run(
        &bytes,
        to_decrypt,
        async |i| v.decrypt(&who, &name, i).await,
        async |is| v.decrypt_batch(&who, &name, &is).await,
        |pt: Zeroizing<Vec<u8>>| json!({"plaintext": STANDARD.encode(&pt[..])}),
    )
    .await
}

async fn rewrap(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap, bytes: Bytes) -> Response {
    let who = auth!(api, headers);
    let v = &api.vault;
    run(
        &bytes,
        to_decrypt,
        async |i| v.rewrap(&who, &name, i).await,
        async |is| v.rewrap_batch(&who, &name, &is).await,
        render_encrypted,
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataKeyReq {
    context: Option<String>,
    bits: Option<u32>,
}

async fn datakey(
    State(api): State<Api>,
    Path((kind, name)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let who = auth!(api, headers);
    let with_plaintext = match kind.as_str() {
        "plaintext" => true,
        "wrapped" => false,
        _ => return error_response(&invalid("the data key kind is plaintext or wrapped")),
    };
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) { Bytes::from_static(b"{}") } else { bytes };
    let v = &api.vault;
    run(
        &bytes,
        |j: DataKeyReq| Ok(DataKeyItem { context: b64("context", j.context.as_deref())?, bits: j.bits }),
        async |i| v.datakey(&who, &name, i, with_plaintext).await,
        async |is| v.datakey_batch(&who, &name, &is, with_plaintext).await,
        |d: crate::vault::DataKey| match &d.plaintext {
            Some(p) => {
                json!({"plaintext": STANDARD.encode(&p[..]), "ciphertext": d.ciphertext, "key_version": d.key_version})
            }
            None => json!({"ciphertext": d.ciphertext, "key_version": d.key_version}),
        },
    )
    .await
}

// ---- signatures and MACs ----------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputReq {
    input: String,
}

async fn sign(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap, bytes: Bytes) -> Response {
    let who = auth!(api, headers);
    let v = &api.vault;
    run(
        &bytes,
        |j: InputReq| b64("input", Some(&j.input)),
        async |i| v.sign(&who, &name, i).await,
        async |is| v.sign_batch(&who, &name, &is).await,
        |t: crate::vault::Tag| json!({"signature": t.value, "key_version": t.key_version}),
    )
    .await
}

async fn hmac(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap, bytes: Bytes) -> Response {
    let who = auth!(api, headers);
    let v = &api.vault;
    run(
        &bytes,
        |j: InputReq| b64("input", Some(&j.input)),
        async |i| v.hmac(&who, &name, i).await,
        async |is| v.hmac_batch(&who, &name, &is).await,
        |t: crate::vault::Tag| json!({"hmac": t.value, "key_version": t.key_version}),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyReq {
    input: String,
    signature: Option<String>,
    hmac: Option<String>,
}

/// `signature` verifies an ed25519 signature, `hmac` an HMAC; a batch uses one kind throughout
/// (the first item's).
async fn verify(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap, bytes: Bytes) -> Response {
    let who = auth!(api, headers);
    let v = &api.vault;
    let is_hmac = match body::<VerifyReq>(&bytes) {
        Ok(Body::One(j)) => j.hmac.is_some(),
        Ok(Body::Batch(js)) => js.first().is_some_and(|j| j.hmac.is_some()),
        Err(e) => return error_response(&e),
    };
    let convert = move |j: VerifyReq| {
        let tag = match (j.signature, j.hmac, is_hmac) {
            (Some(s), None, false) => s,
            (None, Some(h), true) => h,
            _ => return Err(invalid("give exactly one of signature or hmac (the same in every batch item)")),
        };
        Ok(VerifyItem { input: b64("input", Some(&j.input))?, tag })
    };
    let render = |ok: bool| json!({"valid": ok});
    if is_hmac {
        run(
            &bytes,
            convert,
            async |i| v.verify_hmac(&who, &name, i).await,
            async |is| v.verify_hmac_batch(&who, &name, &is).await,
            render,
        )
        .await
    } else {
        run(
            &bytes,
            convert,
            async |i| v.verify(&who, &name, i).await,
            async |is| v.verify_batch(&who, &name, &is).await,
            render,
        )
        .await
    }
}

// ---- tokenization -----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizeReq {
    value: String,
    format: String,
    /// `fpe` (default) or `vault`.
    mode: Option<String>,
    #[serde(default)]
    deterministic: bool,
    keep_last_four: Option<bool>,
    tweak: Option<String>,
    key_version: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetokenizeReq {
    token: String,
    format: String,
    mode: Option<String>,
    keep_last_four: Option<bool>,
    tweak: Option<String>,
    key_version: Option<u32>,
}

fn spec_of(format: &str, keep_last_four: Option<bool>) -> Result<FormatSpec, VaultError> {
    let f = TokenFormat::parse(format).ok_or_else(|| invalid("format is one of card, ssn, phone, digits"))?;
    let mut spec = FormatSpec::new(f);
    if let Some(k) = keep_last_four {
        if f != TokenFormat::Card {
            return Err(invalid("keep_last_four applies to the card format only"));
        }
        spec.keep_last_four = k;
    }
    Ok(spec)
}

fn mode_of(mode: Option<&str>, deterministic: bool) -> Result<TokenMode, VaultError> {
    match mode.unwrap_or("fpe") {
        "fpe" if !deterministic => Ok(TokenMode::Fpe),
        "fpe" => Err(invalid("FPE tokens are always deterministic; deterministic applies to vault mode")),
        "vault" => Ok(TokenMode::Vault { deterministic }),
        _ => Err(invalid("mode is fpe or vault")),
    }
}

async fn tokenize(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap, bytes: Bytes) -> Response {
    let who = auth!(api, headers);
    let v = &api.vault;
    run(
        &bytes,
        |j: TokenizeReq| {
            Ok(TokenizeItem {
                spec: spec_of(&j.format, j.keep_last_four)?,
                mode: mode_of(j.mode.as_deref(), j.deterministic)?,
                tweak: b64("tweak", j.tweak.as_deref())?,
                key_version: j.key_version,
                value: Zeroizing::new(j.value),
            })
        },
        async |i| v.tokenize(&who, &name, i).await,
        async |is| v.tokenize_batch(&who, &name, &is).await,
        |t: String| json!({"token": t}),
    )
    .await
}

async fn detokenize(State(api): State<Api>, Path(name): Path<String>, headers: HeaderMap, bytes: Bytes) -> Response {
    let who = auth!(api, headers);
    let v = &api.vault;
    run(
        &bytes,
        |j: DetokenizeReq| {
            Ok(DetokenizeItem {
                token: j.token,
                spec: spec_of(&j.format, j.keep_last_four)?,
                mode: mode_of(j.mode.as_deref(), false)?,
                tweak: b64("tweak", j.tweak.as_deref())?,
                key_version: j.key_version,
            })
        },
        async |i| v.detokenize(&who, &name, i).await,
        async |is| v.detokenize_batch(&who, &name, &is).await,
        |t: Zeroizing<String>| json!({"value": t.as_str()}),
    )
    .await
}
