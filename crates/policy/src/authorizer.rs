//! The compiled authorizer and the request hot path.
//!
//! Invariants: default deny; `forbid` wins; any evaluation error denies (fail closed), even when Cedar's
//! skip-on-error semantics would allow; a method the schema does not declare denies without evaluation.
//! Nothing is parsed per request except the client IP literal inside Cedar's `ip()` constructor.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use cedar_policy::{
    Context, Entities, EntityId, EntityTypeName, EntityUid, PolicySet, Request, RestrictedExpression,
};
use serde_json::{Map, Value};

use crate::compile::{compile, scalar_text, PolicyError, PolicySource, RouteRules};
use crate::schema::{
    ACTIONS, BOOL_CLAIMS, LONG_CLAIMS, MAX_CLAIM_DEPTH, MAX_CLAIM_ENTRIES, SET_CLAIMS, STRING_CLAIMS,
};

/// Who is asking, as established by authentication (the entity type of the Cedar principal).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// An end user, id = token `sub`. Cedar `User::"<sub>"`.
    User(String),
    /// A workload, id = its SPIFFE ID. Cedar `Service::"spiffe://..."`.
    Service(String),
    /// An OAuth client acting for itself (client credentials, API key). Cedar `Client::"<client_id>"`.
    Client(String),
    /// No credentials. Cedar `Anonymous::"anonymous"`.
    Anonymous,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = |s: &str| crate::compile::cedar_string(s);
        match self {
            Principal::User(id) => write!(f, "User::{}", quoted(id)),
            Principal::Service(id) => write!(f, "Service::{}", quoted(id)),
            Principal::Client(id) => write!(f, "Client::{}", quoted(id)),
            Principal::Anonymous => f.write_str("Anonymous::\"anonymous\""),
        }
    }
}

/// Everything a decision looks at. Borrowed, so the caller builds it without copying.
#[derive(Debug, Clone)]
pub struct AuthzRequest<'a> {
    /// The Cedar principal.
    pub principal: Principal,
    /// HTTP method (the Cedar action id), case-sensitive: `GET`, `POST`, ... or `detokenize`.
    pub method: &'a str,
    /// Route name (the `Route` entity id).
    pub route: &'a str,
    /// Request path, for `context.path`.
    pub path: &'a str,
    /// Whether credentials were verified (`context.authenticated`).
    pub authenticated: bool,
    /// Token scopes.
    pub scopes: &'a [String],
    /// Principal roles.
    pub roles: &'a [String],
    /// OAuth client id, if any (`context.client_id`, empty when none).
    pub client_id: Option<&'a str>,
    /// Token issuer, if any (`context.issuer`, empty when none).
    pub issuer: Option<&'a str>,
    /// Verified token claims, if any (`context.claims` and `context.claims_str`).
    pub claims: Option<&'a Map<String, Value>>,
    /// Peer address (`context.client_ip`).
    pub client_ip: IpAddr,
    /// Verified mTLS peer identity, if any (`context.mtls_identity`, empty when none).
    pub mtls_identity: Option<&'a str>,
    /// Unix seconds (`context.time`).
    pub now: u64,
}

/// The outcome of one decision. `allow` is false whenever `errors` is non-empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allow: bool,
    /// The determining policies: the satisfied `permit`s on allow, the satisfied `forbid`s on a forbid
    /// deny, none on a default deny or an error deny.
    pub policy_ids: Vec<String>,
    /// Evaluation or request-construction errors (each of which denies).
    pub errors: Vec<String>,
}

impl Decision {
    fn deny_error(error: String) -> Self {
        Decision { allow: false, policy_ids: Vec::new(), errors: vec![error] }
    }
}

/// A decision with the source text of its determining policies, for `palisade policy explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The decision itself.
    pub decision: Decision,
    /// `(policy id, policy source)` of each determining policy, in `decision.policy_ids` order.
    pub policies: Vec<(String, String)>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", if self.decision.allow { "ALLOW" } else { "DENY" })?;
        if self.policies.is_empty() {
            if self.decision.errors.is_empty() {
                writeln!(f, "no policy permits this request (default deny)")?;
            } else {
                writeln!(f, "denied because evaluation failed (fail closed)")?;
            }
        } else {
            let ids: Vec<&str> = self.policies.iter().map(|(id, _)| id.as_str()).collect();
            writeln!(f, "determined by: {}", ids.join(", "))?;
            for (id, text) in &self.policies {
                writeln!(f, "\n// {id}\n{}", text.trim())?;
            }
        }
        for e in &self.decision.errors {
            writeln!(f, "error: {e}")?;
        }
        Ok(())
    }
}

/// Compiled policies (files + route shortcuts), validated against [`crate::SCHEMA`]. Cheap to share
/// (`Arc`) and immutable: reloads compile a new one and swap it in.
#[derive(Debug)]
pub struct Authorizer {
    policies: PolicySet,
    texts: HashMap<String, String>,
    engine: cedar_policy::Authorizer,
    entities: Entities,
    actions: Vec<(&'static str, EntityUid)>,
    user: EntityTypeName,
    service: EntityTypeName,
    client: EntityTypeName,
    anonymous: EntityUid,
    route: EntityTypeName,
}

fn type_name(name: &str) -> Result<EntityTypeName, PolicyError> {
    EntityTypeName::from_str(name).map_err(|e| PolicyError {
        file: "<schema>".into(),
        line: 0,
        column: 0,
        message: format!("entity type `{name}`: {e}"),
    })
}

impl Authorizer {
    /// Parses, compiles and validates every file and route rule; all of them or nothing.
    pub fn compile(files: &[PolicySource], routes: &[RouteRules]) -> Result<Authorizer, Vec<PolicyError>> {
        let compiled = compile(files, routes)?;
        let action_type = type_name("Action").map_err(|e| vec![e])?;
        let actions = ACTIONS
            .iter()
            .map(|a| (*a, EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(a))))
            .collect();
        let anonymous = EntityUid::from_type_name_and_id(
            type_name("Anonymous").map_err(|e| vec![e])?,
            EntityId::new("anonymous"),
        );
        Ok(Authorizer {
            policies: compiled.policies,
            texts: compiled.texts,
            engine: cedar_policy::Authorizer::new(),
            entities: Entities::empty(),
            actions,
            user: type_name("User").map_err(|e| vec![e])?,
            service: type_name("Service").map_err(|e| vec![e])?,
            client: type_name("Client").map_err(|e| vec![e])?,
            anonymous,
            route: type_name("Route").map_err(|e| vec![e])?,
        })
    }

    /// Ids of every compiled policy, sorted.
    pub fn policy_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.texts.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// Source text of one policy (as written in its file, or as generated for a route shortcut).
    pub fn policy_text(&self, id: &str) -> Option<&str> {
        self.texts.get(id).map(String::as_str)
    }

    /// Decides one request: default deny, `forbid` wins, errors deny.
    pub fn decide(&self, req: &AuthzRequest<'_>) -> Decision {
        let request = match self.request(req) {
            Ok(request) => request,
            Err(e) => return Decision::deny_error(e),
        };
        let response = self.engine.is_authorized(&request, &self.policies, &self.entities);
        let errors: Vec<String> = response.diagnostics().errors().map(ToString::to_string).collect();
        let allowed = response.decision() == cedar_policy::Decision::Allow;
        // Cedar skips a policy that errors; an erroring `forbid` must not let a `permit` through.
        let allow = allowed && errors.is_empty();
        let policy_ids = if allowed && !allow {
            Vec::new()
        } else {
            let mut ids: Vec<String> = response.diagnostics().reason().map(|id| AsRef::<str>::as_ref(id).to_owned()).collect();
            ids.sort_unstable();
            ids
        };
        Decision { allow, policy_ids, errors }
    }

    /// [`Authorizer::decide`] plus the source of the determining policies.
    pub fn explain(&self, req: &AuthzRequest<'_>) -> Explanation {
        let decision = self.decide(req);
        let policies = decision
            .policy_ids
            .iter()
            .map(|id| (id.clone(), self.texts.get(id).cloned().unwrap_or_default()))
            .collect();
        Explanation { decision, policies }
    }

    fn request(&self, req: &AuthzRequest<'_>) -> Result<Request, String> {
        let action = self
            .actions
            .iter()
            .find(|(name, _)| *name == req.method)
            .map(|(_, uid)| uid.clone())
            .ok_or_else(|| format!("method `{}` is not an action of the schema", truncate(req.method)))?;
        let principal = match &req.principal {
            Principal::User(id) => EntityUid::from_type_name_and_id(self.user.clone(), EntityId::new(id)),
            Principal::Service(id) => EntityUid::from_type_name_and_id(self.service.clone(), EntityId::new(id)),
            Principal::Client(id) => EntityUid::from_type_name_and_id(self.client.clone(), EntityId::new(id)),
            Principal::Anonymous => self.anonymous.clone(),
        };
        let resource = EntityUid::from_type_name_and_id(self.route.clone(), EntityId::new(req.route));
        let context = build_context(req)?;
        Request::new(principal, action, resource, context, None).map_err(|e| e.to_string())
    }

    #[cfg(test)]
    pub(crate) fn request_checked(&self, req: &AuthzRequest<'_>) -> Result<(), String> {
        let schema = cedar_policy::Schema::from_cedarschema_str(crate::SCHEMA).map_err(|e| e.to_string())?.0;
        let request = self.request(req)?;
        let (p, a, r, c) = (request.principal(), request.action(), request.resource(), request.context());
        match (p, a, r, c) {
            (Some(p), Some(a), Some(r), Some(c)) => {
                Request::new(p.clone(), a.clone(), r.clone(), c.clone(), Some(&schema)).map_err(|e| e.to_string())?;
                Ok(())
            }
            _ => Err("unknowns in request".into()),
        }
    }
}

/// Attacker-influenced text in error messages is cut short.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

fn string_set<'a>(items: impl IntoIterator<Item = &'a String>) -> RestrictedExpression {
    RestrictedExpression::new_set(items.into_iter().map(|s| RestrictedExpression::new_string(s.clone())))
}

fn build_context(req: &AuthzRequest<'_>) -> Result<Context, String> {
    let time = i64::try_from(req.now).map_err(|_| "time does not fit a Cedar Long".to_owned())?;
    let (claims, claims_str) = match req.claims {
        Some(claims) => (standard_claims(claims)?, flatten_claims(claims)?),
        None => (RestrictedExpression::new_record(Vec::new()).map_err(|e| e.to_string())?, Vec::new()),
    };
    let s = |v: Option<&str>| RestrictedExpression::new_string(v.unwrap_or_default().to_owned());
    let pairs = vec![
        ("path".to_owned(), RestrictedExpression::new_string(req.path.to_owned())),
        ("method".to_owned(), RestrictedExpression::new_string(req.method.to_owned())),
        ("authenticated".to_owned(), RestrictedExpression::new_bool(req.authenticated)),
        ("scopes".to_owned(), string_set(req.scopes)),
        ("roles".to_owned(), string_set(req.roles)),
        ("client_id".to_owned(), s(req.client_id)),
        ("issuer".to_owned(), s(req.issuer)),
        ("client_ip".to_owned(), RestrictedExpression::new_ip(req.client_ip.to_string())),
        ("mtls_identity".to_owned(), s(req.mtls_identity)),
        ("time".to_owned(), RestrictedExpression::new_long(time)),
        ("claims".to_owned(), claims),
        ("claims_str".to_owned(), RestrictedExpression::new_set(claims_str.into_iter().map(RestrictedExpression::new_string))),
    ];
    Context::from_pairs(pairs).map_err(|e| e.to_string())
}

/// The `context.claims` record: registered claims whose JSON type fits the schema; the rest left out.
fn standard_claims(claims: &Map<String, Value>) -> Result<RestrictedExpression, String> {
    let mut fields: Vec<(String, RestrictedExpression)> = Vec::new();
    for name in STRING_CLAIMS {
        if let Some(Value::String(v)) = claims.get(name) {
            fields.push((name.to_owned(), RestrictedExpression::new_string(v.clone())));
        }
    }
    for name in SET_CLAIMS {
        let set = match claims.get(name) {
            Some(Value::String(v)) => Some(vec![RestrictedExpression::new_string(v.clone())]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(|s| RestrictedExpression::new_string(s.to_owned())))
                .collect::<Option<Vec<_>>>(),
            _ => None,
        };
        if let Some(set) = set {
            fields.push((name.to_owned(), RestrictedExpression::new_set(set)));
        }
    }
    for name in LONG_CLAIMS {
        if let Some(v) = claims.get(name).and_then(Value::as_i64) {
            fields.push((name.to_owned(), RestrictedExpression::new_long(v)));
        }
    }
    for name in BOOL_CLAIMS {
        if let Some(Value::Bool(v)) = claims.get(name) {
            fields.push((name.to_owned(), RestrictedExpression::new_bool(*v)));
        }
    }
    RestrictedExpression::new_record(fields).map_err(|e| e.to_string())
}

/// The `context.claims_str` entries (see the `schema` module docs for the format).
pub(crate) fn flatten_claims(claims: &Map<String, Value>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut path = String::new();
    flatten_object(claims, &mut path, 1, &mut out)?;
    Ok(out)
}

fn flatten_object(obj: &Map<String, Value>, path: &mut String, depth: usize, out: &mut Vec<String>) -> Result<(), String> {
    if depth > MAX_CLAIM_DEPTH {
        return Err(format!("claims nested deeper than {MAX_CLAIM_DEPTH} levels"));
    }
    for (key, value) in obj {
        if key.contains('=') {
            continue;
        }
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        flatten_value(value, path, depth, out)?;
        path.truncate(len);
    }
    Ok(())
}

fn flatten_value(value: &Value, path: &mut String, depth: usize, out: &mut Vec<String>) -> Result<(), String> {
    match value {
        Value::Null => Ok(()),
        Value::Object(obj) => flatten_object(obj, path, depth.saturating_add(1), out),
        Value::Array(items) => {
            if depth >= MAX_CLAIM_DEPTH {
                return Err(format!("claims nested deeper than {MAX_CLAIM_DEPTH} levels"));
            }
            let len = path.len();
            path.push_str("[]");
            for item in items {
                flatten_value(item, path, depth.saturating_add(1), out)?;
            }
            path.truncate(len);
            Ok(())
        }
        scalar => {
            if out.len() >= MAX_CLAIM_ENTRIES {
                return Err(format!("claims have more than {MAX_CLAIM_ENTRIES} values"));
            }
            if let Some(text) = scalar_text(scalar) {
                out.push(format!("{path}={text}"));
            }
            Ok(())
        }
    }
}
