//! The compiled authorizer and the request hot path.
//!
//! Invariants: default deny; `forbid` wins; any evaluation error denies (fail closed), even when Cedar's
//! skip-on-error semantics would allow; a method the schema does not declare denies without evaluation.
//! Nothing is parsed per request except the client IP literal inside Cedar's `ip()` constructor.
//! Cedar evaluates every policy of a set, so policies are pre-partitioned by (route, action) from their
//! scope: a request only evaluates the policies whose scope could match it (same decision, less work).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};

use cedar_policy::{
    ActionConstraint, Context, Entities, EntityId, EntityTypeName, EntityUid, PolicySet, Request, ResourceConstraint,
    RestrictedExpression,
};
use serde_json::{Map, Value};

use crate::compile::{compile, scalar_text, PolicyError, PolicySource, RouteRules};
use crate::schema::{ACTIONS, BOOL_CLAIMS, LONG_CLAIMS, MAX_CLAIM_DEPTH, MAX_CLAIM_ENTRIES, SET_CLAIMS, STRING_CLAIMS};

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
    /// deny, none on a default deny or an error deny. Shared: a cached decision is handed out
    /// without copying them.
    pub policy_ids: Arc<[String]>,
    /// Evaluation or request-construction errors (each of which denies).
    pub errors: Vec<String>,
}

impl Decision {
    fn deny_error(error: String) -> Self {
        Decision { allow: false, policy_ids: Arc::default(), errors: vec![error] }
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
    /// Policies scoped to one route (`resource == / in Route::"r"`) plus the unscoped ones, per action
    /// (indexed like `ACTIONS`).
    by_route: HashMap<String, Vec<PolicySet>>,
    /// Policies with no route in their scope, per action: used for routes no policy names.
    generic: Vec<PolicySet>,
    texts: HashMap<String, String>,
    engine: cedar_policy::Authorizer,
    entities: Entities,
    actions: Vec<(&'static str, EntityUid)>,
    user: EntityTypeName,
    service: EntityTypeName,
    client: EntityTypeName,
    anonymous: EntityUid,
    route: EntityTypeName,
    needs: Needs,
    /// Decisions by their inputs; only used when the policies read nothing that changes per request
    /// (path, client IP, time, claims), see [`Authorizer::write_cache_key`].
    decisions: RwLock<HashMap<Vec<u8>, Decision, foldhash::quality::RandomState>>,
}

/// Entries before the decision cache is emptied (the policies are fixed for an `Authorizer`, so a
/// remembered decision is never stale; the bound is only for memory).
const DECISION_CACHE_MAX: usize = 10_000;

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
        let anonymous =
            EntityUid::from_type_name_and_id(type_name("Anonymous").map_err(|e| vec![e])?, EntityId::new("anonymous"));
        let (by_route, generic) = partition(&compiled.policies).map_err(|e| vec![e])?;
        Ok(Authorizer {
            by_route,
            generic,
            texts: compiled.texts,
            engine: cedar_policy::Authorizer::new(),
            entities: Entities::empty(),
            actions,
            user: type_name("User").map_err(|e| vec![e])?,
            service: type_name("Service").map_err(|e| vec![e])?,
            client: type_name("Client").map_err(|e| vec![e])?,
            anonymous,
            route: type_name("Route").map_err(|e| vec![e])?,
            needs: Needs::of(&compiled.policies),
            decisions: RwLock::new(HashMap::default()),
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
        let Some(index) = ACTIONS.iter().position(|a| *a == req.method) else {
            return Decision::deny_error(format!("method `{}` is not an action of the schema", truncate(req.method)));
        };
        // The key is written into a buffer of this thread's; it is copied only into the cache.
        thread_local! {
            static KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let key = KEY.with_borrow_mut(|k| {
            k.clear();
            self.write_cache_key(index, req, k).then(|| {
                let hit = self.decisions.read().unwrap_or_else(PoisonError::into_inner).get(&k[..]).cloned();
                hit.ok_or_else(|| k.clone())
            })
        });
        let Some(found) = key else { return self.evaluate(index, req) };
        // Claims over the limits deny whether or not a policy reads them (as in `build_context`).
        if let Some(Err(e)) = req.claims.map(check_claim_limits) {
            return Decision::deny_error(e);
        }
        let key = match found {
            Ok(cached) => return cached,
            Err(key) => key,
        };
        let decision = self.evaluate(index, req);
        let mut cache = self.decisions.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= DECISION_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, decision.clone());
        decision
    }

    /// The inputs the policies read, written into `k` as an injective byte string (each field
    /// length-prefixed); `false` when they read something that differs per request (path, client
    /// IP, time, claims): then every request is evaluated.
    fn write_cache_key(&self, action: usize, req: &AuthzRequest<'_>, k: &mut Vec<u8>) -> bool {
        let n = &self.needs;
        if n.path || n.client_ip || n.time || n.claims || n.claims_str {
            return false;
        }
        fn field(k: &mut Vec<u8>, s: &str) {
            k.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
            k.extend_from_slice(s.as_bytes());
        }
        fn list(k: &mut Vec<u8>, items: &[String]) {
            k.extend_from_slice(&u32::try_from(items.len()).unwrap_or(u32::MAX).to_le_bytes());
            items.iter().for_each(|i| field(k, i));
        }
        fn opt(k: &mut Vec<u8>, s: Option<&str>) {
            match s {
                None => k.push(0),
                Some(s) => {
                    k.push(1);
                    field(k, s);
                }
            }
        }
        k.push(u8::try_from(action).unwrap_or(u8::MAX));
        let (tag, id) = match &req.principal {
            Principal::User(id) => (1, Some(id)),
            Principal::Service(id) => (2, Some(id)),
            Principal::Client(id) => (3, Some(id)),
            Principal::Anonymous => (4, None),
        };
        k.push(tag);
        if let Some(id) = id {
            field(k, id);
        }
        field(k, req.route);
        if n.authenticated {
            k.push(u8::from(req.authenticated));
        }
        if n.scopes {
            list(k, req.scopes);
        }
        if n.roles {
            list(k, req.roles);
        }
        if n.client_id {
            opt(k, req.client_id);
        }
        if n.issuer {
            opt(k, req.issuer);
        }
        if n.mtls_identity {
            opt(k, req.mtls_identity);
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn cached_decisions(&self) -> usize {
        self.decisions.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn evaluate(&self, index: usize, req: &AuthzRequest<'_>) -> Decision {
        let request = match self.request(req) {
            Ok(request) => request,
            Err(e) => return Decision::deny_error(e),
        };
        let policies = match self.by_route.get(req.route) {
            Some(sets) => sets.get(index),
            None => self.generic.get(index),
        };
        let Some(policies) = policies else {
            return Decision::deny_error("internal: no policy set for action".into());
        };
        let response = self.engine.is_authorized(&request, policies, &self.entities);
        let errors: Vec<String> = response.diagnostics().errors().map(ToString::to_string).collect();
        let allowed = response.decision() == cedar_policy::Decision::Allow;
        // Cedar skips a policy that errors; an erroring `forbid` must not let a `permit` through.
        let allow = allowed && errors.is_empty();
        let policy_ids: Arc<[String]> = if allowed && !allow {
            Arc::default()
        } else {
            let mut ids: Vec<String> =
                response.diagnostics().reason().map(|id| AsRef::<str>::as_ref(id).to_owned()).collect();
            ids.sort_unstable();
            ids.into()
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
        self.request_with(req, &self.needs)
    }

    fn request_with(&self, req: &AuthzRequest<'_>, needs: &Needs) -> Result<Request, String> {
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
        let context = build_context(req, needs)?;
        Request::new(principal, action, resource, context, None).map_err(|e| e.to_string())
    }

    #[cfg(test)]
    pub(crate) fn request_checked(&self, req: &AuthzRequest<'_>) -> Result<(), String> {
        let schema = cedar_policy::Schema::from_cedarschema_str(crate::SCHEMA).map_err(|e| e.to_string())?.0;
        let request = self.request_with(req, &Needs::ALL)?;
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

/// Splits `all` by the route and actions its policies' scopes allow (see the module doc).
/// Per-route policy sets and the route-less ones, each indexed like `ACTIONS`.
type Partition = (HashMap<String, Vec<PolicySet>>, Vec<PolicySet>);

fn partition(all: &PolicySet) -> Result<Partition, PolicyError> {
    let internal = |e: cedar_policy::PolicySetError| PolicyError {
        file: "<index>".into(),
        line: 0,
        column: 0,
        message: format!("internal: {e}"),
    };
    let mut scoped: Vec<(Option<String>, [bool; ACTIONS.len()], &cedar_policy::Policy)> = Vec::new();
    for policy in all.policies() {
        let route = match policy.resource_constraint() {
            ResourceConstraint::Eq(uid) | ResourceConstraint::In(uid) | ResourceConstraint::IsIn(_, uid) => {
                Some(uid.id().unescaped().to_owned())
            }
            ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
        };
        let mut actions = [false; ACTIONS.len()];
        // The schema has no action groups, so `in` is membership in the listed actions.
        let listed = match policy.action_constraint() {
            ActionConstraint::Any => None,
            ActionConstraint::Eq(uid) => Some(vec![uid]),
            ActionConstraint::In(uids) => Some(uids),
        };
        for (i, name) in ACTIONS.iter().enumerate() {
            let matches = listed.as_ref().is_none_or(|uids| uids.iter().any(|u| u.id().unescaped() == *name));
            if let Some(slot) = actions.get_mut(i) {
                *slot = matches;
            }
        }
        scoped.push((route, actions, policy));
    }
    let build = |route: Option<&str>| -> Result<Vec<PolicySet>, PolicyError> {
        let mut sets = Vec::with_capacity(ACTIONS.len());
        for i in 0..ACTIONS.len() {
            let mut set = PolicySet::new();
            for (r, actions, policy) in &scoped {
                let route_ok = r.as_deref().is_none_or(|r| Some(r) == route);
                if route_ok && actions.get(i).copied().unwrap_or(true) {
                    set.add((*policy).clone()).map_err(internal)?;
                }
            }
            sets.push(set);
        }
        Ok(sets)
    };
    let mut by_route = HashMap::new();
    for route in scoped.iter().filter_map(|(r, _, _)| r.as_deref()) {
        if !by_route.contains_key(route) {
            by_route.insert(route.to_owned(), build(Some(route))?);
        }
    }
    Ok((by_route, build(None)?))
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

/// The context attributes some policy reads. An attribute no policy mentions is left out of the request:
/// building `client_ip` (an extension value) and the claim sets dominates the cost of a decision, and
/// leaving out an attribute that is read after all can only make evaluation fail, which denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Needs {
    path: bool,
    method: bool,
    authenticated: bool,
    scopes: bool,
    roles: bool,
    client_id: bool,
    issuer: bool,
    client_ip: bool,
    mtls_identity: bool,
    time: bool,
    claims: bool,
    claims_str: bool,
}

impl Needs {
    pub(crate) const ALL: Needs = Needs {
        path: true,
        method: true,
        authenticated: true,
        scopes: true,
        roles: true,
        client_id: true,
        issuer: true,
        client_ip: true,
        mtls_identity: true,
        time: true,
        claims: true,
        claims_str: true,
    };
    const NONE: Needs = Needs {
        path: false,
        method: false,
        authenticated: false,
        scopes: false,
        roles: false,
        client_id: false,
        issuer: false,
        client_ip: false,
        mtls_identity: false,
        time: false,
        claims: false,
        claims_str: false,
    };

    /// What the policies of `set` read from `context`, from their JSON (EST) form: `context.<attr>`,
    /// `context has <attr>`, `context["<attr>"]`; any other use of `context` as a whole needs everything.
    pub(crate) fn of(set: &PolicySet) -> Needs {
        let mut needs = Needs::NONE;
        for policy in set.policies() {
            match policy.to_json() {
                Ok(est) => {
                    if !needs.visit(&est) {
                        return Needs::ALL;
                    }
                }
                Err(_) => return Needs::ALL,
            }
        }
        needs
    }

    /// Records the context attributes read in `v`; false if `context` is used whole (or unrecognised).
    fn visit(&mut self, v: &Value) -> bool {
        match v {
            Value::Object(map) => {
                for (key, inner) in map {
                    if key == "Var" && inner.as_str() == Some("context") {
                        return false;
                    }
                    if key == "." || key == "has" {
                        let left = inner.get("left");
                        let is_context = left.and_then(|l| l.get("Var")).and_then(Value::as_str) == Some("context");
                        if is_context {
                            match inner.get("attr").and_then(Value::as_str) {
                                Some(attr) if self.set(attr) => continue,
                                Some(_) => continue, // not a context attribute: validation rejected it already
                                None => return false,
                            }
                        }
                    }
                    if !self.visit(inner) {
                        return false;
                    }
                }
                true
            }
            Value::Array(items) => items.iter().all(|i| self.visit(i)),
            _ => true,
        }
    }

    fn set(&mut self, attr: &str) -> bool {
        let slot = match attr {
            "path" => &mut self.path,
            "method" => &mut self.method,
            "authenticated" => &mut self.authenticated,
            "scopes" => &mut self.scopes,
            "roles" => &mut self.roles,
            "client_id" => &mut self.client_id,
            "issuer" => &mut self.issuer,
            "client_ip" => &mut self.client_ip,
            "mtls_identity" => &mut self.mtls_identity,
            "time" => &mut self.time,
            "claims" => &mut self.claims,
            "claims_str" => &mut self.claims_str,
            _ => return false,
        };
        *slot = true;
        true
    }
}

fn build_context(req: &AuthzRequest<'_>, needs: &Needs) -> Result<Context, String> {
    let mut pairs: Vec<(String, RestrictedExpression)> = Vec::with_capacity(12);
    let s = |v: Option<&str>| RestrictedExpression::new_string(v.unwrap_or_default().to_owned());
    if needs.path {
        pairs.push(("path".to_owned(), RestrictedExpression::new_string(req.path.to_owned())));
    }
    if needs.method {
        pairs.push(("method".to_owned(), RestrictedExpression::new_string(req.method.to_owned())));
    }
    if needs.authenticated {
        pairs.push(("authenticated".to_owned(), RestrictedExpression::new_bool(req.authenticated)));
    }
    if needs.scopes {
        pairs.push(("scopes".to_owned(), string_set(req.scopes)));
    }
    if needs.roles {
        pairs.push(("roles".to_owned(), string_set(req.roles)));
    }
    if needs.client_id {
        pairs.push(("client_id".to_owned(), s(req.client_id)));
    }
    if needs.issuer {
        pairs.push(("issuer".to_owned(), s(req.issuer)));
    }
    if needs.client_ip {
        pairs.push(("client_ip".to_owned(), RestrictedExpression::new_ip(req.client_ip.to_string())));
    }
    if needs.mtls_identity {
        pairs.push(("mtls_identity".to_owned(), s(req.mtls_identity)));
    }
    if needs.time {
        let time = i64::try_from(req.now).map_err(|_| "time does not fit a Cedar Long".to_owned())?;
        pairs.push(("time".to_owned(), RestrictedExpression::new_long(time)));
    }
    if needs.claims {
        let claims = match req.claims {
            Some(claims) => standard_claims(claims)?,
            None => RestrictedExpression::new_record(Vec::new()).map_err(|e| e.to_string())?,
        };
        pairs.push(("claims".to_owned(), claims));
    }
    if needs.claims_str {
        let entries = match req.claims {
            Some(claims) => flatten_claims(claims)?,
            None => Vec::new(),
        };
        pairs.push((
            "claims_str".to_owned(),
            RestrictedExpression::new_set(entries.into_iter().map(RestrictedExpression::new_string)),
        ));
    } else if let Some(claims) = req.claims {
        // Claims over the limits deny whether or not a policy reads them, so the limit does not depend
        // on which policies are loaded.
        check_claim_limits(claims)?;
    }
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
    let mut flat = Flat { entries: Some(Vec::new()), count: 0 };
    let mut path = String::new();
    flatten_object(claims, &mut path, 1, &mut flat)?;
    Ok(flat.entries.unwrap_or_default())
}

/// The limits of [`flatten_claims`] without building the entries.
fn check_claim_limits(claims: &Map<String, Value>) -> Result<(), String> {
    let mut flat = Flat { entries: None, count: 0 };
    flatten_object(claims, &mut String::new(), 1, &mut flat)
}

/// Where flattening goes: the entries (when wanted) and how many scalars were seen.
struct Flat {
    entries: Option<Vec<String>>,
    count: usize,
}

fn flatten_object(obj: &Map<String, Value>, path: &mut String, depth: usize, out: &mut Flat) -> Result<(), String> {
    if depth > MAX_CLAIM_DEPTH {
        return Err(format!("claims nested deeper than {MAX_CLAIM_DEPTH} levels"));
    }
    for (key, value) in obj {
        if key.as_bytes().contains(&b'=') {
            continue;
        }
        let len = path.len();
        if out.entries.is_some() {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
        }
        flatten_value(value, path, depth, out)?;
        path.truncate(len);
    }
    Ok(())
}

fn flatten_value(value: &Value, path: &mut String, depth: usize, out: &mut Flat) -> Result<(), String> {
    match value {
        Value::Null => Ok(()),
        Value::Object(obj) => flatten_object(obj, path, depth.saturating_add(1), out),
        Value::Array(items) => {
            if depth >= MAX_CLAIM_DEPTH {
                return Err(format!("claims nested deeper than {MAX_CLAIM_DEPTH} levels"));
            }
            let len = path.len();
            if out.entries.is_some() {
                path.push_str("[]");
            }
            for item in items {
                flatten_value(item, path, depth.saturating_add(1), out)?;
            }
            path.truncate(len);
            Ok(())
        }
        scalar => {
            if out.count >= MAX_CLAIM_ENTRIES {
                return Err(format!("claims have more than {MAX_CLAIM_ENTRIES} values"));
            }
            out.count += 1;
            // Only made when the entries are wanted: counting alone must not format every value.
            if let Some(entries) = &mut out.entries {
                if let Some(text) = scalar_text(scalar) {
                    entries.push(format!("{path}={text}"));
                }
            }
            Ok(())
        }
    }
}
