//! Decision tables (`palisade policy test`) and principal parsing (`--principal`).
//!
//! A table is YAML, a list of cases with `deny_unknown_fields`, so a misspelt key fails instead of silently
//! testing something else. Cases are independent; the report lists every mismatch.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{Authorizer, AuthzRequest, Principal};

/// What a case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The request must be allowed.
    Allow,
    /// The request must be denied.
    Deny,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    principal: String,
    method: String,
    route: String,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    claims: Option<Map<String, Value>>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    client_ip: Option<IpAddr>,
    #[serde(default)]
    mtls_identity: Option<String>,
    /// Unix seconds; defaults to the current time.
    #[serde(default)]
    time: Option<u64>,
    expect: Expect,
}

fn default_path() -> String {
    "/".into()
}

/// One case whose decision differed from its expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFailure {
    /// The case's `name`.
    pub name: String,
    /// What the table expected.
    pub expected: Expect,
    /// What the authorizer decided.
    pub got: Expect,
    /// The determining policies of the actual decision.
    pub policy_ids: Vec<String>,
    /// Evaluation errors of the actual decision.
    pub errors: Vec<String>,
}

/// The result of a decision table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseReport {
    /// Number of cases decided as expected.
    pub passed: usize,
    /// Every case decided otherwise, in table order.
    pub failed: Vec<CaseFailure>,
}

impl CaseReport {
    /// True when every case passed.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

impl fmt::Display for CaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.failed {
            write!(f, "FAIL {}: expected {}, got {}", c.name, c.expected, c.got)?;
            if c.policy_ids.is_empty() {
                write!(f, " (no determining policy)")?;
            } else {
                write!(f, " (determined by: {})", c.policy_ids.join(", "))?;
            }
            writeln!(f)?;
            for e in &c.errors {
                writeln!(f, "  error: {e}")?;
            }
        }
        // Not "N passed, N failed" alone: CI log scrapers would take it for a test-runner summary.
        writeln!(
            f,
            "decision table: {} of {} cases as expected",
            self.passed,
            self.passed.saturating_add(self.failed.len())
        )
    }
}

/// Parses a principal: `anonymous`, or a Cedar entity uid `User::"alice"`, `Client::"x"`,
/// `Service::"spiffe://..."`, `Anonymous::"..."`.
pub fn parse_principal(s: &str) -> Result<Principal, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("anonymous") {
        return Ok(Principal::Anonymous);
    }
    let uid = cedar_policy::EntityUid::from_str(s)
        .map_err(|e| format!("principal `{s}` is not `anonymous` or an entity like User::\"alice\": {e}"))?;
    let id = uid.id().unescaped().to_owned();
    match uid.type_name().to_string().as_str() {
        "User" => Ok(Principal::User(id)),
        "Service" => Ok(Principal::Service(id)),
        "Client" => Ok(Principal::Client(id)),
        "Anonymous" => Ok(Principal::Anonymous),
        other => Err(format!("principal type `{other}` is not one of User, Service, Client, Anonymous")),
    }
}

/// Runs a YAML decision table against `authz`. Errors only for a malformed table.
pub fn run_cases(authz: &Authorizer, yaml: &str) -> Result<CaseReport, String> {
    let cases: Vec<Case> = serde_yaml_ng::from_str(yaml).map_err(|e| format!("decision table: {e}"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut report = CaseReport::default();
    for case in &cases {
        let principal = parse_principal(&case.principal).map_err(|e| format!("case `{}`: {e}", case.name))?;
        let client_id = match (&case.client_id, &principal) {
            (Some(id), _) | (None, Principal::Client(id)) => Some(id.clone()),
            _ => None,
        };
        let issuer =
            case.issuer.as_deref().or_else(|| case.claims.as_ref().and_then(|c| c.get("iss")).and_then(Value::as_str));
        let req = AuthzRequest {
            authenticated: principal != Principal::Anonymous,
            principal,
            method: &case.method,
            route: &case.route,
            path: &case.path,
            scopes: &case.scopes,
            roles: &case.roles,
            client_id: client_id.as_deref(),
            issuer,
            claims: case.claims.as_ref(),
            client_ip: case.client_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            mtls_identity: case.mtls_identity.as_deref(),
            now: case.time.unwrap_or(now),
        };
        let decision = authz.decide(&req);
        let got = if decision.allow { Expect::Allow } else { Expect::Deny };
        if got == case.expect {
            report.passed = report.passed.saturating_add(1);
        } else {
            report.failed.push(CaseFailure {
                name: case.name.clone(),
                expected: case.expect,
                got,
                policy_ids: decision.policy_ids.to_vec(),
                errors: decision.errors,
            });
        }
    }
    Ok(report)
}
