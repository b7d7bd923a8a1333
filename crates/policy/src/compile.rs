//! Compilation: policy files and route shortcuts become one validated Cedar `PolicySet`.
//!
//! Invariants: compilation is all-or-nothing (any error returns no `Authorizer`); every policy id is unique;
//! ids starting with `route:` belong to generated shortcut policies only; every policy passed strict
//! validation against [`crate::SCHEMA`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::str::FromStr;

use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use serde_json::Value;

use crate::schema::{ACTIONS, HTTP_ACTIONS, SCHEMA};
use crate::Authorizer;

/// One Cedar policy file: `name` is its path or file name (used in errors and ids), `text` its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// File name or path, e.g. `policies/orders.cedar`. Its stem prefixes the ids of its policies.
    pub name: String,
    /// The Cedar policy text.
    pub text: String,
}

/// The YAML route shortcuts of one route, compiled into `permit` policies on `Route::"<route>"`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteRules {
    /// Route name (the `Route` entity id).
    pub route: String,
    /// Permit every principal, authenticated or not, for every HTTP method.
    pub allow_anonymous: bool,
    /// Each requirement is one `permit`: an authenticated principal satisfying all of its conditions.
    pub require: Vec<Requirement>,
}

/// One alternative way to be allowed on a route (requirements of a route are OR-ed, conditions AND-ed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requirement {
    /// HTTP methods (upper case) this requirement applies to; empty means every HTTP method.
    pub methods: Vec<String>,
    /// Scopes the token must all carry.
    pub scopes: Vec<String>,
    /// Roles the principal must all have.
    pub roles: Vec<String>,
    /// Claim path (as in `claims_str`, e.g. `tenant` or `org.id`) to required value. A scalar must equal
    /// the claim (compared as text); an array requires the claim (a string or an array) to contain every
    /// element.
    pub claims: BTreeMap<String, Value>,
}

/// A compile error located in a policy file (or in a route's shortcuts, `file` = `route:<name>`, line 0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct PolicyError {
    /// Policy file name as given in [`PolicySource::name`], or `route:<name>` for shortcut rules.
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column in characters, 0 when unknown.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Where a policy came from, to map validator spans back to a file.
struct Origin<'a> {
    file: &'a str,
    /// The text the policy's source spans index into (the whole file, or the generated policy).
    text: &'a str,
}

/// Parses and validates `files` alone (no route shortcuts): every problem found, empty when all is valid.
pub fn check_files(files: &[PolicySource]) -> Vec<PolicyError> {
    match Authorizer::compile(files, &[]) {
        Ok(_) => Vec::new(),
        Err(errors) => errors,
    }
}

pub(crate) struct Compiled {
    pub(crate) policies: PolicySet,
    pub(crate) texts: HashMap<String, String>,
}

pub(crate) fn compile(files: &[PolicySource], routes: &[RouteRules]) -> Result<Compiled, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut set = PolicySet::new();
    let mut texts: HashMap<String, String> = HashMap::new();
    let mut generated: Vec<(String, String)> = Vec::new();
    let mut origins: HashMap<String, Origin<'_>> = HashMap::new();
    let mut stems: HashMap<String, &str> = HashMap::new();

    for file in files {
        let stem = file_stem(&file.name);
        if let Some(other) = stems.insert(stem.clone(), &file.name) {
            errors.push(PolicyError {
                file: file.name.clone(),
                line: 0,
                column: 0,
                message: format!("file stem `{stem}` is also used by `{other}`: policy ids would collide"),
            });
        }
        let parsed = match PolicySet::from_str(&file.text) {
            Ok(parsed) => parsed,
            Err(parse_errors) => {
                for e in parse_errors.iter() {
                    let (line, column) = first_label(e, &file.text);
                    errors.push(PolicyError { file: file.name.clone(), line, column, message: e.to_string() });
                }
                continue;
            }
        };
        if let Some(template) = parsed.templates().next() {
            let text = template.to_string();
            let offset = file.text.find(&text).unwrap_or(0);
            let slot = text.find("?principal").or_else(|| text.find("?resource")).unwrap_or(0);
            let (line, column) = line_col(&file.text, offset.saturating_add(slot));
            errors.push(PolicyError {
                file: file.name.clone(),
                line,
                column,
                message: "templates (`?principal` / `?resource` slots) are not supported".into(),
            });
        }
        // `policies()` iterates a map; order them by position in the file so `<stem>:<n>` is stable.
        let mut ordered: Vec<(usize, &cedar_policy::Policy)> = Vec::new();
        for policy in parsed.policies() {
            let n = policy.id().to_string().strip_prefix("policy").and_then(|n| n.parse::<usize>().ok());
            ordered.push((n.unwrap_or(usize::MAX), policy));
        }
        ordered.sort_by_key(|(n, _)| *n);
        for (index, (_, policy)) in ordered.into_iter().enumerate() {
            let text = policy.to_string();
            let id = match policy.annotation("id") {
                Some(id) => id.to_owned(),
                None => format!("{stem}:{index}"),
            };
            let at = || {
                let offset = file.text.find(&text).unwrap_or(0);
                line_col(&file.text, offset)
            };
            if id.is_empty() || id.starts_with("route:") {
                let (line, column) = at();
                errors.push(PolicyError {
                    file: file.name.clone(),
                    line,
                    column,
                    message: format!("policy id `{id}` is not allowed (empty, or reserved `route:` prefix)"),
                });
                continue;
            }
            if texts.contains_key(&id) {
                let (line, column) = at();
                errors.push(PolicyError {
                    file: file.name.clone(),
                    line,
                    column,
                    message: format!("duplicate policy id `{id}`"),
                });
                continue;
            }
            if let Err(e) = set.add(policy.new_id(PolicyId::new(&id))) {
                let (line, column) = at();
                errors.push(PolicyError { file: file.name.clone(), line, column, message: e.to_string() });
                continue;
            }
            origins.insert(id.clone(), Origin { file: &file.name, text: &file.text });
            texts.insert(id, text);
        }
    }

    for rules in routes {
        match route_policies(rules) {
            Ok(policies) => generated.extend(policies),
            Err(message) => {
                errors.push(PolicyError { file: format!("route:{}", rules.route), line: 0, column: 0, message })
            }
        }
    }
    for (id, text) in &generated {
        let file = id.rsplit_once(':').map_or(id.as_str(), |(file, _)| file);
        if texts.contains_key(id) {
            errors.push(PolicyError {
                file: file.to_owned(),
                line: 0,
                column: 0,
                message: format!("duplicate policy id `{id}` (route listed twice?)"),
            });
            continue;
        }
        let added = cedar_policy::Policy::parse(Some(PolicyId::new(id)), text)
            .map_err(|e| e.to_string())
            .and_then(|p| set.add(p).map_err(|e| e.to_string()));
        if let Err(message) = added {
            errors.push(PolicyError { file: file.to_owned(), line: 0, column: 0, message });
            continue;
        }
        origins.insert(id.clone(), Origin { file, text });
        texts.insert(id.clone(), text.clone());
    }

    if errors.is_empty() {
        let schema = match Schema::from_cedarschema_str(SCHEMA) {
            Ok((schema, _warnings)) => schema,
            Err(e) => {
                return Err(vec![PolicyError {
                    file: "<schema>".into(),
                    line: 0,
                    column: 0,
                    message: format!("built-in schema is invalid: {e}"),
                }])
            }
        };
        let result = Validator::new(schema).validate(&set, ValidationMode::Strict);
        let mut seen = std::collections::HashSet::new();
        for e in result.validation_errors() {
            let id = AsRef::<str>::as_ref(e.policy_id()).to_owned();
            let (file, line, column) = match origins.get(&id) {
                Some(origin) => {
                    let (line, column) = first_label(e, origin.text);
                    (origin.file.to_owned(), line, column)
                }
                None => (id.clone(), 0, 0),
            };
            // The validator reports one error per action the policy may apply to; one per place is enough.
            let message = without_action(&e.to_string());
            if seen.insert((id.clone(), line, column, message.clone())) {
                errors.push(PolicyError { file, line, column, message: format!("policy `{id}`: {message}") });
            }
        }
    }
    if errors.is_empty() {
        Ok(Compiled { policies: set, texts })
    } else {
        Err(errors)
    }
}

/// Drops the ` for Action::"X"` the validator adds to per-action messages, so they can be deduplicated.
fn without_action(message: &str) -> String {
    const MARK: &str = " for Action::\"";
    let Some(start) = message.find(MARK) else {
        return message.to_owned();
    };
    let rest = message.get(start.saturating_add(MARK.len())..).unwrap_or_default();
    match rest.find('"') {
        Some(end) => {
            let tail = rest.get(end.saturating_add(1)..).unwrap_or_default();
            format!("{}{tail}", message.get(..start).unwrap_or_default())
        }
        None => message.to_owned(),
    }
}

/// `policies/orders.cedar` → `orders`.
fn file_stem(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let stem = base.rsplit_once('.').map_or(base, |(stem, _)| stem);
    if stem.is_empty() {
        base.to_owned()
    } else {
        stem.to_owned()
    }
}

fn first_label(diag: &dyn Diagnostic, text: &str) -> (usize, usize) {
    diag.labels().and_then(|mut labels| labels.next()).map_or((0, 0), |label| line_col(text, label.offset()))
}

/// 1-based line and column (in characters) of byte `offset` in `text`; (0, 0) if out of range.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let Some(before) = text.get(..offset) else {
        return (0, 0);
    };
    let line = before.matches('\n').count().saturating_add(1);
    let line_start = before.rfind('\n').map_or(0, |i| i.saturating_add(1));
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()).saturating_add(1);
    (line, column)
}

/// A Cedar string literal for `s` (quotes, backslashes and control/non-ASCII characters escaped).
pub(crate) fn cedar_string(s: &str) -> String {
    quoted(s, |out, c| {
        let _ = write!(out, "\\u{{{c:x}}}");
    })
}

/// `s` in double quotes with `"` and `\` backslash-escaped, printable ASCII kept, and every other
/// character written by `escape` (each target language has its own code-point escape).
pub(crate) fn quoted(s: &str, escape: impl Fn(&mut String, u32)) -> String {
    let mut out = String::with_capacity(s.len().saturating_add(2));
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => escape(&mut out, u32::from(c)),
        }
    }
    out.push('"');
    out
}

fn cedar_string_set<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.into_iter().map(cedar_string).collect();
    format!("[{}]", items.join(", "))
}

fn action_list<'a>(methods: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = methods.into_iter().map(|m| format!("Action::{}", cedar_string(m))).collect();
    format!("[{}]", items.join(", "))
}

/// The `(id, text)` of the permit policies for one route's shortcuts.
fn route_policies(rules: &RouteRules) -> Result<Vec<(String, String)>, String> {
    let route = &rules.route;
    if route.is_empty() {
        return Err("route name is empty".into());
    }
    let resource = format!("Route::{}", cedar_string(route));
    let mut out = Vec::new();
    if rules.allow_anonymous {
        let id = format!("route:{route}:allow_anonymous");
        let text = format!(
            "@id({})\npermit (\n  principal,\n  action in {},\n  resource == {resource}\n);",
            cedar_string(&id),
            action_list(HTTP_ACTIONS)
        );
        out.push((id, text));
    }
    for (i, req) in rules.require.iter().enumerate() {
        let id = format!("route:{route}:require[{i}]");
        let mut methods: Vec<&str> = Vec::new();
        for m in &req.methods {
            match ACTIONS.iter().find(|a| *a == m) {
                Some(a) => {
                    if !methods.contains(a) {
                        methods.push(a);
                    }
                }
                None => {
                    return Err(format!("require[{i}]: unknown method `{m}` (expected one of {})", ACTIONS.join(", ")))
                }
            }
        }
        if methods.is_empty() {
            methods.extend(HTTP_ACTIONS);
        }
        let mut conditions = vec!["context.authenticated".to_owned(), "!(principal is Anonymous)".to_owned()];
        if !req.scopes.is_empty() {
            conditions.push(format!(
                "context.scopes.containsAll({})",
                cedar_string_set(req.scopes.iter().map(String::as_str))
            ));
        }
        if !req.roles.is_empty() {
            conditions
                .push(format!("context.roles.containsAll({})", cedar_string_set(req.roles.iter().map(String::as_str))));
        }
        for (path, value) in &req.claims {
            conditions.extend(claim_conditions(path, value).map_err(|e| format!("require[{i}]: claim `{path}`: {e}"))?);
        }
        let text = format!(
            "@id({})\npermit (\n  principal,\n  action in {},\n  resource == {resource}\n)\nwhen {{\n  {}\n}};",
            cedar_string(&id),
            action_list(methods),
            conditions.join(" &&\n  ")
        );
        out.push((id, text));
    }
    Ok(out)
}

/// Scalar text as it appears in `claims_str` entries.
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn claim_conditions(path: &str, value: &Value) -> Result<Vec<String>, String> {
    if path.is_empty() || path.contains('=') {
        return Err("claim path must be non-empty and contain no `=`".into());
    }
    let contains = |entry: String| format!("context.claims_str.contains({})", cedar_string(&entry));
    match value {
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                let text = scalar_text(item).ok_or("array elements must be strings, numbers or booleans")?;
                out.push(format!(
                    "({} || {})",
                    contains(format!("{path}={text}")),
                    contains(format!("{path}[]={text}"))
                ));
            }
            Ok(out)
        }
        scalar => {
            let text = scalar_text(scalar).ok_or("value must be a string, number, boolean or array of those")?;
            Ok(vec![contains(format!("{path}={text}"))])
        }
    }
}
