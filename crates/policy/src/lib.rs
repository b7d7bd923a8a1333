//! palisade-policy: the authorization decision for every gateway (and later mesh) request, made by Cedar.
//!
//! It owns the Cedar [`SCHEMA`] (principals `User`/`Service`/`Client`/`Anonymous`, resource `Route`, one
//! action per HTTP method, a typed request context), compiles policy files and the YAML route shortcuts
//! ([`RouteRules`]) into one strictly validated policy set ([`Authorizer::compile`]), decides requests
//! ([`Authorizer::decide`]: default deny, `forbid` wins, errors deny), and backs the CLI's `check`,
//! `explain` and decision-table commands ([`check_files`], [`Authorizer::explain`], [`run_cases`]).
//! Mesh sidecars get theirs from a service-to-service allow-list ([`MeshPolicy`], module [`mesh`]), which
//! also exports Kubernetes NetworkPolicies.
//!
//! It is not an authenticator (the caller passes an already verified principal and claims), knows nothing
//! of HTTP, the proxy or config YAML, and never prints.

mod authorizer;
mod cases;
mod compile;
pub mod mesh;
mod schema;

pub use authorizer::{Authorizer, AuthzRequest, Decision, Explanation, Principal};
pub use cases::{parse_principal, run_cases, CaseFailure, CaseReport, Expect};
pub use compile::{check_files, PolicyError, PolicySource, Requirement, RouteRules};
pub use mesh::{MeshPolicy, MeshRule, NetworkPolicyExport};
pub use schema::{MAX_CLAIM_DEPTH, MAX_CLAIM_ENTRIES, SCHEMA};

#[cfg(test)]
mod tests;
