//! Compiles the security sections of the config into the shared objects the security filters
//! use (JWT authenticator with its JWKS cache, API keys, DPoP replay cache, the Cedar
//! authorizer, rate-limit stores) and builds each route's filters in execution order:
//! CORS → WAF → authn → authz → rate limit → validation → transform → header rewrites → security headers.
//! Objects with state worth keeping (JWKS caches, replay cache, rate-limit counters, the Redis
//! connection) carry over a reload when their config did not change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::OnceCell;

use palisade_authn::{ApiKeyEntry, ApiKeyStore, DpopVerifier, IssuerSettings, JwtAuthenticator};
use palisade_core::config::{JwtIssuer, RateLimiting, RateStore, Route, Validate};
use palisade_core::SvidSource;
use palisade_core::{Issue, LoadedConfig};
use palisade_policy::mesh::MeshPolicy;
use palisade_policy::{Authorizer, PolicySource, Requirement, RouteRules};
use palisade_ratelimit::{LocalStore, Quota, RedisOptions, RedisStore, Store, StoreError, Verdict};
use tokio_util::sync::CancellationToken;

use crate::filter::authn::{ApiKeySource, AuthnFilter};
use crate::filter::authz::AuthzFilter;
use crate::filter::cors::{Cors, CorsFilter, CorsSpec};
use crate::filter::ratelimit::{KeyPart, Limit, RateLimitFilter};
use crate::filter::secheaders::{SecHeadersFilter, SecHeadersSpec, SecurityHeaders};
use crate::filter::transform::{
    HttpVault, Pointer, RequestRule, ResponseRule, TransformFilter, VaultClient, VaultRule,
};
use crate::filter::validate::{load_document, ValidateFilter, Validator, ValidatorSpec};
use crate::filter::waf::WafFilter;
use crate::filter::Filter;
use palisade_core::config::{RouteWaf, WafConfig, WafMode};
use palisade_waf::{PresetVar, RuleSet};

/// The JWT authenticator and its JWKS refresh task, stopped when the last runtime using it goes.
pub(crate) struct Jwt {
    pub(crate) auth: Arc<JwtAuthenticator>,
    config: Vec<JwtIssuer>,
    started: AtomicBool,
    stop: CancellationToken,
}

impl Drop for Jwt {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(crate) struct Security {
    jwt: Option<Arc<Jwt>>,
    api_keys: Option<Arc<ApiKeySource>>,
    dpop: Arc<DpopVerifier>,
    dpop_config: palisade_core::config::DpopConfig,
    authorizer: Option<Arc<Authorizer>>,
    local: Arc<LocalStore>,
    redis: Option<(RateLimiting, Arc<dyn Store>)>,
    waf: Option<Arc<RuleSet>>,
    /// The vault client of the transform filters, kept across reloads while `vault` is unchanged.
    vault: Option<(palisade_core::config::VaultClientConfig, Arc<dyn VaultClient>)>,
}

impl Security {
    /// Start background work (JWKS refresh) on the calling runtime, once.
    pub(crate) fn activate(&self) {
        if let Some(j) = &self.jwt {
            if !j.started.swap(true, Ordering::SeqCst) {
                let auth = j.auth.clone();
                let stop = j.stop.clone();
                tokio::spawn(async move { auth.refresh_loop(stop.cancelled_owned()).await });
            }
        }
    }

    pub(crate) fn compile(
        loaded: &LoadedConfig,
        previous: Option<&Security>,
        mesh: Option<&Arc<dyn SvidSource>>,
        issues: &mut Vec<Issue>,
    ) -> Security {
        let c = &loaded.config;
        let jwt = compile_jwt(loaded, previous, issues);
        let api_keys = c.authentication.api_keys.as_ref().and_then(|k| {
            let entries = k
                .keys
                .iter()
                .map(|e| ApiKeyEntry { client: e.client.clone(), hash: e.hash.clone(), scopes: e.scopes.clone() })
                .collect();
            let header = http::HeaderName::from_bytes(k.header.as_bytes()).ok()?;
            match ApiKeyStore::new(entries) {
                Ok(store) => Some(Arc::new(ApiKeySource { store, header, query: k.query.clone() })),
                Err(e) => {
                    issues.push(Issue::new("authentication.api_keys", e.to_string()));
                    None
                }
            }
        });
        let dpop_config = c.authentication.dpop.clone();
        let dpop = match previous {
            Some(p) if p.dpop_config == dpop_config => p.dpop.clone(),
            _ => Arc::new(DpopVerifier::new(dpop_config.iat_window.0, dpop_config.replay_ttl.0, 100_000)),
        };
        let authorizer = compile_authorizer(loaded, mesh, issues);
        let waf = compile_waf(loaded, issues);
        let local = previous.map_or_else(|| Arc::new(LocalStore::new(1_000_000)), |p| p.local.clone());
        let redis = c.rate_limiting.redis.as_ref().and_then(|r| {
            if let Some((cfg, store)) = previous.and_then(|p| p.redis.as_ref()) {
                if *cfg == c.rate_limiting {
                    return Some((cfg.clone(), store.clone()));
                }
            }
            let password = match &r.password {
                Some(p) => match p.resolve(&loaded.base_dir) {
                    Ok(s) => Some(String::from_utf8_lossy(s.expose()).trim().to_owned()),
                    Err(m) => {
                        issues.push(Issue::new("rate_limiting.redis.password", m));
                        return None;
                    }
                },
                None => None,
            };
            let url = match (password, r.url.split_once("://")) {
                (Some(p), Some((scheme, rest))) => {
                    let p: String = form_urlencoded::byte_serialize(p.as_bytes()).collect();
                    format!("{scheme}://:{p}@{rest}")
                }
                _ => r.url.clone(),
            };
            let opts = RedisOptions {
                timeout: r.timeout.0,
                connect_timeout: Duration::from_millis(500),
                ..RedisOptions::default()
            };
            let store = LazyRedis { url, opts, conn: OnceCell::new(), last_try: Mutex::new(None) };
            Some((c.rate_limiting.clone(), Arc::new(store) as Arc<dyn Store>))
        });
        let vault = compile_vault(loaded, previous, issues);
        Security { jwt, api_keys, dpop, dpop_config, authorizer, local, redis, waf, vault }
    }

    /// The security filters of route `i`, in execution order (before the header rewrites).
    pub(crate) fn route_filters(
        &self,
        loaded: &LoadedConfig,
        i: usize,
        r: &Route,
        issues: &mut Vec<Issue>,
    ) -> Vec<Arc<dyn Filter>> {
        let mut out: Vec<Arc<dyn Filter>> = Vec::new();
        let base = format!("routes[{i}]");
        if let Some(cc) = &r.cors {
            let spec = CorsSpec {
                allow_origins: cc.allow_origins.clone(),
                allow_methods: cc.allow_methods.clone(),
                allow_headers: cc.allow_headers.clone(),
                expose_headers: cc.expose_headers.clone(),
                allow_credentials: cc.allow_credentials,
                max_age: cc.max_age.map(|d| d.0.as_secs()),
            };
            match Cors::new(spec) {
                Ok(f) => out.push(Arc::new(CorsFilter(f))),
                Err(m) => issues.push(Issue::new(format!("{base}.cors"), m)),
            }
        }
        // The WAF runs before authentication: an attack is refused before it costs a token check.
        if let (Some(w), Some(rules), Some(wc)) = (&r.waf, &self.waf, &loaded.config.waf) {
            if w.mode != WafMode::Off {
                out.push(Arc::new(waf_filter(rules, wc, w)));
            }
        }
        if let Some(a) = &r.authn {
            out.push(Arc::new(AuthnFilter {
                methods: a.methods.clone(),
                jwt: self.jwt.as_ref().map(|j| j.auth.clone()),
                api_keys: self.api_keys.clone(),
                dpop: self.dpop.clone(),
                query_token: a.query_token,
                require_dpop: a.require_dpop,
                allow_anonymous: r.authz.as_ref().is_some_and(|z| z.allow_anonymous),
            }));
        }
        if r.authz.is_some() {
            if let Some(az) = &self.authorizer {
                out.push(Arc::new(AuthzFilter { authorizer: az.clone() }));
            }
        }
        if !r.rate_limit.is_empty() {
            let mut limits = Vec::new();
            for (j, rl) in r.rate_limit.iter().enumerate() {
                let quota = match Quota::new(rl.limit, rl.period.0, rl.burst) {
                    Ok(q) => q,
                    Err(e) => {
                        issues.push(Issue::new(format!("{base}.rate_limit[{j}]"), e.to_string()));
                        continue;
                    }
                };
                let (store, on_error): (Arc<dyn Store>, _) = match (rl.store, &self.redis) {
                    (RateStore::Redis, Some((cfg, s))) => {
                        (s.clone(), cfg.redis.as_ref().map(|r| r.on_error).unwrap_or_default())
                    }
                    (RateStore::Redis, None) => continue,
                    (RateStore::Local, _) => (self.local.clone(), Default::default()),
                };
                let key = rl.key.iter().filter_map(|k| KeyPart::parse(k)).collect();
                let headers = palisade_ratelimit::PolicyHeaders::new(&quota, &rl.name);
                limits.push(Limit { name: rl.name.clone(), quota, headers, key, store, on_error });
            }
            out.push(Arc::new(RateLimitFilter { route: r.name.clone(), limits }));
        }
        if let Some(v) = &r.validate {
            match compile_validator(loaded, v) {
                Ok(validator) => out.push(Arc::new(ValidateFilter { validator, max_body_bytes: v.max_body_bytes })),
                Err((field, m)) => issues.push(Issue::new(format!("{base}.validate{field}"), m)),
            }
        }
        // After validation (which sees the client's body), before the header rewrites.
        if let Some(t) = &r.transform {
            match transform_filter(t, self.vault.as_ref().map(|(_, v)| v.clone())) {
                Ok(f) => out.push(Arc::new(f)),
                Err((field, m)) => issues.push(Issue::new(format!("{base}.transform{field}"), m)),
            }
        }
        let (sh, sh_path) = match &r.security_headers {
            Some(sh) => (sh, format!("{base}.security_headers")),
            None => (&loaded.config.security_headers, "security_headers".to_owned()),
        };
        if sh.enabled {
            let spec = SecHeadersSpec {
                hsts: sh.hsts.clone(),
                content_type_options: sh.content_type_options,
                frame_options: sh.frame_options.clone(),
                referrer_policy: sh.referrer_policy.clone(),
                csp: sh.csp.clone(),
                override_upstream: sh.override_upstream,
            };
            match SecurityHeaders::new(spec) {
                Ok(f) => out.push(Arc::new(SecHeadersFilter(f))),
                Err(m) => issues.push(Issue::new(sh_path, m)),
            }
        }
        out
    }
}

/// What a ModSecurity deployment puts in its `modsecurity.conf` (the recommended file of
/// ModSecurity and Coraza): the engine on, bodies inspected, the JSON and XML body processors
/// chosen by Content-Type, and a body that cannot be parsed refused (400) rather than let through
/// uninspected. Loaded before the rule files, as modsecurity.conf is; `waf.directives` comes
/// after the files and may change it (e.g. `SecRuleRemoveById 200003`).
const WAF_PRELUDE: &str = r#"SecRuleEngine On
SecRequestBodyAccess On
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "^application/[a-z0-9.-]+[+]json" "id:200006,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.',severity:2"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:200003,phase:2,t:none,log,deny,status:400,msg:'Multipart request body failed strict validation.'"
"#;

/// Load the rule set once per config: every route with a `waf` section shares it. Reading the
/// files again on each reload picks up edited rules; a bad file fails the reload (old rules stay).
fn compile_waf(loaded: &LoadedConfig, issues: &mut Vec<Issue>) -> Option<Arc<RuleSet>> {
    let w = loaded.config.waf.as_ref()?;
    let mut files = Vec::new();
    for (i, pattern) in w.rules.iter().enumerate() {
        let full = loaded.resolve_path(std::path::Path::new(pattern));
        if !pattern.contains(['*', '?', '[']) {
            files.push(full);
            continue;
        }
        let mut found: Vec<std::path::PathBuf> = match glob::glob(&full.to_string_lossy()) {
            Ok(paths) => paths.filter_map(Result::ok).collect(),
            Err(e) => {
                issues.push(Issue::new(format!("waf.rules[{i}]"), format!("bad pattern: {e}")));
                return None;
            }
        };
        if found.is_empty() {
            issues.push(Issue::new(format!("waf.rules[{i}]"), format!("no file matches {}", full.display())));
            return None;
        }
        found.sort();
        files.append(&mut found);
    }
    match RuleSet::load_with_prelude(WAF_PRELUDE, &files, &w.directives) {
        Ok(mut rules) => {
            rules.set_verdict_memo(w.verdict_memo);
            Some(Arc::new(rules))
        }
        Err(e) => {
            // An error in `directives` is located there (its line counts from the block's start).
            let field = if e.file.as_os_str() == "<inline>" { "waf.directives" } else { "waf.rules" };
            issues.push(Issue::new(field, e.to_string()));
            None
        }
    }
}

fn waf_filter(rules: &Arc<RuleSet>, wc: &WafConfig, w: &RouteWaf) -> WafFilter {
    let pl = w.paranoia_level.unwrap_or(wc.paranoia_level).to_string();
    let mut f = WafFilter {
        rules: rules.clone(),
        mode: w.mode,
        vars: vec![
            PresetVar::tx("blocking_paranoia_level", &pl),
            PresetVar::tx("detection_paranoia_level", &pl),
            PresetVar::tx("inbound_anomaly_score_threshold", &wc.inbound_threshold.to_string()),
            PresetVar::tx("outbound_anomaly_score_threshold", &wc.outbound_threshold.to_string()),
        ],
        removed_ids: vec![],
        removed_tags: vec![],
        removed_targets: vec![],
        removed_tag_targets: vec![],
        max_body_bytes: wc.max_body_bytes,
    };
    for x in &w.exclusions {
        match (&x.rule, &x.tag, &x.target) {
            (Some(ids), _, None) => f.removed_ids.push(ids.0..=ids.1),
            (Some(ids), _, Some(t)) => f.removed_targets.push((ids.0..=ids.1, t.clone())),
            (None, Some(tag), None) => f.removed_tags.push(tag.clone()),
            (None, Some(tag), Some(t)) => f.removed_tag_targets.push((tag.clone(), t.clone())),
            (None, None, _) => {} // refused by config validation
        }
    }
    f
}

/// The Redis store, connected on first use so the gateway starts (and fails closed or open, as
/// configured) while Redis is down; a failed connection is retried at most once a second.
struct LazyRedis {
    url: String,
    opts: RedisOptions,
    conn: OnceCell<RedisStore>,
    last_try: Mutex<Option<Instant>>,
}

#[async_trait::async_trait]
impl Store for LazyRedis {
    async fn check(&self, key: &str, quota: &Quota, now: SystemTime) -> Result<Verdict, StoreError> {
        if let Some(c) = self.conn.get() {
            return c.check(key, quota, now).await;
        }
        {
            let mut last = self.last_try.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return Err(StoreError::Unavailable("not connected to Redis".into()));
            }
            *last = Some(Instant::now());
        }
        let c = self.conn.get_or_try_init(|| RedisStore::connect(&self.url, self.opts.clone())).await?;
        c.check(key, quota, now).await
    }
}

fn compile_vault(
    loaded: &LoadedConfig,
    previous: Option<&Security>,
    issues: &mut Vec<Issue>,
) -> Option<(palisade_core::config::VaultClientConfig, Arc<dyn VaultClient>)> {
    let v = loaded.config.vault.as_ref()?;
    if let Some((cfg, client)) = previous.and_then(|p| p.vault.as_ref()) {
        if cfg == v {
            return Some((cfg.clone(), client.clone()));
        }
    }
    let token = match v.token.resolve(&loaded.base_dir) {
        Ok(t) => t,
        Err(m) => {
            issues.push(Issue::new("vault.token", m));
            return None;
        }
    };
    let ca = match &v.ca_file {
        Some(f) => match std::fs::read(loaded.resolve_path(f)) {
            Ok(pem) => Some(pem),
            Err(e) => {
                issues.push(Issue::new("vault.ca_file", format!("cannot read: {e}")));
                return None;
            }
        },
        None => None,
    };
    match HttpVault::new(&v.server, token.expose(), ca.as_deref(), v.timeout.0) {
        Ok(c) => Some((v.clone(), Arc::new(c) as Arc<dyn VaultClient>)),
        Err(m) => {
            issues.push(Issue::new("vault", m));
            None
        }
    }
}

fn transform_filter(
    t: &palisade_core::config::Transform,
    vault: Option<Arc<dyn VaultClient>>,
) -> Result<TransformFilter, (String, String)> {
    use palisade_core::config::{EncryptRule, TokenizeRule};
    fn rule(tk: &Option<TokenizeRule>, enc: &Option<EncryptRule>) -> Option<VaultRule> {
        match (tk, enc) {
            (Some(t), None) => Some(VaultRule::Token { key: t.key.clone(), format: t.format.clone() }),
            (None, Some(e)) => Some(VaultRule::Cipher { key: e.key.clone(), context: e.context.clone() }),
            _ => None, // refused by config validation
        }
    }
    let mut request = Vec::new();
    for (j, q) in t.request.iter().enumerate() {
        let pointer = Pointer::parse(&q.pointer).map_err(|m| (format!(".request[{j}].pointer"), m))?;
        if let Some(rule) = rule(&q.tokenize, &q.encrypt) {
            request.push(RequestRule { pointer, rule });
        }
    }
    let mut response = Vec::new();
    for (j, q) in t.response.iter().enumerate() {
        let pointer = Pointer::parse(&q.pointer).map_err(|m| (format!(".response[{j}].pointer"), m))?;
        if let Some(rule) = rule(&q.detokenize, &q.decrypt) {
            response.push(ResponseRule {
                pointer,
                rule,
                roles: q.reveal.roles.clone(),
                scopes: q.reveal.scopes.clone(),
            });
        }
    }
    Ok(TransformFilter { request, response, vault, max_body_bytes: t.max_body_bytes })
}

fn compile_validator(loaded: &LoadedConfig, v: &Validate) -> Result<Validator, (&'static str, String)> {
    let load =
        |field: &'static str, p: &std::path::Path| load_document(&loaded.resolve_path(p)).map_err(|m| (field, m));
    let spec = ValidatorSpec {
        content_types: v.content_types.clone(),
        max_json_depth: v.max_json_depth,
        json_schema: v.json_schema.as_deref().map(|p| load(".json_schema", p)).transpose()?,
        query_schema: v.query_schema.as_deref().map(|p| load(".query_schema", p)).transpose()?,
        openapi: match &v.openapi {
            Some(o) => Some((load(".openapi.file", &o.file)?, o.operation.clone())),
            None => None,
        },
    };
    Validator::new(spec).map_err(|m| ("", m))
}

fn compile_jwt(loaded: &LoadedConfig, previous: Option<&Security>, issues: &mut Vec<Issue>) -> Option<Arc<Jwt>> {
    let cfg = &loaded.config.authentication.jwt_issuers;
    if cfg.is_empty() {
        return None;
    }
    if let Some(j) = previous.and_then(|p| p.jwt.as_ref()) {
        if j.config == *cfg {
            return Some(j.clone());
        }
    }
    let mut settings = Vec::new();
    for (i, iss) in cfg.iter().enumerate() {
        let mut s = IssuerSettings::new(iss.issuer.clone());
        s.jwks_uri = iss.jwks_uri.clone();
        s.audiences = iss.audiences.clone();
        s.algorithms = iss.algorithms.clone();
        s.typ = iss.typ.clone();
        s.leeway = iss.leeway.0;
        s.refresh_interval = iss.refresh_interval.0;
        s.min_refresh_interval = iss.min_refresh_interval.0;
        s.max_token_bytes = iss.max_token_bytes;
        if let Some(ca) = &iss.ca {
            match std::fs::read(loaded.resolve_path(ca)) {
                Ok(pem) => s.ca_pem = Some(pem),
                Err(e) => {
                    issues.push(Issue::new(format!("authentication.jwt_issuers[{i}].ca"), format!("cannot read: {e}")));
                    continue;
                }
            }
        }
        settings.push(s);
    }
    match JwtAuthenticator::new(settings) {
        Ok(a) => Some(Arc::new(Jwt {
            auth: Arc::new(a),
            config: cfg.clone(),
            started: AtomicBool::new(false),
            stop: CancellationToken::new(),
        })),
        Err(e) => {
            issues.push(Issue::new("authentication.jwt_issuers", e.to_string()));
            None
        }
    }
}

/// The `authz` sections of the routes, as Cedar route shortcuts (also used by `palisade policy`).
pub fn route_rules(c: &palisade_core::config::Config) -> Vec<RouteRules> {
    let rules = c.routes.iter().filter_map(|r| {
        let z = r.authz.as_ref()?;
        let require = z
            .require
            .iter()
            .map(|q| Requirement {
                methods: q.methods.clone(),
                scopes: q.scopes.clone(),
                roles: q.roles.clone(),
                claims: q.claims.clone(),
            })
            .collect();
        Some(RouteRules { route: r.name.clone(), allow_anonymous: z.allow_anonymous, require })
    });
    rules.collect()
}

fn compile_authorizer(
    loaded: &LoadedConfig,
    mesh: Option<&Arc<dyn SvidSource>>,
    issues: &mut Vec<Issue>,
) -> Option<Arc<Authorizer>> {
    let c = &loaded.config;
    if !c.routes.iter().any(|r| r.authz.is_some()) {
        return None;
    }
    let mut files = Vec::new();
    for (i, p) in c.authorization.policies.iter().enumerate() {
        let path = loaded.resolve_path(p);
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push(PolicySource { name: path.display().to_string(), text }),
            Err(e) => issues.push(Issue::new(format!("authorization.policies[{i}]"), format!("cannot read: {e}"))),
        }
    }
    if let Some(p) = &c.authorization.mesh_policy {
        let path = loaded.resolve_path(p);
        let field = "authorization.mesh_policy";
        match (MeshPolicy::load(&path), mesh) {
            (Err(errs), _) => issues.extend(errs.into_iter().map(|e| Issue::new(field, e.to_string()))),
            (Ok(_), None) => issues.push(Issue::new(field, "needs the mesh SVID source (start with the mesh section)")),
            (Ok(policy), Some(src)) => {
                let local = src.current().spiffe_id.clone();
                let domain = c.mesh.as_ref().map_or("", |m| m.trust_domain.as_str());
                if policy.trust_domain() != domain {
                    issues.push(Issue::new(
                        field,
                        format!(
                            "the mesh policy's trust domain {:?} is not mesh.trust_domain {domain:?}",
                            policy.trust_domain()
                        ),
                    ));
                }
                files.push(policy.policy_source_for(&local));
            }
        }
    }
    let routes = route_rules(c);
    match Authorizer::compile(&files, &routes) {
        Ok(a) => Some(Arc::new(a)),
        Err(errs) => {
            for e in errs {
                let idx = c.authorization.policies.iter().position(|p| e.file.ends_with(&p.display().to_string()));
                let path = idx.map_or_else(|| "authorization".to_owned(), |i| format!("authorization.policies[{i}]"));
                issues.push(Issue::new(path, e.to_string()));
            }
            None
        }
    }
}
