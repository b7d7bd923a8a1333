//! Config lint: Dockerfiles and Kubernetes manifests checked against the rules of [`crate::rules`]. Each
//! finding names its rule, file, 1-based line and the object it is about; text comes from the catalog, so a
//! finding is readable on its own. Files are classified by name ([`config_kind`]).

mod dockerfile;
mod k8s;
pub(crate) mod yaml;

use serde::{Deserialize, Serialize};

use crate::cvss::Severity;
use crate::rules::rule;

/// One config-lint finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Misconfiguration {
    /// Rule id, e.g. `PAL-K8S-001`.
    pub rule_id: String,
    /// The rule's severity.
    pub severity: Severity,
    /// The rule's title.
    pub title: String,
    /// What exactly is wrong here.
    pub message: String,
    /// Why it matters (the rule's one line).
    pub why: String,
    /// How to fix it.
    pub fix: String,
    /// File, as given or relative to the scanned directory.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The object: `Deployment/web`, `Deployment/web (chart/templates/web.yaml)`, `stage 2 (FROM debian:12)`.
    pub resource: String,
}

pub(crate) fn finding(id: &str, file: &str, line: usize, resource: &str, message: String) -> Misconfiguration {
    let r = rule(id);
    Misconfiguration {
        rule_id: id.to_owned(),
        severity: r.map(|r| r.severity).unwrap_or_default(),
        title: r.map(|r| r.title).unwrap_or_default().to_owned(),
        message,
        why: r.map(|r| r.why).unwrap_or_default().to_owned(),
        fix: r.map(|r| r.fix).unwrap_or_default().to_owned(),
        file: file.to_owned(),
        line,
        resource: resource.to_owned(),
    }
}

/// Variable names that hold secrets: `*PASSWORD*`, `*PASSWD*`, `*SECRET*`, `*TOKEN*`, `*CREDENTIAL*`,
/// `*API_KEY*`, `*PRIVATE_KEY*`, `*ACCESS_KEY*`, `*_KEY`. Names that point at a secret (`*_FILE`, `*_PATH`,
/// `*_DIR`), public key material (`GPG_KEY`, `*PUBLIC_KEY*`) and key ids (`*_KEY_ID`) are not secrets.
pub(crate) fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase().replace('-', "_");
    let pointer = ["_FILE", "_PATH", "_DIR", "_ID", "_NAME", "_URL", "_HOST", "_TYPE"];
    if pointer.iter().any(|s| n.ends_with(s)) || n.contains("PUBLIC_KEY") || n == "GPG_KEY" || n.ends_with("_GPG_KEY") {
        return false;
    }
    ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "API_KEY", "APIKEY", "PRIVATE_KEY", "ACCESS_KEY"]
        .iter()
        .any(|p| n.contains(p))
        || n.ends_with("_KEY")
        || n == "KEY"
}

/// Why an image reference is not pinned: `… uses the latest tag` / `… has no tag`; `None` when it has a
/// version tag or a digest, or cannot be judged (template variables).
pub(crate) fn image_tag_problem(image: &str) -> Option<String> {
    let img = image.trim();
    if img.is_empty() || img.contains('@') || img.contains('$') || img.contains("{{") {
        return None;
    }
    let last = img.rsplit('/').next().unwrap_or(img);
    match last.split_once(':') {
        Some((_, "latest")) => Some(format!("{img} uses the `latest` tag")),
        Some(_) => None,
        None => Some(format!("{img} has no tag (means `latest`)")),
    }
}

/// What kind of config file a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ConfigKind {
    /// `Dockerfile`, `Containerfile`, `*.Dockerfile`, `Dockerfile.*`.
    Dockerfile,
    /// `*.yaml`/`*.yml`: linted when its documents are Kubernetes objects.
    Yaml,
}

/// Classifies a path by its file name.
pub fn config_kind(path: &str) -> Option<ConfigKind> {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let lower = name.to_ascii_lowercase();
    if lower == "dockerfile"
        || lower == "containerfile"
        || lower.ends_with(".dockerfile")
        || lower.starts_with("dockerfile.")
        || lower.starts_with("containerfile.")
    {
        Some(ConfigKind::Dockerfile)
    } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        Some(ConfigKind::Yaml)
    } else {
        None
    }
}

/// Lints one config file's text; `Err` says why it could not be read as that kind (invalid YAML).
pub fn lint_config(kind: ConfigKind, file: &str, text: &str) -> Result<Vec<Misconfiguration>, String> {
    match kind {
        ConfigKind::Dockerfile => Ok(dockerfile::lint(file, text)),
        ConfigKind::Yaml => k8s::lint(file, text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for n in ["DB_PASSWORD", "github_token", "AWS_SECRET_ACCESS_KEY", "API_KEY", "STRIPE_KEY", "client-secret"] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in ["PATH", "GPG_KEY", "PASSWORD_FILE", "SSH_PUBLIC_KEY", "AWS_ACCESS_KEY_ID", "KEYBOARD", "TOKEN_URL"] {
            assert!(!is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn kinds_and_tags() {
        assert_eq!(config_kind("a/Dockerfile"), Some(ConfigKind::Dockerfile));
        assert_eq!(config_kind("build/api.Dockerfile"), Some(ConfigKind::Dockerfile));
        assert_eq!(config_kind("Dockerfile.prod"), Some(ConfigKind::Dockerfile));
        assert_eq!(config_kind("deploy/x.yml"), Some(ConfigKind::Yaml));
        assert_eq!(config_kind("Cargo.toml"), None);
        assert_eq!(image_tag_problem("nginx").as_deref(), Some("nginx has no tag (means `latest`)"));
        assert_eq!(
            image_tag_problem("localhost:5000/x").as_deref(),
            Some("localhost:5000/x has no tag (means `latest`)")
        );
        assert_eq!(image_tag_problem("x:latest").as_deref(), Some("x:latest uses the `latest` tag"));
        assert_eq!(image_tag_problem("x:1.2"), None);
        assert_eq!(image_tag_problem("x@sha256:ab"), None);
    }
}
