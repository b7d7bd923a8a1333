//! Mesh policy: which workload may call which (service-to-service allow-lists, default deny), from one YAML
//! file, compiled per sidecar into Cedar `permit`s on `Service::"<peer SPIFFE ID>"` and exported as
//! Kubernetes NetworkPolicies (the L4 backstop). Invariants: a [`MeshPolicy`] exists only after the whole file
//! validated; every user string reaches Cedar escaped (only `*` of a path glob stays a `like` wildcard).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use palisade_core::config::{locate_serde_error, YamlSerdeError};
use palisade_core::diagnostic::SourceMap;
use palisade_core::SpiffeId;
use serde::Deserialize;

use crate::compile::cedar_string;
use crate::schema::HTTP_ACTIONS;
use crate::{Authorizer, PolicyError, PolicySource};

/// Trust domain of `ns/service` shorthands when the file names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "palisade.local";

/// Sidecar inbound (mTLS) port the CLI's NetworkPolicy export allows by default.
pub const DEFAULT_SIDECAR_PORT: u16 = 15443;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMesh {
    #[serde(default)]
    trust_domain: Option<String>,
    allow: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    from: String,
    to: String,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    paths: Option<Vec<String>>,
}

/// One validated `allow` entry: `from` may call `to` with `methods` on `paths`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshRule {
    index: usize,
    from: SpiffeId,
    to: SpiffeId,
    methods: Vec<&'static str>,
    paths: Vec<String>,
}

impl MeshRule {
    /// Position in the file's `allow` list (0-based); the rule's policy id is `mesh:<index>`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The Cedar policy id of this rule, `mesh:<index>`.
    pub fn policy_id(&self) -> String {
        format!("mesh:{}", self.index)
    }

    /// The calling workload.
    pub fn from(&self) -> &SpiffeId {
        &self.from
    }

    /// The called workload.
    pub fn to(&self) -> &SpiffeId {
        &self.to
    }

    /// Allowed HTTP methods; empty means every HTTP method.
    pub fn methods(&self) -> &[&'static str] {
        &self.methods
    }

    /// Allowed path globs (`*` matches any run of characters, `/` included; there is no literal `*`), matched
    /// against `context.path` (the request path as the sidecar passes it, without query); empty means every path.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    fn cedar(&self) -> String {
        let methods: &[&str] = if self.methods.is_empty() { &HTTP_ACTIONS } else { &self.methods };
        let actions: Vec<String> = methods.iter().map(|m| format!("Action::{}", cedar_string(m))).collect();
        let mut text = format!(
            "@id({})\npermit (\n  principal == Service::{},\n  action in [{}],\n  resource\n)",
            cedar_string(&self.policy_id()),
            cedar_string(self.from.as_str()),
            actions.join(", ")
        );
        if !self.paths.is_empty() {
            let alternatives: Vec<String> =
                self.paths.iter().map(|p| format!("context.path like {}", like_pattern(p))).collect();
            let _ = write!(text, "\nwhen {{\n  {}\n}}", alternatives.join(" ||\n  "));
        }
        text.push_str(";\n");
        text
    }
}

/// A parsed and validated mesh policy file. Only [`MeshPolicy::parse`] / [`MeshPolicy::load`] make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshPolicy {
    file: String,
    trust_domain: String,
    rules: Vec<MeshRule>,
}

/// The Kubernetes rendering of a mesh policy: the YAML stream and the rules it could not express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicyExport {
    /// Multi-document YAML (`---` separated NetworkPolicies), with a `#` comment per skipped rule.
    pub yaml: String,
    /// One line per rule (or part of one) left out, saying which and why; also in `yaml` as comments.
    pub skipped: Vec<String>,
}

impl MeshPolicy {
    /// Reads and parses a mesh policy file; errors name `path`.
    pub fn load(path: &Path) -> Result<MeshPolicy, Vec<PolicyError>> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![PolicyError { file: file.clone(), line: 0, column: 0, message: format!("cannot read: {e}") }]
        })?;
        MeshPolicy::parse(&file, &text)
    }

    /// Parses and validates mesh policy YAML; every problem found, each located (`file:line:column`) and
    /// naming its field (`allow[2].methods[0]: ...`).
    pub fn parse(file_name: &str, yaml: &str) -> Result<MeshPolicy, Vec<PolicyError>> {
        let map = SourceMap::build(yaml);
        let raw: RawMesh = match serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(yaml)) {
            Ok(raw) => raw,
            Err(e) => return Err(vec![serde_error(file_name, &map, &e)]),
        };
        let at = |path: &str, message: String| {
            let (line, column) = map.locate(path);
            PolicyError { file: file_name.to_owned(), line, column, message: format!("{path}: {message}") }
        };
        let mut errors = Vec::new();
        let trust_domain = raw.trust_domain.unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned());
        // A bad trust domain would make every shorthand fail too; report it once and skip those.
        let shorthand_domain = match SpiffeId::parse(&format!("spiffe://{trust_domain}/x")) {
            Ok(_) => Some(trust_domain.as_str()),
            Err(_) => {
                errors.push(at(
                    "trust_domain",
                    format!("`{trust_domain}` is not a trust domain (1 to 255 of a-z, 0-9, '.', '-', '_')"),
                ));
                None
            }
        };
        let mut rules = Vec::new();
        for (index, rule) in raw.allow.into_iter().enumerate() {
            let base = format!("allow[{index}]");
            let mut id = |field: &str, value: &str| match workload_id(shorthand_domain, value) {
                Ok(id) => Some(id),
                Err(message) => {
                    if let Some(message) = message {
                        errors.push(at(&format!("{base}.{field}"), message));
                    }
                    None
                }
            };
            let from = id("from", &rule.from);
            let to = id("to", &rule.to);
            let mut methods = Vec::new();
            if let Some(list) = &rule.methods {
                if list.is_empty() {
                    errors.push(at(
                        &format!("{base}.methods"),
                        "empty list (leave `methods` out to allow every method)".into(),
                    ));
                }
                for (i, m) in list.iter().enumerate() {
                    match HTTP_ACTIONS.iter().find(|a| *a == m) {
                        Some(a) if !methods.contains(a) => methods.push(*a),
                        Some(_) => {}
                        None => errors.push(at(
                            &format!("{base}.methods[{i}]"),
                            format!("unknown method `{m}` (expected one of {})", HTTP_ACTIONS.join(", ")),
                        )),
                    }
                }
            }
            let mut paths: Vec<String> = Vec::new();
            if let Some(list) = &rule.paths {
                if list.is_empty() {
                    errors.push(at(
                        &format!("{base}.paths"),
                        "empty list (leave `paths` out to allow every path)".into(),
                    ));
                }
                for (i, p) in list.iter().enumerate() {
                    match check_path(p) {
                        Ok(()) if !paths.contains(p) => paths.push(p.clone()),
                        Ok(()) => {}
                        Err(message) => errors.push(at(&format!("{base}.paths[{i}]"), message)),
                    }
                }
            }
            if let (Some(from), Some(to)) = (from, to) {
                rules.push(MeshRule { index, from, to, methods, paths });
            }
        }
        if errors.is_empty() {
            Ok(MeshPolicy { file: file_name.to_owned(), trust_domain, rules })
        } else {
            Err(errors)
        }
    }

    /// The file name given to [`MeshPolicy::parse`] (or the path given to [`MeshPolicy::load`]).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The trust domain of `ns/service` shorthands.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Every rule, in file order.
    pub fn rules(&self) -> &[MeshRule] {
        &self.rules
    }

    /// The Cedar policies of the sidecar whose own identity is `local`: one `@id("mesh:<index>") permit` per
    /// rule whose `to` is `local`, on principal `Service::"<from>"`, any resource (route). No such rule gives
    /// a text without policies, i.e. default deny.
    pub fn cedar_for(&self, local: &SpiffeId) -> String {
        let mut text = format!("// Mesh policy of {local}: callers not permitted below are denied.\n");
        for rule in self.rules.iter().filter(|r| &r.to == local) {
            text.push('\n');
            text.push_str(&rule.cedar());
        }
        text
    }

    /// [`MeshPolicy::cedar_for`] as a source for [`Authorizer::compile`] (named after the mesh file), so a
    /// sidecar can compile it together with other policy files.
    pub fn policy_source_for(&self, local: &SpiffeId) -> PolicySource {
        PolicySource { name: self.file.clone(), text: self.cedar_for(local) }
    }

    /// The authorizer of the sidecar whose own identity is `local` (the mesh rules alone). The sidecar
    /// decides with principal `Principal::Service(<peer SPIFFE ID>)`, the request method and path.
    pub fn authorizer_for(&self, local: &SpiffeId) -> Result<Authorizer, Vec<PolicyError>> {
        Authorizer::compile(&[self.policy_source_for(local)], &[])
    }

    /// Kubernetes NetworkPolicies (L4 only: methods and paths are left to the sidecars): per namespace with
    /// a `to` workload a default-deny-ingress policy, and per `to` workload one policy letting each `from`
    /// (namespace `kubernetes.io/metadata.name` + pods `app: <service>`) reach `port`. Workloads must be
    /// `ns/<ns>/sa/<service>` IDs of this trust domain with DNS-1123-label names (`app` label = service);
    /// rules naming others are skipped and listed. A workload with no expressible caller gets no allow
    /// policy at all (an empty `from` would admit every pod).
    pub fn k8s_network_policies(&self, port: u16) -> NetworkPolicyExport {
        let mut skipped = Vec::new();
        // (ns, service) of each target → (ns, service) of its callers.
        let mut targets: BTreeMap<(&str, &str), BTreeSet<(&str, &str)>> = BTreeMap::new();
        for rule in &self.rules {
            let what = format!("allow[{}] (from {} to {})", rule.index, rule.from, rule.to);
            let to = match self.k8s_workload(&rule.to) {
                Ok(to) => to,
                Err(why) => {
                    skipped.push(format!("skipped {what}: `to` {why}"));
                    continue;
                }
            };
            let callers = targets.entry(to).or_default();
            match self.k8s_workload(&rule.from) {
                Ok(from) => {
                    callers.insert(from);
                }
                Err(why) => skipped.push(format!("skipped {what}: `from` {why}")),
            }
        }
        let mut yaml = String::from(
            "# Kubernetes NetworkPolicies generated by `palisade policy export` from a mesh policy.\n\
             # They are L4 only: methods and paths are enforced by the sidecars.\n",
        );
        for s in &skipped {
            let _ = writeln!(yaml, "# {s}");
        }
        let namespaces: BTreeSet<&str> = targets.keys().map(|(ns, _)| *ns).collect();
        for ns in namespaces {
            let _ = write!(
                yaml,
                "---\n{}spec:\n  podSelector: {{}}\n  policyTypes: [\"Ingress\"]\n",
                header("palisade-mesh-default-deny", ns)
            );
        }
        for ((ns, service), callers) in &targets {
            if callers.is_empty() {
                let _ = writeln!(
                    yaml,
                    "# no caller of {ns}/{service} can be expressed as a pod selector: only the default deny applies"
                );
                continue;
            }
            let _ = write!(
                yaml,
                "---\n{}spec:\n  podSelector:\n    matchLabels:\n      app: {}\n  policyTypes: [\"Ingress\"]\n  \
                 ingress:\n    - from:\n",
                header(&format!("palisade-mesh-allow-{service}"), ns),
                quote(service)
            );
            for (from_ns, from_service) in callers {
                let _ = write!(
                    yaml,
                    "        - namespaceSelector:\n            matchLabels:\n              \
                     kubernetes.io/metadata.name: {}\n          podSelector:\n            matchLabels:\n              \
                     app: {}\n",
                    quote(from_ns),
                    quote(from_service)
                );
            }
            let _ = write!(yaml, "      ports:\n        - protocol: TCP\n          port: {port}\n");
        }
        NetworkPolicyExport { yaml, skipped }
    }

    /// `(ns, service)` of a workload NetworkPolicies can select, or why not.
    fn k8s_workload<'a>(&self, id: &'a SpiffeId) -> Result<(&'a str, &'a str), String> {
        if id.trust_domain() != self.trust_domain {
            return Err(format!(
                "is in trust domain {}, not {}: pod selectors cannot name it",
                id.trust_domain(),
                self.trust_domain
            ));
        }
        let Some((ns, service)) = id.ns_service() else {
            return Err("is not of the form spiffe://<td>/ns/<ns>/sa/<service>".into());
        };
        for name in [ns, service] {
            if !dns_label(name) {
                return Err(format!("`{name}` is not a Kubernetes name (DNS-1123 label: 1 to 63 of a-z, 0-9, '-')"));
            }
        }
        Ok((ns, service))
    }
}

/// The `apiVersion`/`kind`/`metadata` lines of one NetworkPolicy.
fn header(name: &str, ns: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {}\n  namespace: {}\n  labels:\n    \
         app.kubernetes.io/managed-by: palisade\n",
        quote(name),
        quote(ns)
    )
}

/// A double-quoted YAML scalar, so names like `true`, `null` or `123` stay strings in every YAML dialect.
/// Inputs are DNS-1123 labels already; escaping is a second line of defence.
fn quote(s: &str) -> String {
    crate::compile::quoted(s, |out, c| {
        let _ = write!(out, "\\U{c:08x}");
    })
}

/// RFC 1123 label as Kubernetes uses it for namespace names.
fn dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// `ns/service` (in `domain`) or a full SPIFFE ID. `Err(None)`: a shorthand while the trust domain is
/// invalid (already reported).
fn workload_id(domain: Option<&str>, value: &str) -> Result<SpiffeId, Option<String>> {
    if value.starts_with("spiffe://") {
        return SpiffeId::parse(value).map_err(Some);
    }
    match value.split_once('/') {
        Some((ns, service)) if !ns.is_empty() && !service.is_empty() && !service.contains('/') => match domain {
            Some(domain) => SpiffeId::workload(domain, ns, service).map_err(Some),
            None => Err(None),
        },
        _ => Err(Some(format!("`{value}` is neither `<namespace>/<service>` nor a spiffe:// ID"))),
    }
}

/// A path glob: absolute, no control characters (they cannot occur in a request path).
fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("path `{p}` must start with `/`"));
    }
    if p.chars().any(char::is_control) {
        return Err("path contains a control character".into());
    }
    Ok(())
}

/// The Cedar `like` pattern literal for a path glob: `*` stays the wildcard; quotes, backslashes and
/// non-ASCII characters are escaped, so the literal cannot end early or gain wildcards.
fn like_pattern(glob: &str) -> String {
    // A Cedar string literal leaves `*` as it is, which in a `like` pattern is the wildcard.
    cedar_string(glob)
}

/// A serde error at its field path: `allow[1].metods: unknown field ...` at the key's position.
fn serde_error(file: &str, map: &SourceMap, e: &serde_path_to_error::Error<serde_yaml_ng::Error>) -> PolicyError {
    let YamlSerdeError { path, message, line, column } = locate_serde_error(map, e);
    let message = if path.is_empty() { message } else { format!("{path}: {message}") };
    PolicyError { file: file.to_owned(), line, column, message }
}

#[cfg(test)]
#[path = "mesh_tests.rs"]
mod tests;
