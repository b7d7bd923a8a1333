//! The streaming detectors. [`Detectors::observe`] takes one audit record and returns the alerts
//! it raises; state is per key (principal, IP, route, source, edge) with a cap per detector, the
//! least recently seen key evicted first, so hostile input cannot grow memory without bound.
//! Time is explicit: the event's own RFC 3339 time drives the windows (replays are
//! deterministic), bounded by `now + max_clock_skew`, and never goes backwards.

mod lateral;
mod rate;
mod spike;
mod window;

use std::time::SystemTime;

use palisade_core::audit::{AuditRecord, Decision, Stage};

pub use lateral::{Baseline, Edge};

use crate::alert::{clean, Alert, AlertKind, Severity};
use crate::config::{ConfigError, DetectorConfig};
use crate::time::{dur_ms, event_time, from_ms, to_ms};
use lateral::{service_id, EdgeVerdict, Lateral};
use rate::Rate;
use spike::Spike;
use window::{draft, Counter, Stuffing};

/// Longest key component (principal, IP, route, source) kept, in bytes.
const MAX_KEY_LEN: usize = 256;
/// Longest event id kept, in bytes.
const MAX_ID_LEN: usize = 128;

/// An alert before it gets its id.
#[derive(Debug)]
pub(crate) struct Draft {
    pub(crate) kind: AlertKind,
    pub(crate) severity: Severity,
    pub(crate) key: String,
    pub(crate) summary: String,
    pub(crate) event_ids: Vec<String>,
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) count: u64,
}

/// All detectors over one stream of audit records.
#[derive(Debug)]
pub struct Detectors {
    cfg: DetectorConfig,
    /// The detectors' clock (ms since the epoch): the latest trusted event time seen.
    clock: u64,
    id_prefix: String,
    seq: u64,
    bf_principal: Counter,
    bf_ip: Counter,
    stuffing: Stuffing,
    lateral: Lateral,
    rate: Rate,
    waf_ip: Counter,
    waf_route: Counter,
    /// Lowercased token-misuse reason substrings.
    reasons: Vec<String>,
    denies: Spike,
    errors: Spike,
}

/// `s` cut to at most `max` bytes on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

fn secs(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Detectors {
    pub fn new(cfg: DetectorConfig) -> Result<Detectors, ConfigError> {
        cfg.validate()?;
        let k = cfg.max_keys;
        let bf = &cfg.brute_force;
        let waf = &cfg.waf_burst;
        Ok(Detectors {
            clock: 0,
            id_prefix: format!("{:08x}", fastrand::u32(..)),
            seq: 0,
            bf_principal: Counter::new(k, dur_ms(bf.window), bf.per_principal),
            bf_ip: Counter::new(k, dur_ms(bf.window), bf.per_ip),
            stuffing: Stuffing::new(
                k,
                dur_ms(cfg.credential_stuffing.window),
                cfg.credential_stuffing.distinct_principals,
            ),
            lateral: Lateral::new(dur_ms(cfg.lateral_movement.learning_period), cfg.lateral_movement.max_edges, k),
            rate: Rate::new(cfg.rate_anomaly.clone(), k),
            waf_ip: Counter::new(k, dur_ms(waf.window), waf.per_ip),
            waf_route: Counter::new(k, dur_ms(waf.window), waf.per_route),
            reasons: cfg.token_misuse.reasons.iter().map(|r| r.to_lowercase()).collect(),
            denies: Spike::new(k, dur_ms(cfg.deny_spike.window), cfg.deny_spike.floor, cfg.deny_spike.ratio),
            errors: Spike::new(k, dur_ms(cfg.error_spike.window), cfg.error_spike.floor, cfg.error_spike.ratio),
            cfg,
        })
    }

    /// Feed one record; returns the alerts it raises (often none). `now` is the wall clock, used
    /// when the event's time is missing, unparsable or later than `now + max_clock_skew`.
    pub fn observe(&mut self, rec: &AuditRecord, now: SystemTime) -> Vec<Alert> {
        let now_ms = to_ms(now);
        let limit = now_ms.saturating_add(dur_ms(self.cfg.max_clock_skew));
        let t = event_time(&rec.event.time).map(to_ms).filter(|t| *t <= limit).unwrap_or(now_ms);
        self.clock = self.clock.max(t);
        let t = self.clock;

        let e = &rec.event;
        let id = clip(&rec.id, MAX_ID_LEN);
        let principal = clip(&e.principal, MAX_KEY_LEN);
        let ip = clip(&e.client_ip, MAX_KEY_LEN);
        let route = clip(&e.route, MAX_KEY_LEN);
        let source = clip(&e.source, MAX_KEY_LEN);
        let max_ids = self.cfg.max_event_ids;
        let deny = e.decision == Decision::Deny;
        let mut out: Vec<Draft> = Vec::new();

        if self.cfg.brute_force.enabled && deny && matches!(e.stage, Stage::Authn | Stage::Login) {
            let w = secs(self.cfg.brute_force.window);
            if principal != "Anonymous" && !principal.is_empty() {
                let n = self.cfg.brute_force.per_principal;
                let step = self.bf_principal.hit(principal, t, id, max_ids);
                out.extend(draft(step, t, id, |_| Draft {
                    kind: AlertKind::BruteForce,
                    severity: Severity::High,
                    key: format!("brute_force:principal:{}", clean(principal, 128)),
                    summary: format!(
                        "Brute force suspected: at least {n} authentication failures for {} within {w}",
                        clean(principal, 128)
                    ),
                    ..Draft::empty()
                }));
            }
            let n = self.cfg.brute_force.per_ip;
            let step = self.bf_ip.hit(ip, t, id, max_ids);
            out.extend(draft(step, t, id, |_| Draft {
                kind: AlertKind::BruteForce,
                severity: Severity::High,
                key: format!("brute_force:ip:{}", clean(ip, 64)),
                summary: format!(
                    "Brute force suspected: at least {n} authentication failures from {} within {w}",
                    clean(ip, 64)
                ),
                ..Draft::empty()
            }));
        }

        if self.cfg.credential_stuffing.enabled && deny && e.stage == Stage::Login {
            let step = self.stuffing.hit(ip, principal, t, id, max_ids);
            let n = self.cfg.credential_stuffing.distinct_principals;
            let w = secs(self.cfg.credential_stuffing.window);
            out.extend(draft(step, t, id, |_| Draft {
                kind: AlertKind::CredentialStuffing,
                severity: Severity::High,
                key: format!("credential_stuffing:ip:{}", clean(ip, 64)),
                summary: format!(
                    "Credential stuffing suspected: failed logins for at least {n} distinct users from {} within {w}",
                    clean(ip, 64)
                ),
                ..Draft::empty()
            }));
        }

        if self.cfg.lateral_movement.enabled {
            if let (Some(from), Some(to)) = (service_id(principal), e.service.as_deref()) {
                let to = clip(to, MAX_KEY_LEN);
                if let EdgeVerdict::New(edge) = self.lateral.observe(from, to, !deny, t) {
                    let verb = if deny { "tried to call (denied)" } else { "called" };
                    out.push(Draft {
                        kind: AlertKind::LateralMovement,
                        severity: Severity::High,
                        key: format!("lateral_movement:{}->{}", clean(&edge.from, 200), clean(&edge.to, 200)),
                        summary: format!(
                            "New service-to-service edge: {} {verb} {}, not in the learned baseline",
                            clean(&edge.from, 200),
                            clean(&edge.to, 200)
                        ),
                        event_ids: vec![id.to_owned()],
                        first: t,
                        last: t,
                        count: 1,
                    });
                }
            }
        }

        if self.cfg.rate_anomaly.enabled {
            self.rate.observe(route, t, id, max_ids, &mut out);
        }

        if self.cfg.waf_burst.enabled && e.stage == Stage::Waf {
            let w = secs(self.cfg.waf_burst.window);
            let n = self.cfg.waf_burst.per_ip;
            let step = self.waf_ip.hit(ip, t, id, max_ids);
            out.extend(draft(step, t, id, |_| Draft {
                kind: AlertKind::WafBurst,
                severity: Severity::Medium,
                key: format!("waf_burst:ip:{}", clean(ip, 64)),
                summary: format!("WAF burst: at least {n} WAF matches from {} within {w}", clean(ip, 64)),
                ..Draft::empty()
            }));
            let n = self.cfg.waf_burst.per_route;
            let step = self.waf_route.hit(route, t, id, max_ids);
            out.extend(draft(step, t, id, |_| Draft {
                kind: AlertKind::WafBurst,
                severity: Severity::Medium,
                key: format!("waf_burst:route:{}", clean(route, 128)),
                summary: format!("WAF burst: at least {n} WAF matches on route {} within {w}", clean(route, 128)),
                ..Draft::empty()
            }));
        }

        if self.cfg.token_misuse.enabled && deny {
            let reason = clip(&e.reason, 1024).to_lowercase();
            if self.reasons.iter().any(|r| reason.contains(r.as_str())) {
                out.push(Draft {
                    kind: AlertKind::TokenMisuse,
                    severity: Severity::High,
                    key: format!("token_misuse:{}@{}", clean(principal, 128), clean(ip, 64)),
                    summary: format!(
                        "Replayed or revoked token refused for {} from {} on route {} ({})",
                        clean(principal, 128),
                        clean(ip, 64),
                        clean(route, 128),
                        clean(&e.reason, 120)
                    ),
                    event_ids: vec![id.to_owned()],
                    first: t,
                    last: t,
                    count: 1,
                });
            }
        }

        for (enabled, hit, kind) in [
            (self.cfg.deny_spike.enabled, deny, AlertKind::DenySpike),
            (self.cfg.error_spike.enabled, e.status >= 500, AlertKind::ErrorSpike),
        ] {
            if !enabled {
                continue;
            }
            let (det, cfg, what) = match kind {
                AlertKind::DenySpike => (&mut self.denies, &self.cfg.deny_spike, "denies"),
                _ => (&mut self.errors, &self.cfg.error_spike, "5xx responses"),
            };
            if let Some(f) = det.observe(source, hit, t, id, max_ids) {
                let pct = f.hits.saturating_mul(100) / f.total.max(1);
                out.push(Draft {
                    kind,
                    severity: Severity::Medium,
                    key: format!("{kind}:source:{}", clean(source, 64)),
                    summary: format!(
                        "Spike in {what} from {}: {} of {} events ({pct}%) within {}",
                        clean(source, 64),
                        f.hits,
                        f.total,
                        secs(cfg.window)
                    ),
                    event_ids: f.ids,
                    first: f.first,
                    last: t,
                    count: f.hits,
                });
            }
        }

        out.into_iter().map(|d| self.finish(d)).collect()
    }

    /// Check a certificate or key's expiry: `None` while more than `expiry.warning` remains;
    /// medium within it, critical within `expiry.critical` or once expired.
    pub fn observe_expiry(&mut self, name: &str, not_after: SystemTime, now: SystemTime) -> Option<Alert> {
        let cfg = &self.cfg.expiry;
        if !cfg.enabled {
            return None;
        }
        let name = clean(name, 128);
        let (severity, summary) = match not_after.duration_since(now) {
            Err(_) => {
                (Severity::Critical, format!("{name} expired at {}", humantime::format_rfc3339_seconds(not_after)))
            }
            Ok(left) if left > cfg.warning => return None,
            Ok(left) => {
                let severity = if left <= cfg.critical { Severity::Critical } else { Severity::Medium };
                let days = left.as_secs() / 86_400;
                let hours = (left.as_secs() % 86_400) / 3_600;
                let at = humantime::format_rfc3339_seconds(not_after);
                (severity, format!("{name} expires in {days}d {hours}h (at {at})"))
            }
        };
        let now_ms = to_ms(now);
        Some(self.finish(Draft {
            kind: AlertKind::CertExpiry,
            severity,
            key: format!("cert_expiry:{name}"),
            summary,
            event_ids: Vec::new(),
            first: now_ms,
            last: now_ms,
            count: 1,
        }))
    }

    /// The lateral-movement baseline, to persist.
    pub fn baseline(&self) -> Baseline {
        self.lateral.export()
    }

    /// Replace the lateral-movement baseline (e.g. one saved before a restart); edges past
    /// `lateral_movement.max_edges` are ignored.
    pub fn import_baseline(&mut self, baseline: Baseline) {
        self.lateral.import(baseline);
    }

    fn finish(&mut self, d: Draft) -> Alert {
        self.seq = self.seq.wrapping_add(1);
        Alert {
            id: format!("{}-{}", self.id_prefix, self.seq),
            kind: d.kind,
            severity: d.severity,
            summary: d.summary,
            key: d.key,
            event_ids: d.event_ids,
            first_seen: from_ms(d.first),
            last_seen: from_ms(d.last),
            count: d.count,
        }
    }
}

impl Draft {
    fn empty() -> Draft {
        Draft {
            kind: AlertKind::BruteForce,
            severity: Severity::Info,
            key: String::new(),
            summary: String::new(),
            event_ids: Vec::new(),
            first: 0,
            last: 0,
            count: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use palisade_core::audit::AuditEvent;

    use super::*;

    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_cap() {
        let cfg = DetectorConfig { max_keys: 100, ..DetectorConfig::default() };
        let mut det = Detectors::new(cfg).unwrap();
        let now = from_ms(1_772_445_600_000);
        for i in 0..5_000u32 {
            let rec = AuditRecord {
                id: format!("e{i}"),
                event: AuditEvent {
                    time: String::new(),
                    source: format!("src{i}").into(),
                    service: None,
                    request_id: String::new(),
                    decision: Decision::Deny,
                    stage: Stage::Login,
                    reason: String::new(),
                    principal: format!("User::\"u{i}\""),
                    client_id: None,
                    auth_method: None,
                    route: format!("route{i}"),
                    method: "POST".into(),
                    path: "/".into(),
                    client_ip: format!("ip{i}"),
                    policy_ids: vec![],
                    status: 401,
                    latency_ms: 0.0,
                    waf: Vec::new(),
                },
            };
            assert!(det.observe(&rec, now).is_empty());
        }
        assert_eq!((det.bf_ip.keys(), det.bf_principal.keys()), (100, 100));
    }
}
