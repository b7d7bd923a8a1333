//! Field-level data protection (route `transform`). Request rules tokenize or encrypt JSON fields
//! (RFC 6901 pointers; `*` matches every array element or object member) through the vault of
//! `palisade server` before the body goes upstream; response rules detokenize or decrypt fields
//! for callers whose roles or scopes `reveal` names, and mask them (`****1234`) for everyone else.
//!
//! Invariants: fail closed. A request with a field to protect is never forwarded in clear: a
//! vault that cannot be reached answers 503, a field that is not a string 400, a body that is not
//! JSON 415/400. A response field is masked unless the vault revealed it (so a vault outage masks;
//! it never shows the stored token or ciphertext as if it were clear). The body is rewritten in
//! place: only the matched values change, every other byte is kept (including key order and
//! numbers). One vault batch call per (operation, key) per body.
//!
//! Limits (documented): bodies are buffered up to `max_body_bytes` (a larger request is refused
//! 413 by the engine; a larger response goes out unchanged). Responses are transformed only when
//! their `Content-Type` is JSON; `Accept-Encoding` is removed from the upstream request so the
//! service answers uncompressed, and a compressed answer goes out unchanged. A response that says
//! it is JSON but does not parse is refused (502) rather than passed on unmasked.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_core::audit::Stage;
use serde::de::IgnoredAny;
use serde_json::{json, Value};

use crate::error::ProxyError;
use crate::filter::{Filter, Session};
use crate::identity::Identity;

// ---- vault client -----------------------------------------------------------------------------

/// A vault operation of `/vault/v1/<op>/<key>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VaultOp {
    Tokenize,
    Detokenize,
    Encrypt,
    Decrypt,
}

impl VaultOp {
    fn path(self) -> &'static str {
        match self {
            VaultOp::Tokenize => "tokenize",
            VaultOp::Detokenize => "detokenize",
            VaultOp::Encrypt => "encrypt",
            VaultOp::Decrypt => "decrypt",
        }
    }

    /// The field of a batch answer item that carries the result.
    fn output(self) -> &'static str {
        match self {
            VaultOp::Tokenize => "token",
            VaultOp::Detokenize => "value",
            VaultOp::Encrypt => "ciphertext",
            VaultOp::Decrypt => "plaintext",
        }
    }
}

/// Why a whole vault call failed (never carries a value, token or the bearer token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VaultCallError {
    #[error("vault unreachable: {0}")]
    Unreachable(String),
    #[error("vault call timed out")]
    Timeout,
    #[error("vault answered HTTP {0}")]
    Status(u16),
    #[error("vault answer malformed: {0}")]
    BadAnswer(&'static str),
}

/// One batch call to the vault: per item, the result field or the item's error code.
#[async_trait::async_trait]
pub(crate) trait VaultClient: Send + Sync {
    async fn batch(
        &self,
        op: VaultOp,
        key: &str,
        items: Vec<Value>,
        request_id: &str,
    ) -> Result<Vec<Result<String, String>>, VaultCallError>;
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The vault API of `palisade server` over HTTP(S), with a bearer token.
pub(crate) struct HttpVault {
    base: String,
    auth: HeaderValue,
    timeout: Duration,
    http: HttpsClient,
}

/// Largest vault answer read.
const MAX_VAULT_ANSWER: usize = 16 << 20;

impl HttpVault {
    pub(crate) fn new(server: &str, token: &[u8], ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Self, String> {
        let tls = palisade_core::net::client_tls(ca_pem).map_err(|m| format!("ca_file {m}"))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        let token = std::str::from_utf8(token).map_err(|_| "the vault token is not UTF-8".to_owned())?.trim();
        let mut auth = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the vault token is not a valid header value".to_owned())?;
        auth.set_sensitive(true);
        Ok(HttpVault { base: server.trim_end_matches('/').to_owned(), auth, timeout, http: client })
    }
}

#[async_trait::async_trait]
impl VaultClient for HttpVault {
    async fn batch(
        &self,
        op: VaultOp,
        key: &str,
        items: Vec<Value>,
        request_id: &str,
    ) -> Result<Vec<Result<String, String>>, VaultCallError> {
        let n = items.len();
        let url = format!("{}/vault/v1/{}/{key}", self.base, op.path());
        let body = Bytes::from(json!({ "batch": items }).to_string());
        let mut req =
            http::Request::post(url).header(CONTENT_TYPE, "application/json").header(AUTHORIZATION, self.auth.clone());
        if !request_id.is_empty() {
            req = req.header("x-request-id", request_id);
        }
        let req = req.body(Full::new(body)).map_err(|_| VaultCallError::BadAnswer("cannot build the request"))?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| VaultCallError::Unreachable(palisade_core::net::error_chain(&e)))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_VAULT_ANSWER)
                .collect()
                .await
                .map_err(|_| VaultCallError::Unreachable("reading the answer failed".into()))?
                .to_bytes();
            Ok::<_, VaultCallError>((status, body))
        };
        let (status, body) =
            tokio::time::timeout(self.timeout, exchange).await.map_err(|_| VaultCallError::Timeout)??;
        if !status.is_success() {
            return Err(VaultCallError::Status(status.as_u16()));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| VaultCallError::BadAnswer("not JSON"))?;
        let Some(answers) = v.get("batch").and_then(Value::as_array) else {
            return Err(VaultCallError::BadAnswer("no batch"));
        };
        if answers.len() != n {
            return Err(VaultCallError::BadAnswer("batch length differs"));
        }
        Ok(answers
            .iter()
            .map(|a| match a.get(op.output()).and_then(Value::as_str) {
                Some(s) => Ok(s.to_owned()),
                None => Err(a.get("error").and_then(Value::as_str).unwrap_or("bad_answer").to_owned()),
            })
            .collect())
    }
}

// ---- JSON pointers and the body scan ----------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Any,
}

/// An RFC 6901 pointer whose `*` segments match any array element or object member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pointer {
    shown: String,
    segs: Vec<Seg>,
}

impl Pointer {
    pub(crate) fn parse(p: &str) -> Result<Pointer, String> {
        let Some(rest) = p.strip_prefix('/') else {
            return Err(format!("{p:?} is not a JSON pointer: write e.g. /card/number"));
        };
        let mut segs = Vec::new();
        for raw in rest.split('/') {
            if raw == "*" {
                segs.push(Seg::Any);
                continue;
            }
            let mut key = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, false) => key.push(c),
                    (_, true) => match chars.next() {
                        Some('0') => key.push('~'),
                        Some('1') => key.push('/'),
                        _ => return Err(format!("{p:?}: `~` must be followed by 0 or 1 (RFC 6901)")),
                    },
                }
            }
            segs.push(Seg::Key(key));
        }
        Ok(Pointer { shown: p.to_owned(), segs })
    }

    fn matches(&self, path: &[PathSeg<'_>]) -> bool {
        self.segs.len() == path.len()
            && self.segs.iter().zip(path).all(|(s, p)| match (s, p) {
                (Seg::Any, _) => true,
                (Seg::Key(k), PathSeg::Key(name)) => k == name,
                (Seg::Key(k), PathSeg::Index(i)) => k.parse::<usize>().is_ok_and(|n| n == *i),
            })
    }
}

enum PathSeg<'a> {
    Key(std::borrow::Cow<'a, str>),
    Index(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Null,
    /// A number, boolean, object or array.
    Other,
}

/// A value of the body that a pointer names: which rule, where, what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hit {
    rule: usize,
    range: Range<usize>,
    kind: Kind,
}

impl Hit {
    /// The value as the filter handles it: `None` for `null` (left alone), `Some(None)` for a value
    /// that is not a string, `Some(Some(text))` for a string.
    fn string_value(&self, body: &[u8]) -> Option<Option<String>> {
        match self.kind {
            Kind::Null => None,
            Kind::Other => Some(None),
            Kind::String => Some(decode_string(body, &self.range)),
        }
    }
}

/// Walks a JSON text that `serde_json` has accepted (so it is well formed and at most 128 levels
/// deep: the recursion is bounded) and records the values the pointers name.
struct Scan<'a, 'p> {
    b: &'a [u8],
    i: usize,
    path: Vec<PathSeg<'a>>,
    pointers: &'p [&'p Pointer],
    hits: Vec<Hit>,
}

/// The values named by `pointers` in `body`, in document order; values inside an earlier hit are
/// left out (the outer value is replaced whole). `None` when the body is not JSON.
fn scan(body: &[u8], pointers: &[&Pointer]) -> Option<Vec<Hit>> {
    serde_json::from_slice::<IgnoredAny>(body).ok()?;
    let mut s = Scan { b: body, i: 0, path: Vec::new(), pointers, hits: Vec::new() };
    s.value()?;
    let mut hits: Vec<Hit> = Vec::with_capacity(s.hits.len());
    let mut all = s.hits;
    all.sort_by_key(|h| (h.range.start, std::cmp::Reverse(h.range.end)));
    for h in all {
        if hits.last().is_some_and(|l: &Hit| h.range.start < l.range.end) {
            continue;
        }
        hits.push(h);
    }
    Some(hits)
}

impl<'a> Scan<'a, '_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// After an object member or array element: `,` (more follow: false) or `close` (done: true).
    fn after_item(&mut self, close: u8) -> Option<bool> {
        self.ws();
        let c = self.peek()?;
        self.i += 1;
        match c {
            b',' => Some(false),
            c if c == close => Some(true),
            _ => None,
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek() == Some(c)).then(|| self.i += 1)
    }

    /// A string token; returns its range including the quotes.
    fn string(&mut self) -> Option<Range<usize>> {
        let start = self.i;
        self.eat(b'"')?;
        loop {
            match self.peek()? {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return Some(start..self.i);
                }
                _ => self.i += 1,
            }
        }
    }

    fn value(&mut self) -> Option<()> {
        self.ws();
        let start = self.i;
        let kind = match self.peek()? {
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        let r = self.string()?;
                        let raw = self.b.get(r.start + 1..r.end - 1)?;
                        let key = if raw.contains(&b'\\') {
                            std::borrow::Cow::Owned(serde_json::from_slice::<String>(self.b.get(r)?).ok()?)
                        } else {
                            std::borrow::Cow::Borrowed(std::str::from_utf8(raw).ok()?)
                        };
                        self.eat(b':')?;
                        self.path.push(PathSeg::Key(key));
                        self.value()?;
                        self.path.pop();
                        if self.after_item(b'}')? {
                            break;
                        }
                    }
                }
                Kind::Other
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                } else {
                    let mut n = 0usize;
                    loop {
                        self.path.push(PathSeg::Index(n));
                        self.value()?;
                        self.path.pop();
                        n = n.saturating_add(1);
                        if self.after_item(b']')? {
                            break;
                        }
                    }
                }
                Kind::Other
            }
            b'"' => {
                self.string()?;
                Kind::String
            }
            _ => {
                while !matches!(self.peek(), None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')) {
                    self.i += 1;
                }
                if self.b.get(start..self.i) == Some(b"null") {
                    Kind::Null
                } else {
                    Kind::Other
                }
            }
        };
        if !self.path.is_empty() {
            for (rule, p) in self.pointers.iter().enumerate() {
                if p.matches(&self.path) {
                    self.hits.push(Hit { rule, range: start..self.i, kind });
                }
            }
        }
        Some(())
    }
}

/// The body with each range replaced (ranges sorted, not overlapping).
fn splice(body: &[u8], edits: &[(Range<usize>, String)]) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + edits.iter().map(|(_, s)| s.len()).sum::<usize>());
    let mut at = 0;
    for (r, text) in edits {
        out.extend_from_slice(body.get(at..r.start).unwrap_or_default());
        out.extend_from_slice(text.as_bytes());
        at = r.end;
    }
    out.extend_from_slice(body.get(at..).unwrap_or_default());
    Bytes::from(out)
}

fn json_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// `****` and the last four letters or digits of `value` (as `palisade_vault::mask`): a card
/// token keeps the card's last four, so its mask is the familiar `****1234`.
pub(crate) fn mask(value: &str) -> String {
    let tail: Vec<char> = value.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let mut out = String::from("****");
    out.extend(tail.iter().skip(tail.len().saturating_sub(4)));
    out
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let media = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

// ---- the filter -------------------------------------------------------------------------------

/// What a rule asks of the vault: the operation's key and what goes into each item besides the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VaultRule {
    /// Tokenize (request) or detokenize (response) with this key and format.
    Token { key: String, format: String },
    /// Encrypt (request) or decrypt (response) with this key and context.
    Cipher { key: String, context: Option<String> },
}

impl VaultRule {
    fn key(&self) -> &str {
        match self {
            VaultRule::Token { key, .. } | VaultRule::Cipher { key, .. } => key,
        }
    }

    fn context_b64(context: &Option<String>) -> Value {
        context.as_ref().map_or(Value::Null, |c| Value::String(STANDARD.encode(c.as_bytes())))
    }

    /// The request-side item for `value`, and its operation.
    fn protect_item(&self, value: &str) -> (VaultOp, Value) {
        match self {
            VaultRule::Token { format, .. } => (VaultOp::Tokenize, json!({"value": value, "format": format})),
            VaultRule::Cipher { context, .. } => {
                let mut item = json!({"plaintext": STANDARD.encode(value.as_bytes())});
                if context.is_some() {
                    item["context"] = Self::context_b64(context);
                }
                (VaultOp::Encrypt, item)
            }
        }
    }

    /// The response-side item that reveals `value`, and its operation.
    fn reveal_item(&self, value: &str) -> (VaultOp, Value) {
        match self {
            VaultRule::Token { format, .. } => (VaultOp::Detokenize, json!({"token": value, "format": format})),
            VaultRule::Cipher { context, .. } => {
                let mut item = json!({ "ciphertext": value });
                if context.is_some() {
                    item["context"] = Self::context_b64(context);
                }
                (VaultOp::Decrypt, item)
            }
        }
    }

    /// What a caller who may not see the value gets: the token's last four (its format keeps a
    /// card's), nothing of a ciphertext.
    fn masked(&self, value: Option<&str>) -> String {
        match (self, value) {
            (VaultRule::Token { .. }, Some(v)) => mask(v),
            _ => "****".to_owned(),
        }
    }

    fn op_name(&self, request: bool) -> &'static str {
        match (self, request) {
            (VaultRule::Token { .. }, true) => "tokenize",
            (VaultRule::Token { .. }, false) => "detokenize",
            (VaultRule::Cipher { .. }, true) => "encrypt",
            (VaultRule::Cipher { .. }, false) => "decrypt",
        }
    }
}

pub(crate) struct RequestRule {
    pub(crate) pointer: Pointer,
    pub(crate) rule: VaultRule,
}

pub(crate) struct ResponseRule {
    pub(crate) pointer: Pointer,
    pub(crate) rule: VaultRule,
    pub(crate) roles: Vec<String>,
    pub(crate) scopes: Vec<String>,
}

impl ResponseRule {
    fn may_reveal(&self, id: Option<&Identity>) -> bool {
        id.is_some_and(|id| {
            id.roles().iter().any(|r| self.roles.contains(r)) || id.scopes().iter().any(|s| self.scopes.contains(s))
        })
    }
}

/// A route's transform: its rules and the vault they use (`None`: masking only).
pub(crate) struct TransformFilter {
    pub(crate) request: Vec<RequestRule>,
    pub(crate) response: Vec<ResponseRule>,
    pub(crate) vault: Option<Arc<dyn VaultClient>>,
    pub(crate) max_body_bytes: u64,
}

/// A vault call's items, grouped by operation and key; `slots` says which edit each answer fills.
struct Group<'r> {
    op: VaultOp,
    key: &'r str,
    items: Vec<Value>,
    slots: Vec<usize>,
}

fn group_push<'r>(groups: &mut Vec<Group<'r>>, op: VaultOp, key: &'r str, item: Value, slot: usize) {
    match groups.iter_mut().find(|g| g.op == op && g.key == key) {
        Some(g) => {
            g.items.push(item);
            g.slots.push(slot);
        }
        None => groups.push(Group { op, key, items: vec![item], slots: vec![slot] }),
    }
}

fn refuse(s: &mut Session, status: StatusCode, message: String) -> ProxyError {
    s.deny(Stage::Proxy, message.clone());
    ProxyError::rejected(status, message)
}

/// Add what was transformed to the request's audit reason (pointers and key names only).
fn note(s: &mut Session, text: &str) {
    if s.audit.decision.is_none() {
        s.allow(Stage::Proxy, "every filter passed");
    }
    s.audit.force = true;
    s.audit.reason.push_str("; ");
    s.audit.reason.push_str(text);
}

fn decode_string(body: &[u8], r: &Range<usize>) -> Option<String> {
    serde_json::from_slice::<String>(body.get(r.clone())?).ok()
}

impl TransformFilter {
    async fn protect(&self, s: &mut Session, body: &mut Bytes) -> Result<(), ProxyError> {
        if !is_json(&s.request.headers) {
            return Err(refuse(
                s,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "this route protects fields of JSON bodies: send Content-Type: application/json".into(),
            ));
        }
        let pointers: Vec<&Pointer> = self.request.iter().map(|r| &r.pointer).collect();
        let Some(hits) = scan(body, &pointers) else {
            return Err(refuse(s, StatusCode::BAD_REQUEST, "the request body is not valid JSON".into()));
        };
        let mut edits: Vec<(Range<usize>, String)> = Vec::new();
        let mut groups: Vec<Group<'_>> = Vec::new();
        let mut done: Vec<&str> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for h in hits {
            let Some(rule) = self.request.get(h.rule) else { continue };
            let Some(value) = h.string_value(body) else { continue };
            let Some(value) = value else {
                let m = format!("field {} must be a string", rule.pointer.shown);
                return Err(refuse(s, StatusCode::BAD_REQUEST, m));
            };
            let (op, item) = rule.rule.protect_item(&value);
            group_push(&mut groups, op, rule.rule.key(), item, edits.len());
            edits.push((h.range, String::new()));
            names.push(&rule.pointer.shown);
            if !done.contains(&rule.pointer.shown.as_str()) {
                done.push(&rule.pointer.shown);
            }
        }
        if edits.is_empty() {
            return Ok(());
        }
        let Some(vault) = &self.vault else {
            return Err(refuse(s, StatusCode::SERVICE_UNAVAILABLE, "no vault is configured".into()));
        };
        for g in groups {
            let answers = match vault.batch(g.op, g.key, g.items, &s.request_id).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(request_id = %s.request_id, key = g.key, error = %e, "vault call failed; request refused");
                    let m = "the vault is unavailable: the request was not forwarded".to_owned();
                    s.deny(Stage::Proxy, format!("{m} ({} {}: {e})", g.op.path(), g.key));
                    return Err(ProxyError::rejected(StatusCode::SERVICE_UNAVAILABLE, m));
                }
            };
            for (slot, answer) in g.slots.iter().zip(answers) {
                let field = names.get(*slot).copied().unwrap_or_default();
                let Some((_, text)) = edits.get_mut(*slot) else { continue };
                let out = match answer {
                    Ok(v) => v,
                    Err(code) if code == "invalid_request" => {
                        let m = format!("field {field} cannot be protected: not a valid value for its format");
                        return Err(refuse(s, StatusCode::BAD_REQUEST, m));
                    }
                    Err(code) => {
                        let m = "the vault refused to protect a field: the request was not forwarded".to_owned();
                        s.deny(Stage::Proxy, format!("{m} ({field}: {code})"));
                        return Err(ProxyError::rejected(StatusCode::SERVICE_UNAVAILABLE, m));
                    }
                };
                *text = json_string(&out);
            }
        }
        *body = splice(body, &edits);
        let list: Vec<String> = self
            .request
            .iter()
            .filter(|r| done.contains(&r.pointer.shown.as_str()))
            .map(|r| format!("{} {}:{}", r.pointer.shown, r.rule.op_name(true), r.rule.key()))
            .collect();
        note(s, &format!("transformed request {}", list.join(", ")));
        Ok(())
    }

    async fn reveal(&self, s: &mut Session, body: &mut Bytes) -> Result<(), ProxyError> {
        let pointers: Vec<&Pointer> = self.response.iter().map(|r| &r.pointer).collect();
        let Some(hits) = scan(body, &pointers) else {
            s.audit.force = true;
            tracing::warn!(request_id = %s.request_id, "a JSON response did not parse; refused rather than sent unmasked");
            return Err(ProxyError::rejected(
                StatusCode::BAD_GATEWAY,
                "the upstream response could not be transformed",
            ));
        };
        let mut edits: Vec<(Range<usize>, String)> = Vec::new();
        let mut groups: Vec<Group<'_>> = Vec::new();
        let (mut masked, mut revealed) = (0usize, 0usize);
        let mut fields: Vec<&str> = Vec::new();
        for h in hits {
            let Some(rule) = self.response.get(h.rule) else { continue };
            let Some(value) = h.string_value(body) else { continue };
            if !fields.contains(&rule.pointer.shown.as_str()) {
                fields.push(&rule.pointer.shown);
            }
            // The mask goes in first; a successful reveal replaces it.
            let slot = edits.len();
            edits.push((h.range, json_string(&rule.rule.masked(value.as_deref()))));
            match value {
                Some(v) if self.vault.is_some() && rule.may_reveal(s.identity.as_deref()) => {
                    let (op, item) = rule.rule.reveal_item(&v);
                    group_push(&mut groups, op, rule.rule.key(), item, slot);
                }
                _ => masked += 1,
            }
        }
        if edits.is_empty() {
            return Ok(());
        }
        if let Some(vault) = &self.vault {
            for g in groups {
                let n = g.slots.len();
                let answers = match vault.batch(g.op, g.key, g.items, &s.request_id).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(request_id = %s.request_id, key = g.key, error = %e, "vault call failed; fields masked");
                        masked += n;
                        continue;
                    }
                };
                for (slot, answer) in g.slots.iter().zip(answers) {
                    let clear = match (answer, g.op) {
                        (Ok(b64), VaultOp::Decrypt) => {
                            STANDARD.decode(b64).ok().and_then(|b| String::from_utf8(b).ok()).ok_or(())
                        }
                        (Ok(v), _) => Ok(v),
                        (Err(_), _) => Err(()),
                    };
                    match (clear, edits.get_mut(*slot)) {
                        (Ok(v), Some((_, text))) => {
                            *text = json_string(&v);
                            revealed += 1;
                        }
                        _ => masked += 1,
                    }
                }
            }
        }
        *body = splice(body, &edits);
        note(s, &format!("response {}: {revealed} revealed, {masked} masked", fields.join(", ")));
        Ok(())
    }
}

#[async_trait::async_trait]
impl Filter for TransformFilter {
    fn name(&self) -> &'static str {
        "transform"
    }

    fn wants_body(&self) -> Option<u64> {
        (!self.request.is_empty()).then_some(self.max_body_bytes)
    }

    async fn request_body_filter(&self, s: &mut Session, body: &mut Bytes) -> Result<(), ProxyError> {
        if self.request.is_empty() || body.is_empty() {
            return Ok(());
        }
        self.protect(s, body).await
    }

    fn upstream_request_filter(&self, _s: &Session, up: &mut http::request::Parts) {
        if !self.response.is_empty() {
            // An uncompressed answer, so its fields can be read.
            up.headers.remove(ACCEPT_ENCODING);
        }
    }

    fn wants_response_body(&self, _s: &Session, resp: &http::response::Parts) -> Option<u64> {
        let encoded = resp.headers.get(CONTENT_ENCODING).is_some_and(|v| v.as_bytes() != b"identity");
        (!self.response.is_empty() && is_json(&resp.headers) && !encoded).then_some(self.max_body_bytes)
    }

    async fn response_body_filter(
        &self,
        s: &mut Session,
        _resp: &mut http::response::Parts,
        body: &mut Bytes,
    ) -> Result<(), ProxyError> {
        if body.is_empty() {
            return Ok(());
        }
        self.reveal(s, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::tests::test_session;
    use crate::identity::PrincipalKind;
    use std::sync::Mutex;

    /// Tokens are `tok_` + the value reversed; ciphertexts `pal:v1:` + base64 of the plaintext.
    #[derive(Default)]
    struct MockVault {
        calls: Mutex<Vec<(VaultOp, String, Vec<Value>)>>,
        down: bool,
    }

    #[async_trait::async_trait]
    impl VaultClient for MockVault {
        async fn batch(
            &self,
            op: VaultOp,
            key: &str,
            items: Vec<Value>,
            _rid: &str,
        ) -> Result<Vec<Result<String, String>>, VaultCallError> {
            self.calls.lock().unwrap().push((op, key.to_owned(), items.clone()));
            if self.down {
                return Err(VaultCallError::Unreachable("connection refused".into()));
            }
            Ok(items
                .iter()
                .map(|i| match op {
                    VaultOp::Tokenize => {
                        let v = i["value"].as_str().unwrap();
                        if v.contains('x') {
                            return Err("invalid_request".to_owned());
                        }
                        Ok(v.chars().rev().collect::<String>())
                    }
                    VaultOp::Detokenize => Ok(i["token"].as_str().unwrap().chars().rev().collect()),
                    VaultOp::Encrypt => Ok(format!("pal:v1:{}", i["plaintext"].as_str().unwrap())),
                    VaultOp::Decrypt => Ok(i["ciphertext"].as_str().unwrap().trim_start_matches("pal:v1:").to_owned()),
                })
                .collect())
        }
    }

    fn card_rule() -> VaultRule {
        VaultRule::Token { key: "cards".into(), format: "card".into() }
    }

    fn filter(vault: Arc<MockVault>) -> TransformFilter {
        TransformFilter {
            request: vec![
                RequestRule { pointer: Pointer::parse("/card/number").unwrap(), rule: card_rule() },
                RequestRule {
                    pointer: Pointer::parse("/items/*/ssn").unwrap(),
                    rule: VaultRule::Cipher { key: "pii".into(), context: Some("orders".into()) },
                },
            ],
            response: vec![
                ResponseRule {
                    pointer: Pointer::parse("/card/number").unwrap(),
                    rule: card_rule(),
                    roles: vec!["billing".into()],
                    scopes: vec!["cards:reveal".into()],
                },
                ResponseRule {
                    pointer: Pointer::parse("/items/*/ssn").unwrap(),
                    rule: VaultRule::Cipher { key: "pii".into(), context: Some("orders".into()) },
                    roles: vec!["billing".into()],
                    scopes: vec![],
                },
            ],
            vault: Some(vault),
            max_body_bytes: 1 << 20,
        }
    }

    fn session(ct: &str) -> Session {
        let (parts, ()) = http::Request::builder()
            .method("POST")
            .uri("/orders")
            .header("content-type", ct)
            .body(())
            .unwrap()
            .into_parts();
        test_session(parts)
    }

    fn caller(roles: &[&str], scopes: &[&str]) -> Identity {
        let mut id = Identity::new(PrincipalKind::User, "alice".into(), "jwt");
        id.roles = roles.iter().map(|r| r.to_string()).collect();
        id.scopes = scopes.iter().map(|r| r.to_string()).collect();
        id
    }

    #[test]
    fn pointers_parse_escapes_and_wildcards() {
        let p = Pointer::parse("/a~1b/*/c~0d").unwrap();
        assert_eq!(p.segs, vec![Seg::Key("a/b".into()), Seg::Any, Seg::Key("c~d".into())]);
        assert!(Pointer::parse("a/b").is_err());
        assert!(Pointer::parse("/a~2").is_err());
    }

    #[test]
    fn scan_finds_values_by_pointer_and_keeps_other_bytes() {
        let body = br#"{ "card" : {"number":"4111 1111","exp":"12/29"}, "items":[{"ssn":"1"},{"ssn":null},{"x":2}], "n": 1e400 }"#;
        let p1 = Pointer::parse("/card/number").unwrap();
        let p2 = Pointer::parse("/items/*/ssn").unwrap();
        let p3 = Pointer::parse("/items/0").unwrap();
        let hits = scan(body, &[&p1, &p2]).unwrap();
        let got: Vec<(usize, &str, Kind)> =
            hits.iter().map(|h| (h.rule, std::str::from_utf8(&body[h.range.clone()]).unwrap(), h.kind)).collect();
        assert_eq!(got, vec![(0, "\"4111 1111\"", Kind::String), (1, "\"1\"", Kind::String), (1, "null", Kind::Null)]);
        // An ancestor hit swallows the hits inside it.
        let hits = scan(body, &[&p2, &p3]).unwrap();
        let got: Vec<&str> = hits.iter().map(|h| std::str::from_utf8(&body[h.range.clone()]).unwrap()).collect();
        assert_eq!(got, vec![r#"{"ssn":"1"}"#, "null"]);
        let edited = splice(body, &[(hits[0].range.clone(), "0".into())]);
        assert_eq!(
            &edited[..],
            &br#"{ "card" : {"number":"4111 1111","exp":"12/29"}, "items":[0,{"ssn":null},{"x":2}], "n": 1e400 }"#[..]
        );
        assert!(scan(b"{\"a\":", &[&p1]).is_none());
        assert!(scan(b"[1] x", &[&p1]).is_none());
    }

    #[test]
    fn escaped_keys_and_duplicates_are_all_matched() {
        let body = br#"{"card":{"num\u0062er":"1","number":"2"}}"#;
        let p = Pointer::parse("/card/number").unwrap();
        let hits = scan(body, &[&p]).unwrap();
        assert_eq!(hits.len(), 2, "both spellings of the duplicate key are transformed");
    }

    #[test]
    fn masks_keep_the_last_four() {
        assert_eq!(mask("4111 1111 1111 1234"), "****1234");
        assert_eq!(mask("12"), "****12");
        assert_eq!(card_rule().masked(Some("4000-0000-0000-9876")), "****9876");
        assert_eq!(VaultRule::Cipher { key: "k".into(), context: None }.masked(Some("pal:v1:abcd")), "****");
    }

    #[tokio::test]
    async fn request_fields_are_protected_in_one_batch_per_key() {
        let vault = Arc::new(MockVault::default());
        let f = filter(vault.clone());
        let mut s = session("application/json; charset=utf-8");
        let mut body = Bytes::from_static(
            br#"{"card": {"number": "4111111111111111"}, "items": [{"ssn": "123"}, {"ssn": "456"}], "qty": 2}"#,
        );
        f.request_body_filter(&mut s, &mut body).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"card": {"number": "1111111111111114"}, "items": [{"ssn": "pal:v1:MTIz"}, {"ssn": "pal:v1:NDU2"}], "qty": 2}"#
        );
        let calls = vault.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[0],
            (VaultOp::Tokenize, "cards".into(), vec![json!({"value": "4111111111111111", "format": "card"})])
        );
        assert_eq!(
            calls[1],
            (
                VaultOp::Encrypt,
                "pii".into(),
                vec![
                    json!({"plaintext": "MTIz", "context": "b3JkZXJz"}),
                    json!({"plaintext": "NDU2", "context": "b3JkZXJz"})
                ]
            )
        );
        assert_eq!(
            s.audit.reason,
            "every filter passed; transformed request /card/number tokenize:cards, /items/*/ssn encrypt:pii"
        );
        assert!(!s.audit.reason.contains("4111"));
    }

    #[tokio::test]
    async fn vault_down_refuses_the_request_with_503() {
        let f = filter(Arc::new(MockVault { down: true, ..Default::default() }));
        let mut s = session("application/json");
        let mut body = Bytes::from_static(br#"{"card":{"number":"4111111111111111"}}"#);
        let err = f.request_body_filter(&mut s, &mut body).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.to_string(), "the vault is unavailable: the request was not forwarded");
        assert_eq!(&body[..], br#"{"card":{"number":"4111111111111111"}}"#, "the body is not half-changed");
        assert_eq!(s.audit.decision.map(|d| d.0), Some(palisade_core::audit::Decision::Deny));
    }

    #[tokio::test]
    async fn bad_bodies_are_refused_not_forwarded() {
        let f = filter(Arc::new(MockVault::default()));
        for (ct, body, status, msg) in [
            (
                "text/plain",
                r#"{"card":{"number":"4111"}}"#,
                415,
                "this route protects fields of JSON bodies: send Content-Type: application/json",
            ),
            ("application/json", r#"{"card":"#, 400, "the request body is not valid JSON"),
            ("application/json", r#"{"card":{"number":4111111111111111}}"#, 400, "field /card/number must be a string"),
            (
                "application/json",
                r#"{"card":{"number":"4111x"}}"#,
                400,
                "field /card/number cannot be protected: not a valid value for its format",
            ),
        ] {
            let mut s = session(ct);
            let mut b = Bytes::from(body);
            let err = f.request_body_filter(&mut s, &mut b).await.unwrap_err();
            assert_eq!((err.status().as_u16(), err.to_string()), (status, msg.to_owned()), "{body}");
        }
        // Nothing to protect: untouched, no vault call.
        let vault = Arc::new(MockVault::default());
        let f = filter(vault.clone());
        let mut s = session("application/json");
        let mut b = Bytes::from_static(br#"{"card":{"number":null},"item":"mouse"}"#);
        let before = b.clone();
        f.request_body_filter(&mut s, &mut b).await.unwrap();
        assert_eq!(b.as_ptr(), before.as_ptr());
        assert!(vault.calls.lock().unwrap().is_empty());
    }

    fn response_parts() -> http::response::Parts {
        http::Response::builder().header("content-type", "application/json").body(()).unwrap().into_parts().0
    }

    const STORED: &str = r#"{"card":{"number":"4321111111111114"},"items":[{"ssn":"pal:v1:MTIz"}]}"#;

    #[tokio::test]
    async fn responses_are_revealed_by_role_or_scope_and_masked_otherwise() {
        let vault = Arc::new(MockVault::default());
        let f = filter(vault.clone());
        let mut parts = response_parts();
        assert_eq!(f.wants_response_body(&session("application/json"), &parts), Some(1 << 20));

        let mut s = session("application/json");
        s.identity = Some(Arc::new(caller(&["viewer"], &["orders:read"])));
        let mut body = Bytes::from(STORED);
        f.response_body_filter(&mut s, &mut parts, &mut body).await.unwrap();
        assert_eq!(std::str::from_utf8(&body).unwrap(), r#"{"card":{"number":"****1114"},"items":[{"ssn":"****"}]}"#);
        assert!(vault.calls.lock().unwrap().is_empty(), "masking needs no vault call");
        assert_eq!(s.audit.reason, "every filter passed; response /card/number, /items/*/ssn: 0 revealed, 2 masked");

        let mut s = session("application/json");
        s.identity = Some(Arc::new(caller(&["billing"], &[])));
        let mut body = Bytes::from(STORED);
        f.response_body_filter(&mut s, &mut parts, &mut body).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"card":{"number":"4111111111111234"},"items":[{"ssn":"123"}]}"#
        );

        // A scope reveals the card only (the ssn rule names no scope).
        let mut s = session("application/json");
        s.identity = Some(Arc::new(caller(&[], &["cards:reveal"])));
        let mut body = Bytes::from(STORED);
        f.response_body_filter(&mut s, &mut parts, &mut body).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"card":{"number":"4111111111111234"},"items":[{"ssn":"****"}]}"#
        );

        // Anonymous callers see masks.
        let mut s = session("application/json");
        let mut body = Bytes::from(STORED);
        f.response_body_filter(&mut s, &mut parts, &mut body).await.unwrap();
        assert_eq!(std::str::from_utf8(&body).unwrap(), r#"{"card":{"number":"****1114"},"items":[{"ssn":"****"}]}"#);
    }

    #[tokio::test]
    async fn vault_down_masks_even_for_allowed_callers() {
        let f = filter(Arc::new(MockVault { down: true, ..Default::default() }));
        let mut s = session("application/json");
        s.identity = Some(Arc::new(caller(&["billing"], &[])));
        let mut body = Bytes::from(STORED);
        f.response_body_filter(&mut s, &mut response_parts(), &mut body).await.unwrap();
        assert_eq!(std::str::from_utf8(&body).unwrap(), r#"{"card":{"number":"****1114"},"items":[{"ssn":"****"}]}"#);
        assert!(s.audit.reason.ends_with("0 revealed, 2 masked"), "{}", s.audit.reason);
    }

    #[tokio::test]
    async fn response_phase_only_for_plain_json() {
        let f = filter(Arc::new(MockVault::default()));
        let s = session("application/json");
        let text = http::Response::builder().header("content-type", "text/html").body(()).unwrap().into_parts().0;
        assert_eq!(f.wants_response_body(&s, &text), None);
        let gz = http::Response::builder()
            .header("content-type", "application/problem+json")
            .header("content-encoding", "gzip")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(f.wants_response_body(&s, &gz), None);
        let (mut up, ()) = http::Request::builder().header("accept-encoding", "gzip").body(()).unwrap().into_parts();
        f.upstream_request_filter(&s, &mut up);
        assert!(up.headers.get("accept-encoding").is_none());
        // A body that says JSON and is not: refused, not passed on unmasked.
        let mut s = session("application/json");
        let mut body = Bytes::from_static(b"{\"card\":{\"number\":\"4111");
        let err = f.response_body_filter(&mut s, &mut response_parts(), &mut body).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }
}
