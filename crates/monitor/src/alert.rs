//! The alert a detector raises. An alert names the events behind it by id (capped) and never
//! carries a token, secret or key: summaries are built from audit fields, which hold none.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// What a detector found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Many authentication failures for one principal or from one client IP.
    BruteForce,
    /// Failed logins for many distinct usernames from one client IP.
    CredentialStuffing,
    /// A service-to-service edge that is not in the learned baseline.
    LateralMovement,
    /// A route's request count in one interval far above its EWMA mean.
    RateSpike,
    /// A route's request count in one interval far below its EWMA mean.
    RateDrop,
    /// Many WAF matches from one client IP or on one route.
    WafBurst,
    /// A token refused as replayed, already used or revoked.
    TokenMisuse,
    /// Denies from one source above a floor and a share of its traffic.
    DenySpike,
    /// 5xx responses from one source above a floor and a share of its traffic.
    ErrorSpike,
    /// A certificate or key near (or past) its expiry.
    CertExpiry,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BruteForce => "brute_force",
            AlertKind::CredentialStuffing => "credential_stuffing",
            AlertKind::LateralMovement => "lateral_movement",
            AlertKind::RateSpike => "rate_spike",
            AlertKind::RateDrop => "rate_drop",
            AlertKind::WafBurst => "waf_burst",
            AlertKind::TokenMisuse => "token_misuse",
            AlertKind::DenySpike => "deny_spike",
            AlertKind::ErrorSpike => "error_spike",
            AlertKind::CertExpiry => "cert_expiry",
        }
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert. `key` identifies the condition (kind plus subject, e.g. `brute_force:ip:203.0.113.9`):
/// the [`AlertManager`](crate::AlertManager) merges alerts with the same key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    pub id: String,
    pub kind: AlertKind,
    pub severity: Severity,
    /// One human sentence.
    pub summary: String,
    pub key: String,
    /// Ids of the audit records behind the alert, oldest first, capped.
    pub event_ids: Vec<String>,
    #[serde(with = "crate::time::rfc3339")]
    pub first_seen: SystemTime,
    #[serde(with = "crate::time::rfc3339")]
    pub last_seen: SystemTime,
    /// How many events (or intervals, for the rate detector) the alert stands for.
    pub count: u64,
}

/// Printable text for a summary or key: control characters dropped, at most `max` characters,
/// so an odd principal or route cannot forge lines in a chat message or log.
pub(crate) fn clean(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}
