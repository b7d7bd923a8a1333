//! Request validation: content-type allow-list, JSON nesting depth, and JSON Schema for the body
//! and the query string, the schemas given directly or taken from an OpenAPI 3.0/3.1 operation.
//! Every schema is compiled once by `Validator::new`, never per request; rejection messages never
//! echo request strings, objects or arrays (only numbers, booleans, null and property names) and
//! are at most 300 characters long.

use std::collections::HashMap;
use std::path::Path;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, Method};
use jsonschema::{Draft, Registry, ValidationError};
use serde_json::{Map, Number, Value};

/// The URI the OpenAPI document is registered under, so `#/components/...` references inside it
/// resolve against it.
const DOC_URI: &str = "urn:palisade:openapi";
const MAX_MESSAGE: usize = 300;
/// Bound on `$ref` → `$ref` chains followed by hand (request bodies, parameters, path items).
const MAX_REF_HOPS: usize = 32;
const MAX_DOCUMENT_BYTES: u64 = 16 << 20;
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// What to check. Empty / `None` / 0 disables that check.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ValidatorSpec {
    /// Allowed media types (`application/json`, `application/*`, `*/*`), matched ignoring
    /// parameters and case, for requests with a body; empty = any.
    pub content_types: Vec<String>,
    /// Maximum nesting of `[`/`{` in a JSON body; 0 = only the parser's own limit (128).
    pub max_json_depth: usize,
    /// JSON Schema for the body (draft from `$schema`, 2020-12 by default).
    pub json_schema: Option<Value>,
    /// JSON Schema for the query string seen as an object of strings (or arrays of strings for
    /// repeated keys; values are first coerced to the `type` of the matching `properties` entry).
    pub query_schema: Option<Value>,
    /// A whole OpenAPI document and optionally the operationId to validate against; without
    /// one, the operation is found per request by method and path template.
    pub openapi: Option<(Value, Option<String>)>,
}

/// Why a request was refused: `status` is 400 or 415.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub status: u16,
    pub message: String,
}

impl Rejection {
    fn bad(message: impl Into<String>) -> Self {
        Rejection { status: 400, message: clip_message(message.into()) }
    }
    fn media(message: impl Into<String>) -> Self {
        Rejection { status: 415, message: clip_message(message.into()) }
    }
}

pub(crate) struct Validator {
    /// Normalised (lowercase, no parameters) media ranges.
    content_types: Vec<String>,
    /// The allow-list names JSON media types only, so any body can be parsed as JSON.
    json_only: bool,
    max_depth: usize,
    body: Option<jsonschema::Validator>,
    query: Option<QueryCheck>,
    openapi: Option<OpenApi>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("content_types", &self.content_types)
            .field("max_depth", &self.max_depth)
            .field("body_schema", &self.body.is_some())
            .field("query_schema", &self.query.is_some())
            .field("openapi", &self.openapi.is_some())
            .finish()
    }
}

impl Validator {
    pub(crate) fn new(spec: ValidatorSpec) -> Result<Validator, String> {
        let content_types = spec
            .content_types
            .iter()
            .map(|c| normalize_media_range(c).ok_or_else(|| format!("content type {:?} is not type/subtype", clip(c))))
            .collect::<Result<Vec<_>, _>>()?;
        let json_only = !content_types.is_empty() && content_types.iter().all(|c| is_json_media_type(c));
        let body = match &spec.json_schema {
            Some(s) => Some(compile_standalone(s).map_err(|e| format!("json_schema: {e}"))?),
            None => None,
        };
        let query = match &spec.query_schema {
            Some(s) => Some(QueryCheck {
                validator: compile_standalone(s).map_err(|e| format!("query_schema: {e}"))?,
                fields: coercions_of_object_schema(s),
            }),
            None => None,
        };
        let openapi = match spec.openapi {
            Some((doc, op)) => Some(OpenApi::new(doc, op.as_deref()).map_err(|e| format!("openapi: {e}"))?),
            None => None,
        };
        Ok(Validator { content_types, json_only, max_depth: spec.max_json_depth, body, query, openapi })
    }

    /// Whether `check_body` has anything to do, i.e. whether the body must be buffered.
    pub(crate) fn needs_body(&self) -> bool {
        self.body.is_some()
            || self.openapi.as_ref().is_some_and(OpenApi::has_body_checks)
            || (self.max_depth > 0 && self.json_only)
    }

    /// Checks the request head: the operation exists (OpenAPI without operationId), the media
    /// type of a request with a body, and the query string.
    pub(crate) fn check_head(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(), Rejection> {
        let op = match &self.openapi {
            Some(o) => Some(o.find(method, path)?),
            None => None,
        };
        let op_types = op.map_or(&[][..], |o| o.media_types.as_slice());
        if (!self.content_types.is_empty() || !op_types.is_empty()) && has_body(headers) {
            let media = request_media_type(headers)?;
            if !self.content_types.is_empty() && !self.content_types.iter().any(|r| media_matches(r, &media)) {
                return Err(Rejection::media(format!("content type {media} is not allowed")));
            }
            if !op_types.is_empty() && !op_types.iter().any(|r| media_matches(r, &media)) {
                return Err(Rejection::media(format!("content type {media} is not accepted by this operation")));
            }
        }
        let op_query = op.and_then(|o| o.query.as_ref());
        if self.query.is_some() || op_query.is_some() {
            let pairs = parse_query(query.unwrap_or(""));
            for check in [self.query.as_ref(), op_query].into_iter().flatten() {
                check.check(&pairs)?;
            }
        }
        Ok(())
    }

    /// Checks a JSON body: nesting depth (scanned before parsing), syntax, then the schemas.
    /// An empty body passes unless the OpenAPI operation marks its request body required.
    pub(crate) fn check_body(&self, method: &Method, path: &str, body: &[u8]) -> Result<(), Rejection> {
        let op = match &self.openapi {
            Some(o) => Some(o.find(method, path)?),
            None => None,
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            if op.is_some_and(|o| o.body_required) {
                return Err(Rejection::bad("request body is required"));
            }
            return Ok(());
        }
        let op_schema = op.and_then(|o| o.body.as_ref());
        if self.body.is_none() && op_schema.is_none() && !(self.max_depth > 0 && self.json_only) {
            return Ok(());
        }
        if self.max_depth > 0 {
            check_depth(body, self.max_depth)?;
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| Rejection::bad(format!("request body is not valid JSON: {e}")))?;
        for schema in [self.body.as_ref(), op_schema].into_iter().flatten() {
            if let Err(e) = schema.validate(&value) {
                return Err(Rejection::bad(describe("request body does not match the schema", &e)));
            }
        }
        Ok(())
    }
}

/// Reads an OpenAPI (or JSON Schema) document: `.json` as JSON, `.yaml`/`.yml` as YAML (mapping
/// keys such as `200:` become strings; `<<` merge keys are applied).
pub(crate) fn load_document(path: &Path) -> Result<Value, String> {
    let shown = path.display();
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let yaml = match ext.as_deref() {
        Some("json") => false,
        Some("yaml" | "yml") => true,
        _ => return Err(format!("{shown}: the file name must end in .json, .yaml or .yml")),
    };
    let len = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?.len();
    if len > MAX_DOCUMENT_BYTES {
        return Err(format!("{shown}: larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    if yaml {
        let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| format!("{shown}: {e}"))?;
        v.apply_merge().map_err(|e| format!("{shown}: {e}"))?;
        yaml_to_json(v).map_err(|e| format!("{shown}: {e}"))
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{shown}: {e}"))
    }
}

fn yaml_to_json(v: serde_yaml_ng::Value) -> Result<Value, String> {
    use serde_yaml_ng::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                Value::Number(Number::from_f64(f).ok_or_else(|| format!("number {n} has no JSON form"))?)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(seq.into_iter().map(yaml_to_json).collect::<Result<_, _>>()?),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    Y::Null => "null".to_owned(),
                    _ => return Err("a mapping key is not a scalar".to_owned()),
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(t.value)?,
    })
}

// ---------------------------------------------------------------------------------------------
// Schemas

fn compile_standalone(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options().should_validate_formats(true).build(schema).map_err(|e| clip_message(e.to_string()))
}

/// Names the failing instance location; strings, arrays and objects from the request are
/// replaced by a placeholder (they may be large or hold secrets), other scalars shown.
fn describe(prefix: &str, e: &ValidationError<'_>) -> String {
    let at = match e.instance_path.as_str() {
        "" => "/",
        p => p,
    };
    let detail = match &*e.instance {
        Value::String(_) => e.masked_with("the string").to_string(),
        Value::Array(_) => e.masked_with("the array").to_string(),
        Value::Object(_) => e.masked_with("the object").to_string(),
        _ => e.to_string(),
    };
    clip_message(format!("{prefix} at {at}: {detail}"))
}

/// Caps a message at 300 bytes and replaces control characters (JSON keys may hold newlines),
/// so a message is safe to put in a log line or a response.
fn clip_message(s: String) -> String {
    let mut s = if s.chars().any(char::is_control) {
        s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
    } else {
        s
    };
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

/// Rejects a body whose `[`/`{` nesting (outside strings) exceeds `max`, in one linear pass and
/// before the parser builds anything.
fn check_depth(body: &[u8], max: usize) -> Result<(), Rejection> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(Rejection::bad(format!("request body nests deeper than {max} levels")));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Media types

/// `Type/Sub; charset=x` → `type/sub`; `None` unless it is `token/token`.
fn normalize_media_range(s: &str) -> Option<String> {
    let base = s.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let (t, sub) = base.split_once('/')?;
    let token = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+*".contains(&b));
    (token(t) && token(sub)).then_some(base)
}

fn is_json_media_type(m: &str) -> bool {
    m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
}

/// `range` may be `*/*`, `type/*` or exact; `media` is a normalised concrete type.
fn media_matches(range: &str, media: &str) -> bool {
    if range == "*/*" || range == media {
        return true;
    }
    match (range.strip_suffix("/*"), media.split_once('/')) {
        (Some(t), Some((mt, _))) => t == mt,
        _ => false,
    }
}

fn has_body(headers: &HeaderMap) -> bool {
    if headers.contains_key(TRANSFER_ENCODING) {
        return true;
    }
    // An unparsable length is treated as a body: the framing layer refuses it anyway.
    headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .any(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) != Some(0))
}

fn request_media_type(headers: &HeaderMap) -> Result<String, Rejection> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Err(Rejection::media("request has a body but no Content-Type"));
    };
    if values.next().is_some() {
        return Err(Rejection::bad("more than one Content-Type header"));
    }
    let media = value.to_str().ok().and_then(normalize_media_range);
    match media {
        Some(m) if !m.contains('*') => Ok(m),
        _ => Err(Rejection::media("Content-Type is not a media type")),
    }
}

// ---------------------------------------------------------------------------------------------
// Query strings

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    String,
    Integer,
    Number,
    Boolean,
}

/// How the values of one query parameter become JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Coerce {
    /// The schema wants an array: a single value becomes a one-element array.
    array: bool,
    /// OpenAPI `style` delimiter for arrays in one value (`form` without explode: `,`).
    delimiter: Option<char>,
    item: Scalar,
}

struct QueryCheck {
    validator: jsonschema::Validator,
    fields: HashMap<String, Coerce>,
}

impl QueryCheck {
    fn check(&self, pairs: &[(String, String)]) -> Result<(), Rejection> {
        let value = self.to_json(pairs);
        match self.validator.validate(&value) {
            Ok(()) => Ok(()),
            Err(e) => Err(Rejection::bad(describe("query string does not match the schema", &e))),
        }
    }

    fn to_json(&self, pairs: &[(String, String)]) -> Value {
        let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
        for (k, v) in pairs {
            match grouped.iter_mut().find(|(g, _)| *g == k.as_str()) {
                Some((_, vs)) => vs.push(v),
                None => grouped.push((k, vec![v])),
            }
        }
        let mut out = Map::new();
        for (k, vs) in grouped {
            let c =
                self.fields.get(k).copied().unwrap_or(Coerce { array: false, delimiter: None, item: Scalar::String });
            let value = if c.array {
                let items: Vec<Value> = match c.delimiter {
                    Some(d) => vs.iter().flat_map(|v| v.split(d)).map(|s| coerce(s, c.item)).collect(),
                    None => vs.iter().map(|s| coerce(s, c.item)).collect(),
                };
                Value::Array(items)
            } else if let [one] = vs.as_slice() {
                coerce(one, c.item)
            } else {
                Value::Array(vs.iter().map(|s| coerce(s, c.item)).collect())
            };
            out.insert(k.to_owned(), value);
        }
        Value::Object(out)
    }
}

/// Left as a string when it does not parse, so the schema reports the type mismatch.
fn coerce(s: &str, to: Scalar) -> Value {
    match to {
        Scalar::String => Value::String(s.to_owned()),
        Scalar::Integer | Scalar::Number => {
            if let Ok(i) = s.parse::<i64>() {
                Value::from(i)
            } else if let Ok(u) = s.parse::<u64>() {
                Value::from(u)
            } else if to == Scalar::Number {
                match s.parse::<f64>().ok().filter(|f| f.is_finite()).and_then(Number::from_f64) {
                    Some(n) => Value::Number(n),
                    None => Value::String(s.to_owned()),
                }
            } else {
                Value::String(s.to_owned())
            }
        }
        Scalar::Boolean => match s {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(s.to_owned()),
        },
    }
}

/// `application/x-www-form-urlencoded` parsing (WHATWG URL §5.1): `&`-separated, `+` is a space,
/// percent-decoding, invalid UTF-8 replaced.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = |j: usize| b.get(j).and_then(|h| (*h as char).to_digit(16));
            if let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Coercions from a plain query schema's top-level `properties` (local `$ref`s followed).
fn coercions_of_object_schema(schema: &Value) -> HashMap<String, Coerce> {
    let mut fields = HashMap::new();
    let Ok((root, _)) = deref(schema, schema, String::new()) else { return fields };
    if let Some(props) = root.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            fields.insert(name.clone(), coercion_for(schema, prop, None));
        }
    }
    fields
}

/// The coercion a (possibly `$ref`) schema calls for; `doc` is what `#/...` resolves against.
fn coercion_for(doc: &Value, schema: &Value, delimiter: Option<char>) -> Coerce {
    let Ok((s, _)) = deref(doc, schema, String::new()) else {
        return Coerce { array: false, delimiter: None, item: Scalar::String };
    };
    match type_of(s) {
        Some("array") => {
            let item = s.get("items").and_then(|i| deref(doc, i, String::new()).ok()).and_then(|(i, _)| type_of(i));
            Coerce { array: true, delimiter, item: scalar(item) }
        }
        t => Coerce { array: false, delimiter: None, item: scalar(t) },
    }
}

/// `type` of a schema; of a list (`["integer", "null"]`) the first that is not `null`.
fn type_of(s: &Value) -> Option<&str> {
    match s.get("type")? {
        Value::String(t) => Some(t),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    }
}

fn scalar(t: Option<&str>) -> Scalar {
    match t {
        Some("integer") => Scalar::Integer,
        Some("number") => Scalar::Number,
        Some("boolean") => Scalar::Boolean,
        _ => Scalar::String,
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAPI

/// A JSON pointer reference token (RFC 6901 §3).
fn escape_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// A JSON pointer as a URI fragment (RFC 6901 §6).
fn fragment(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for b in pointer.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Follows local `$ref`s from `v` (found at `pointer` in `doc`) to a value and its pointer.
fn deref<'a>(doc: &'a Value, mut v: &'a Value, mut pointer: String) -> Result<(&'a Value, String), String> {
    for _ in 0..MAX_REF_HOPS {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else { return Ok((v, pointer)) };
        let frag = r
            .strip_prefix('#')
            .ok_or_else(|| format!("$ref {:?}: only references inside the document are supported", clip(r)))?;
        let p = percent_decode(frag);
        v = doc.pointer(&p).ok_or_else(|| format!("$ref {:?} does not resolve", clip(r)))?;
        pointer = p;
    }
    Err("$ref chain too long".to_owned())
}

struct Operation {
    /// Normalised media ranges of `requestBody.content`; empty when no request body is declared.
    media_types: Vec<String>,
    body: Option<jsonschema::Validator>,
    body_required: bool,
    query: Option<QueryCheck>,
}

enum Piece {
    Literal(String),
    Param,
}

struct PathEntry {
    /// One piece list per segment (`/files/{name}.json` → [[files], [Param, ".json"]]).
    segments: Vec<Vec<Piece>>,
    templated: usize,
    literal_len: usize,
    ops: Vec<(&'static str, Operation)>,
}

enum OpenApi {
    Fixed(Box<Operation>),
    Routed { bases: Vec<String>, paths: Vec<PathEntry> },
}

struct DocCtx<'a> {
    doc: &'a Value,
    registry: Registry,
    draft: Draft,
}

impl DocCtx<'_> {
    /// Compiles the schema at `pointer` in the document by reference, so `$ref`s inside it resolve.
    fn compile_at(&self, pointer: &str) -> Result<jsonschema::Validator, String> {
        let root = serde_json::json!({ "$ref": format!("{DOC_URI}#{}", fragment(pointer)) });
        self.compile(&root).map_err(|e| format!("schema at {pointer}: {e}"))
    }

    fn compile(&self, root: &Value) -> Result<jsonschema::Validator, String> {
        jsonschema::options()
            .with_draft(self.draft)
            .with_registry(self.registry.clone())
            .should_validate_formats(true)
            .build(root)
            .map_err(|e| clip_message(e.to_string()))
    }

    fn operation(&self, path_ptr: &str, item: &Value, method: &str, op: &Value) -> Result<Operation, String> {
        let op_ptr = format!("{path_ptr}/{method}");
        let (mut media_types, mut body, mut body_required) = (Vec::new(), None, false);
        if let Some(rb) = op.get("requestBody") {
            let (rb, rb_ptr) = deref(self.doc, rb, format!("{op_ptr}/requestBody"))?;
            body_required = rb.get("required") == Some(&Value::Bool(true));
            let content = rb.get("content").and_then(Value::as_object);
            let mut json_key = None;
            for key in content.into_iter().flat_map(|c| c.keys()) {
                let m =
                    normalize_media_range(key).ok_or_else(|| format!("{op_ptr}: bad media type {:?}", clip(key)))?;
                if is_json_media_type(&m) && (json_key.is_none() || m == "application/json") {
                    json_key = Some(key);
                }
                media_types.push(m);
            }
            if let Some(key) =
                json_key.filter(|k| content.and_then(|c| c.get(*k)).is_some_and(|c| c.get("schema").is_some()))
            {
                body = Some(self.compile_at(&format!("{rb_ptr}/content/{}/schema", escape_token(key)))?);
            }
        }

        // Path-item parameters, overridden by the operation's own of the same name and location.
        let mut params: Vec<(&Value, String)> = Vec::new();
        for (list, base) in [
            (item.get("parameters"), format!("{path_ptr}/parameters")),
            (op.get("parameters"), format!("{op_ptr}/parameters")),
        ] {
            for (i, p) in list.and_then(Value::as_array).into_iter().flatten().enumerate() {
                let (p, ptr) = deref(self.doc, p, format!("{base}/{i}"))?;
                let key = |p: &Value| (p.get("name").cloned(), p.get("in").cloned());
                params.retain(|(q, _)| key(q) != key(p));
                params.push((p, ptr));
            }
        }
        let mut properties = Map::new();
        let mut required = Vec::new();
        let mut fields = HashMap::new();
        for (p, ptr) in params.iter().filter(|(p, _)| p.get("in").and_then(Value::as_str) == Some("query")) {
            let name =
                p.get("name").and_then(Value::as_str).ok_or_else(|| format!("{ptr}: parameter without a name"))?;
            if p.get("required") == Some(&Value::Bool(true)) {
                required.push(Value::String(name.to_owned()));
            }
            let Some(schema) = p.get("schema") else {
                properties.insert(name.to_owned(), Value::Object(Map::new()));
                continue;
            };
            let style = p.get("style").and_then(Value::as_str).unwrap_or("form");
            let explode = p.get("explode").and_then(Value::as_bool).unwrap_or(style == "form");
            let delimiter = match style {
                "form" if !explode => Some(','),
                "spaceDelimited" => Some(' '),
                "pipeDelimited" => Some('|'),
                _ => None,
            };
            fields.insert(name.to_owned(), coercion_for(self.doc, schema, delimiter));
            properties.insert(
                name.to_owned(),
                serde_json::json!({ "$ref": format!("{DOC_URI}#{}", fragment(&format!("{ptr}/schema"))) }),
            );
        }
        let query = if properties.is_empty() {
            None
        } else {
            let mut root = Map::new();
            root.insert("type".into(), "object".into());
            root.insert("properties".into(), Value::Object(properties));
            if !required.is_empty() {
                root.insert("required".into(), Value::Array(required));
            }
            let validator =
                self.compile(&Value::Object(root)).map_err(|e| format!("{op_ptr} query parameters: {e}"))?;
            Some(QueryCheck { validator, fields })
        };
        Ok(Operation { media_types, body, body_required, query })
    }
}

impl OpenApi {
    fn new(mut doc: Value, operation_id: Option<&str>) -> Result<OpenApi, String> {
        let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
        let draft = if version.starts_with("3.0") {
            // OpenAPI 3.0 schemas are a JSON Schema draft 4 dialect with `nullable`.
            convert_nullable(&mut doc);
            Draft::Draft4
        } else if version.starts_with("3.1") {
            Draft::Draft202012
        } else {
            return Err(format!("unsupported OpenAPI version {:?} (3.0.x or 3.1.x expected)", clip(version)));
        };
        let registry = Registry::try_new(DOC_URI, draft.create_resource(doc.clone())).map_err(|e| e.to_string())?;
        let ctx = DocCtx { doc: &doc, registry, draft };
        let paths = doc.get("paths").and_then(Value::as_object).ok_or("the document has no paths")?;

        let bases = server_bases(&doc);
        let mut entries = Vec::new();
        for (template, item) in paths {
            let path_ptr = format!("/paths/{}", escape_token(template));
            let (item, path_ptr) = deref(&doc, item, path_ptr)?;
            let mut ops = Vec::new();
            for method in METHODS {
                let Some(op) = item.get(method).filter(|o| o.is_object()) else { continue };
                match operation_id {
                    Some(id) if op.get("operationId").and_then(Value::as_str) == Some(id) => {
                        return Ok(OpenApi::Fixed(Box::new(ctx.operation(&path_ptr, item, method, op)?)));
                    }
                    Some(_) => {}
                    None => ops.push((method, ctx.operation(&path_ptr, item, method, op)?)),
                }
            }
            if operation_id.is_none() {
                entries.push(parse_template(template, ops)?);
            }
        }
        if let Some(id) = operation_id {
            return Err(format!("no operation has operationId {:?}", clip(id)));
        }
        // OpenAPI: concrete paths match before templated ones.
        entries.sort_by(|a, b| a.templated.cmp(&b.templated).then(b.literal_len.cmp(&a.literal_len)));
        Ok(OpenApi::Routed { bases, paths: entries })
    }

    fn has_body_checks(&self) -> bool {
        let op_has = |o: &Operation| o.body.is_some() || o.body_required;
        match self {
            OpenApi::Fixed(o) => op_has(o),
            OpenApi::Routed { paths, .. } => paths.iter().flat_map(|p| &p.ops).any(|(_, o)| op_has(o)),
        }
    }

    fn find(&self, method: &Method, path: &str) -> Result<&Operation, Rejection> {
        let (bases, paths) = match self {
            OpenApi::Fixed(op) => return Ok(op),
            OpenApi::Routed { bases, paths } => (bases, paths),
        };
        let path = path.split('?').next().unwrap_or("");
        let lower = method.as_str().to_ascii_lowercase();
        let mut path_matched = false;
        let candidates = bases
            .iter()
            .filter_map(|b| match path.strip_prefix(b.as_str()) {
                Some("") => Some("/"),
                Some(rest) if rest.starts_with('/') => Some(rest),
                _ => None,
            })
            .chain(std::iter::once(path));
        for candidate in candidates {
            let segs: Vec<&str> = candidate.strip_prefix('/').unwrap_or(candidate).split('/').collect();
            for entry in paths.iter().filter(|e| template_matches(&e.segments, &segs)) {
                path_matched = true;
                let found = entry.ops.iter().find(|(m, _)| *m == lower).or_else(|| {
                    // HEAD is GET without a body (RFC 9110 §9.3.2).
                    (*method == Method::HEAD).then(|| entry.ops.iter().find(|(m, _)| *m == "get")).flatten()
                });
                if let Some((_, op)) = found {
                    return Ok(op);
                }
            }
        }
        let m = method.as_str();
        Err(Rejection::bad(if path_matched {
            format!("the OpenAPI document has no {m} operation for this path")
        } else {
            format!("no path in the OpenAPI document matches this {m} request")
        }))
    }
}

/// Path prefixes of the document's `servers` (variables replaced by their defaults), longest
/// first; requests are matched with and without them.
fn server_bases(doc: &Value) -> Vec<String> {
    let mut bases: Vec<String> = Vec::new();
    for server in doc.get("servers").and_then(Value::as_array).into_iter().flatten() {
        let Some(url) = server.get("url").and_then(Value::as_str) else { continue };
        let mut url = url.to_owned();
        if let Some(vars) = server.get("variables").and_then(Value::as_object) {
            for (name, var) in vars {
                if let Some(default) = var.get("default").and_then(Value::as_str) {
                    url = url.replace(&format!("{{{name}}}"), default);
                }
            }
        }
        let path = match url.split_once("//") {
            Some((_, rest)) => rest.find('/').map_or("", |i| rest.get(i..).unwrap_or("")),
            None => url.as_str(),
        };
        let path = path.trim_end_matches('/');
        if path.starts_with('/') && !bases.iter().any(|b| b == path) {
            bases.push(path.to_owned());
        }
    }
    bases.sort_by_key(|b| std::cmp::Reverse(b.len()));
    bases
}

fn parse_template(template: &str, ops: Vec<(&'static str, Operation)>) -> Result<PathEntry, String> {
    let body = template.strip_prefix('/').ok_or_else(|| format!("path {:?} must start with /", clip(template)))?;
    let (mut templated, mut literal_len, mut segments) = (0, 0, Vec::new());
    for seg in body.split('/') {
        let mut pieces = Vec::new();
        let mut rest = seg;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let close = after.find('}').ok_or_else(|| format!("path {:?}: unclosed {{", clip(template)))?;
                if matches!(pieces.last(), Some(Piece::Param)) {
                    return Err(format!("path {:?}: adjacent parameters", clip(template)));
                }
                pieces.push(Piece::Param);
                rest = after.get(close + 1..).unwrap_or("");
            } else {
                let end = rest.find('{').unwrap_or(rest.len());
                let (lit, tail) = rest.split_at(end);
                literal_len += lit.len();
                pieces.push(Piece::Literal(lit.to_owned()));
                rest = tail;
            }
        }
        if pieces.iter().any(|p| matches!(p, Piece::Param)) {
            templated += 1;
        }
        segments.push(pieces);
    }
    Ok(PathEntry { segments, templated, literal_len, ops })
}

fn template_matches(template: &[Vec<Piece>], segs: &[&str]) -> bool {
    template.len() == segs.len() && template.iter().zip(segs).all(|(pieces, seg)| pieces_match(pieces, seg))
}

/// A parameter matches one or more characters; literals match exactly. Pieces per segment are
/// few and never adjacent parameters, so the backtracking is shallow.
fn pieces_match(pieces: &[Piece], s: &str) -> bool {
    match pieces.split_first() {
        None => s.is_empty(),
        Some((Piece::Literal(l), rest)) => s.strip_prefix(l.as_str()).is_some_and(|t| pieces_match(rest, t)),
        Some((Piece::Param, rest)) => {
            if rest.is_empty() {
                return !s.is_empty();
            }
            s.char_indices().skip(1).any(|(i, _)| s.get(i..).is_some_and(|t| pieces_match(rest, t)))
        }
    }
}

/// OpenAPI 3.0 `nullable: true` → JSON Schema: `null` added to `type` (and `enum`).
fn convert_nullable(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = m.get("type") {
                    let t = Value::String(t.clone());
                    m.insert("type".into(), Value::Array(vec![t, "null".into()]));
                }
                if let Some(Value::Array(e)) = m.get_mut("enum") {
                    if !e.contains(&Value::Null) {
                        e.push(Value::Null);
                    }
                }
            }
            m.values_mut().for_each(convert_nullable);
        }
        Value::Array(a) => a.iter_mut().for_each(convert_nullable),
        _ => {}
    }
}

/// The route filter: the head is checked in the request phase; the body, when a schema needs it,
/// is buffered (up to `max_body_bytes`, else 413) and checked before anything goes upstream.
pub(crate) struct ValidateFilter {
    pub(crate) validator: Validator,
    pub(crate) max_body_bytes: u64,
}

impl ValidateFilter {
    fn refuse(s: &mut crate::filter::Session, r: Rejection) -> crate::error::ProxyError {
        let status = http::StatusCode::from_u16(r.status).unwrap_or(http::StatusCode::BAD_REQUEST);
        s.deny(palisade_core::audit::Stage::Validation, r.message.clone());
        crate::error::ProxyError::rejected(status, r.message)
    }
}

#[async_trait::async_trait]
impl crate::filter::Filter for ValidateFilter {
    fn name(&self) -> &'static str {
        "validate"
    }

    async fn request_filter(
        &self,
        s: &mut crate::filter::Session,
    ) -> Result<crate::filter::Flow, crate::error::ProxyError> {
        let head = self.validator.check_head(
            &s.request.method,
            s.request.uri.path(),
            s.request.uri.query(),
            &s.request.headers,
        );
        match head {
            Ok(()) => Ok(crate::filter::Flow::Continue),
            Err(r) => Err(Self::refuse(s, r)),
        }
    }

    fn wants_body(&self) -> Option<u64> {
        self.validator.needs_body().then_some(self.max_body_bytes)
    }

    async fn request_body_filter(
        &self,
        s: &mut crate::filter::Session,
        body: &mut bytes::Bytes,
    ) -> Result<(), crate::error::ProxyError> {
        let path = s.request.uri.path().to_owned();
        match self.validator.check_body(&s.request.method, &path, body) {
            Ok(()) => Ok(()),
            Err(r) => Err(Self::refuse(s, r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/validate").join(name)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn bad(message: &str) -> Result<(), Rejection> {
        Err(Rejection { status: 400, message: message.to_owned() })
    }

    fn media(message: &str) -> Result<(), Rejection> {
        Err(Rejection { status: 415, message: message.to_owned() })
    }

    fn orders() -> Validator {
        let doc = load_document(&fixture("orders.yaml")).unwrap();
        Validator::new(ValidatorSpec { openapi: Some((doc, None)), ..ValidatorSpec::default() }).unwrap()
    }

    const JSON_BODY: &[(&str, &str)] = &[("content-type", "application/json"), ("content-length", "2")];

    #[test]
    fn content_type_allow_list() {
        let v = Validator::new(ValidatorSpec {
            content_types: vec!["application/json".into(), "Application/*+XML".into(), "text/*".into()],
            ..ValidatorSpec::default()
        })
        .unwrap();
        let check = |h: &[(&str, &str)]| v.check_head(&Method::POST, "/x", None, &headers(h));
        assert_eq!(check(&[("content-type", "Application/JSON; charset=utf-8"), ("content-length", "2")]), Ok(()));
        assert_eq!(check(&[("content-type", "text/csv"), ("transfer-encoding", "chunked")]), Ok(()));
        assert_eq!(
            check(&[("content-type", "application/xml"), ("content-length", "2")]),
            media("content type application/xml is not allowed")
        );
        assert_eq!(
            check(&[("content-type", "application/*+xml"), ("content-length", "2")]),
            media("Content-Type is not a media type")
        );
        assert_eq!(check(&[("content-length", "5")]), media("request has a body but no Content-Type"));
        assert_eq!(check(&[("transfer-encoding", "chunked")]), media("request has a body but no Content-Type"));
        assert_eq!(
            check(&[("content-type", "nonsense"), ("content-length", "1")]),
            media("Content-Type is not a media type")
        );
        assert_eq!(
            check(&[("content-type", "application/json"), ("content-type", "text/plain"), ("content-length", "1")]),
            bad("more than one Content-Type header")
        );
        // No body: the content type does not matter.
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(check(&[("content-length", "0"), ("content-type", "image/png")]), Ok(()));
        assert!(!v.needs_body());
        assert_eq!(
            Validator::new(ValidatorSpec { content_types: vec!["json".into()], ..ValidatorSpec::default() })
                .unwrap_err(),
            "content type \"json\" is not type/subtype"
        );
    }

    #[test]
    fn depth_limit_scans_outside_strings() {
        let v = Validator::new(ValidatorSpec {
            content_types: vec!["application/json".into()],
            max_json_depth: 3,
            ..ValidatorSpec::default()
        })
        .unwrap();
        assert!(v.needs_body());
        let check = |b: &str| v.check_body(&Method::POST, "/x", b.as_bytes());
        assert_eq!(check(r#"[[{"a":1}]]"#), Ok(()));
        assert_eq!(check(r#"[[{"a":[1]}]]"#), bad("request body nests deeper than 3 levels"));
        assert_eq!(check(r#"["[[[[[[", {"k\"[[[[": "}}}}]]]][[[["}]"#), Ok(()));
        // A closing bracket inside a string must not lower the depth.
        assert_eq!(check(r#"[[["]]]"]], [[[[]]]]]"#), bad("request body nests deeper than 3 levels"));
        // Depth is checked before parsing: this is not JSON, but the depth error comes first.
        assert_eq!(check(&"[".repeat(100_000)), bad("request body nests deeper than 3 levels"));
        assert_eq!(
            check(r#"{"a":"#),
            bad("request body is not valid JSON: EOF while parsing a value at line 1 column 5")
        );
        assert_eq!(check("  "), Ok(()));
        // Without a JSON-only allow-list the body may be anything, so it is not parsed.
        let any = Validator::new(ValidatorSpec { max_json_depth: 3, ..ValidatorSpec::default() }).unwrap();
        assert!(!any.needs_body());
        assert_eq!(any.check_body(&Method::POST, "/x", b"<xml>"), Ok(()));
    }

    #[test]
    fn body_schema_errors_name_the_pointer() {
        let v = Validator::new(ValidatorSpec {
            json_schema: Some(json!({
                "type": "object",
                "required": ["items"],
                "additionalProperties": false,
                "properties": {
                    "password": {"type": "string", "minLength": 12},
                    "items": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"qty": {"type": "integer", "minimum": 1}}
                    }}
                }
            })),
            ..ValidatorSpec::default()
        })
        .unwrap();
        assert!(v.needs_body());
        let check = |b: &str| v.check_body(&Method::POST, "/x", b.as_bytes());
        assert_eq!(check(r#"{"items":[{"qty":3}]}"#), Ok(()));
        assert_eq!(
            check(r#"{"items":[{"qty":3},{"qty":-1}]}"#),
            bad("request body does not match the schema at /items/1/qty: -1 is less than the minimum of 1")
        );
        // Strings are never echoed (they may be secrets), nor are objects and arrays.
        assert_eq!(
            check(r#"{"items":[],"password":"hunter2"}"#),
            bad("request body does not match the schema at /password: the string is shorter than 12 characters")
        );
        assert_eq!(
            check(r#"[{"secret":"x"}]"#),
            bad(r#"request body does not match the schema at /: the array is not of type "object""#)
        );
        assert_eq!(
            check(r#"{"items":"abc"}"#),
            bad(r#"request body does not match the schema at /items: the string is not of type "array""#)
        );
        assert_eq!(check("{}"), bad(r#"request body does not match the schema at /: "items" is a required property"#));
        let long_key = "k".repeat(1000);
        let err = check(&format!(r#"{{"items":[],"{long_key}":1}}"#)).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.message.len(), 300);
        assert!(err
            .message
            .starts_with("request body does not match the schema at /: Additional properties are not allowed ('kkk"));
        assert!(err.message.ends_with("kkk..."));
        assert_eq!(check(""), Ok(()));
        // Control characters from keys never reach a log line; multi-byte text is cut on a boundary.
        assert_eq!(
            check("{\"items\":[],\"a\\nb\\u0000\":1}"),
            bad("request body does not match the schema at /: Additional properties are not allowed ('a?b?' was unexpected)")
        );
        let err = check(&format!(r#"{{"items":[],"{}":1}}"#, "é".repeat(400))).unwrap_err();
        assert!(err.message.len() <= 300 && err.message.ends_with("é..."), "{}", err.message);
    }

    #[test]
    fn shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Validator>();
        send_sync::<Rejection>();
    }

    #[test]
    fn query_schema_coerces_and_collects_repeats() {
        let v = Validator::new(ValidatorSpec {
            query_schema: Some(json!({
                "type": "object",
                "required": ["limit"],
                "properties": {
                    "limit": {"type": "integer", "minimum": 1},
                    "ratio": {"$ref": "#/$defs/ratio"},
                    "tag": {"type": "array", "items": {"type": "string", "maxLength": 3}},
                    "on": {"type": "boolean"}
                },
                "$defs": {"ratio": {"type": "number", "maximum": 1}}
            })),
            ..ValidatorSpec::default()
        })
        .unwrap();
        let check = |q: Option<&str>| v.check_head(&Method::GET, "/x", q, &HeaderMap::new());
        assert_eq!(check(Some("limit=5&tag=a&tag=b&on=true&ratio=0.5&other=x&other=y")), Ok(()));
        assert_eq!(check(Some("limit=5&tag=abc")), Ok(()));
        assert_eq!(
            check(Some("limit=0")),
            bad("query string does not match the schema at /limit: 0 is less than the minimum of 1")
        );
        assert_eq!(
            check(Some("limit=5&ratio=1.5")),
            bad("query string does not match the schema at /ratio: 1.5 is greater than the maximum of 1")
        );
        assert_eq!(
            check(Some("limit=five")),
            bad(r#"query string does not match the schema at /limit: the string is not of type "integer""#)
        );
        assert_eq!(
            check(Some("limit=1&limit=2")),
            bad(r#"query string does not match the schema at /limit: the array is not of type "integer""#)
        );
        assert_eq!(
            check(Some("limit=1&on=yes")),
            bad(r#"query string does not match the schema at /on: the string is not of type "boolean""#)
        );
        assert_eq!(
            check(Some("limit=1&tag=abcd")),
            bad("query string does not match the schema at /tag/0: the string is longer than 3 characters")
        );
        assert_eq!(check(None), bad(r#"query string does not match the schema at /: "limit" is a required property"#));
        assert!(!v.needs_body());
    }

    #[test]
    fn form_urlencoded_decoding() {
        assert_eq!(
            parse_query("a=1&&b=x+y%21&c&=e&%zz=%4"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y!".into()),
                ("c".into(), "".into()),
                ("".into(), "e".into()),
                ("%zz".into(), "%4".into()),
            ]
        );
        assert_eq!(parse_query("k=%E2%82%AC%FF"), vec![("k".into(), "€\u{fffd}".into())]);
        assert_eq!(coerce("12", Scalar::Number), json!(12));
        assert_eq!(coerce("1e2", Scalar::Number), json!(100.0));
        assert_eq!(coerce("NaN", Scalar::Number), json!("NaN"));
        assert_eq!(coerce("1.5", Scalar::Integer), json!("1.5"));
        assert_eq!(coerce("18446744073709551615", Scalar::Integer), json!(18446744073709551615u64));
        assert_eq!(coerce("True", Scalar::Boolean), json!("True"));
    }

    #[test]
    fn openapi_routes_by_method_and_path() {
        let v = orders();
        assert!(v.needs_body());
        let head = |m: Method, p: &str, q: Option<&str>, h: &[(&str, &str)]| v.check_head(&m, p, q, &headers(h));
        assert_eq!(head(Method::GET, "/orders", Some("limit=10&ids=1,2,3&paid=false"), &[]), Ok(()));
        // The servers base path (with its variable default) may be present or already stripped.
        assert_eq!(head(Method::GET, "/api/v1/orders", Some("limit=10"), &[]), Ok(()));
        assert_eq!(
            head(Method::GET, "/orders", Some("limit=500"), &[]),
            bad("query string does not match the schema at /limit: 500 is greater than the maximum of 100")
        );
        assert_eq!(
            head(Method::GET, "/orders", Some("ids=1,x"), &[]),
            bad(r#"query string does not match the schema at /ids/1: the string is not of type "integer""#)
        );
        // Concrete paths win over templated ones.
        assert_eq!(
            head(Method::GET, "/orders/summary", None, &[]),
            bad(r#"query string does not match the schema at /: "from" is a required property"#)
        );
        assert_eq!(
            head(Method::GET, "/orders/summary", Some("from=2024-13-01"), &[]),
            bad(r#"query string does not match the schema at /from: the string is not a "date""#)
        );
        assert_eq!(head(Method::GET, "/orders/summary", Some("from=2024-12-01"), &[]), Ok(()));
        // Path-level parameter `expand` (boolean), overridden by PUT's own (string enum).
        assert_eq!(head(Method::GET, "/orders/42", Some("expand=true"), &[]), Ok(()));
        assert_eq!(
            head(Method::GET, "/orders/42", Some("expand=items"), &[]),
            bad(r#"query string does not match the schema at /expand: the string is not of type "boolean""#)
        );
        assert_eq!(head(Method::PUT, "/orders/42", Some("expand=items"), &[]), Ok(()));
        assert_eq!(head(Method::HEAD, "/orders/42", None, &[]), Ok(()));
        assert_eq!(head(Method::GET, "/files/report.json", None, &[]), Ok(()));
        assert_eq!(
            head(Method::GET, "/files/.json", None, &[]),
            bad("no path in the OpenAPI document matches this GET request")
        );
        assert_eq!(
            head(Method::GET, "/orders/42/items", None, &[]),
            bad("no path in the OpenAPI document matches this GET request")
        );
        assert_eq!(
            head(Method::GET, "/orders/", None, &[]),
            bad("no path in the OpenAPI document matches this GET request")
        );
        assert_eq!(
            head(Method::DELETE, "/orders/42", None, &[]),
            bad("the OpenAPI document has no DELETE operation for this path")
        );
        // Media types come from the operation's requestBody.content.
        assert_eq!(head(Method::POST, "/orders", None, JSON_BODY), Ok(()));
        assert_eq!(
            head(Method::POST, "/orders", None, &[("content-type", "text/plain"), ("content-length", "2")]),
            media("content type text/plain is not accepted by this operation")
        );
        assert_eq!(
            head(Method::PUT, "/orders/1", None, &[("content-type", "text/plain"), ("content-length", "2")]),
            Ok(())
        );
    }

    #[test]
    fn openapi_body_schemas_resolve_refs() {
        let v = orders();
        let body = |m: Method, p: &str, b: &str| v.check_body(&m, p, b.as_bytes());
        assert_eq!(body(Method::POST, "/orders", r#"{"items":[{"sku":"ABC-1","qty":2}],"note":null}"#), Ok(()));
        assert_eq!(
            body(Method::POST, "/api/v1/orders", r#"{"items":[{"sku":"ABC-1","qty":2},{"sku":"ABC-2","qty":-1}]}"#),
            bad("request body does not match the schema at /items/1/qty: -1 is less than the minimum of 1")
        );
        // OpenAPI 3.0 boolean exclusiveMaximum (draft 4 semantics).
        assert_eq!(
            body(Method::POST, "/orders", r#"{"items":[{"sku":"ABC-1","qty":1000}]}"#),
            bad("request body does not match the schema at /items/0/qty: 1000 is greater than or equal to the maximum of 1000")
        );
        assert_eq!(
            body(Method::POST, "/orders", r#"{"items":[{"sku":"abc","qty":1}]}"#),
            bad(
                r#"request body does not match the schema at /items/0/sku: the string does not match "^[A-Z]{3}-[0-9]+$""#
            )
        );
        assert_eq!(
            body(Method::POST, "/orders", r#"{"items":[{"sku":"ABC-1","qty":1}],"note":7}"#),
            bad(r#"request body does not match the schema at /note: 7 is not of types "null", "string""#)
        );
        assert_eq!(body(Method::POST, "/orders", ""), bad("request body is required"));
        // The merge-patch+json schema of PUT is used (no application/json key there).
        assert_eq!(
            body(Method::PUT, "/orders/9", r#"{"items":[]}"#),
            bad("request body does not match the schema at /items: the array has less than 1 item")
        );
        // GET declares no body schema.
        assert_eq!(body(Method::GET, "/orders", r#"{"anything":1}"#), Ok(()));
        assert_eq!(body(Method::GET, "/nope", "{}"), bad("no path in the OpenAPI document matches this GET request"));
    }

    #[test]
    fn openapi_operation_id_31() {
        let doc = json!({
            "openapi": "3.1.0",
            "paths": {
                "/users/{id}": {
                    "patch": {
                        "operationId": "patchUser",
                        "parameters": [{"name": "dry", "in": "query", "required": true, "schema": {"type": ["boolean", "null"]}}],
                        "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/User"}}}}
                    }
                }
            },
            "components": {"schemas": {"User": {
                "type": "object",
                "properties": {"age": {"type": "integer", "exclusiveMinimum": 0}, "nick": {"type": ["string", "null"]}}
            }}}
        });
        let v = Validator::new(ValidatorSpec {
            openapi: Some((doc.clone(), Some("patchUser".into()))),
            ..ValidatorSpec::default()
        })
        .unwrap();
        // With an operationId the path is not consulted.
        assert_eq!(v.check_head(&Method::PATCH, "/anything", Some("dry=false"), &headers(JSON_BODY)), Ok(()));
        assert_eq!(
            v.check_head(&Method::PATCH, "/anything", None, &HeaderMap::new()),
            bad(r#"query string does not match the schema at /: "dry" is a required property"#)
        );
        assert_eq!(v.check_body(&Method::PATCH, "/x", br#"{"age":1,"nick":null}"#), Ok(()));
        assert_eq!(
            v.check_body(&Method::PATCH, "/x", br#"{"age":0}"#),
            bad("request body does not match the schema at /age: 0 is less than or equal to the minimum of 0")
        );
        // Not required in the document: an empty body passes.
        assert_eq!(v.check_body(&Method::PATCH, "/x", b""), Ok(()));
        assert_eq!(
            Validator::new(ValidatorSpec { openapi: Some((doc, Some("nope".into()))), ..ValidatorSpec::default() })
                .unwrap_err(),
            "openapi: no operation has operationId \"nope\""
        );
    }

    #[test]
    fn construction_errors() {
        let err = |spec: ValidatorSpec| Validator::new(spec).unwrap_err();
        let openapi = |doc: Value| ValidatorSpec { openapi: Some((doc, None)), ..ValidatorSpec::default() };
        assert_eq!(
            err(openapi(json!({"openapi": "2.0", "paths": {}}))),
            "openapi: unsupported OpenAPI version \"2.0\" (3.0.x or 3.1.x expected)"
        );
        assert_eq!(err(openapi(json!({"openapi": "3.1.0"}))), "openapi: the document has no paths");
        let missing = json!({"openapi": "3.1.0", "paths": {"/a": {"post": {"requestBody": {"$ref": "#/components/requestBodies/X"}}}}});
        assert_eq!(err(openapi(missing)), "openapi: $ref \"#/components/requestBodies/X\" does not resolve");
        let external =
            json!({"openapi": "3.1.0", "paths": {"/a": {"get": {"parameters": [{"$ref": "common.yaml#/P"}]}}}});
        assert_eq!(
            err(openapi(external)),
            "openapi: $ref \"common.yaml#/P\": only references inside the document are supported"
        );
        // A dangling $ref inside a schema is found by the compiler at construction time.
        let dangling = json!({"openapi": "3.1.0", "paths": {"/a": {"post": {"requestBody": {"content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Gone"}}}}}}}});
        let e = err(openapi(dangling));
        assert!(
            e.starts_with("openapi: schema at /paths/~1a/post/requestBody/content/application~1json/schema: "),
            "{e}"
        );
        assert!(e.contains("Gone"), "{e}");
        let e = err(ValidatorSpec { json_schema: Some(json!({"type": 5})), ..ValidatorSpec::default() });
        assert!(e.starts_with("json_schema: "), "{e}");
        let e = err(ValidatorSpec { query_schema: Some(json!({"minimum": "x"})), ..ValidatorSpec::default() });
        assert!(e.starts_with("query_schema: "), "{e}");
        assert_eq!(
            err(openapi(json!({"openapi": "3.0.0", "paths": {"orders": {}}}))),
            "openapi: path \"orders\" must start with /"
        );
        assert_eq!(
            err(openapi(json!({"openapi": "3.0.0", "paths": {"/a/{id": {}}}))),
            "openapi: path \"/a/{id\": unclosed {"
        );
    }

    #[test]
    fn load_document_by_extension() {
        let doc = load_document(&fixture("orders.yaml")).unwrap();
        // Integer YAML keys become strings; the merge key is applied; nullable is untouched here.
        assert_eq!(doc["paths"]["/orders"]["get"]["responses"]["200"], json!({"description": "ok"}));
        assert_eq!(doc["components"]["schemas"]["Order"]["type"], json!("object"));
        assert_eq!(doc["components"]["schemas"]["Order"].get("<<"), None);
        let dir = std::env::temp_dir().join(format!("palisade-validate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json_path = dir.join("s.JSON");
        std::fs::write(&json_path, r#"{"type": "integer"}"#).unwrap();
        assert_eq!(load_document(&json_path).unwrap(), json!({"type": "integer"}));
        let txt = dir.join("s.txt");
        assert_eq!(
            load_document(&txt).unwrap_err(),
            format!("{}: the file name must end in .json, .yaml or .yml", txt.display())
        );
        let broken = dir.join("b.json");
        std::fs::write(&broken, "{").unwrap();
        assert_eq!(
            load_document(&broken).unwrap_err(),
            format!("{}: EOF while parsing an object at line 1 column 1", broken.display())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nullable_conversion_and_helpers() {
        let mut v = json!({"a": {"type": "string", "nullable": true, "enum": ["x"]}, "b": {"nullable": false, "type": "integer"}});
        convert_nullable(&mut v);
        assert_eq!(
            v,
            json!({"a": {"type": ["string", "null"], "nullable": true, "enum": ["x", null]}, "b": {"nullable": false, "type": "integer"}})
        );
        assert_eq!(fragment("/paths/~1orders~1{id}/get"), "/paths/~1orders~1%7Bid%7D/get");
        assert_eq!(escape_token("a/b~c"), "a~1b~0c");
        assert_eq!(
            server_bases(
                &json!({"servers": [{"url": "/v2/"}, {"url": "https://h.example/{b}/x", "variables": {"b": {"default": "api"}}}, {"url": "https://h.example"}]})
            ),
            vec!["/api/x".to_owned(), "/v2".to_owned()]
        );
        let entry = parse_template("/f/{a}-{b}.tar.gz", Vec::new()).unwrap();
        assert!(template_matches(&entry.segments, &["f", "x-y.tar.gz"]));
        assert!(template_matches(&entry.segments, &["f", "x-y-z.tar.gz"]));
        assert!(!template_matches(&entry.segments, &["f", "-y.tar.gz"]));
        assert!(!template_matches(&entry.segments, &["f", "x-y.zip"]));
        assert_eq!(
            parse_template("/{a}{b}", Vec::new()).err(),
            Some("path \"/{a}{b}\": adjacent parameters".to_owned())
        );
    }
}
