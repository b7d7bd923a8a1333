//! Detector thresholds and windows. Every field has a default; unknown fields are refused so a
//! misspelt threshold is an error, not a silently ignored setting. Durations are humantime
//! strings (`"60s"`, `"24h"`). [`DetectorConfig::validate`] rejects values that would make a
//! detector meaningless (zero windows or thresholds, ratios outside (0, 1]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("monitor configuration: {field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: &'static str,
}

fn err(field: &'static str, reason: &'static str) -> Result<(), ConfigError> {
    Err(ConfigError { field, reason })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Most keys (principals, IPs, routes, sources) tracked per detector; the least recently
    /// seen is evicted past it.
    pub max_keys: usize,
    /// Most event ids an alert carries.
    pub max_event_ids: usize,
    /// An event time later than `now` plus this is not trusted: `now` is used instead.
    #[serde(with = "crate::time::duration")]
    pub max_clock_skew: Duration,
    pub brute_force: BruteForceConfig,
    pub credential_stuffing: CredentialStuffingConfig,
    pub lateral_movement: LateralMovementConfig,
    pub rate_anomaly: RateAnomalyConfig,
    pub waf_burst: WafBurstConfig,
    pub token_misuse: TokenMisuseConfig,
    /// Denies per source.
    pub deny_spike: SpikeConfig,
    /// 5xx responses per source.
    pub error_spike: SpikeConfig,
    pub expiry: ExpiryConfig,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            max_keys: 10_000,
            max_event_ids: 20,
            max_clock_skew: Duration::from_secs(300),
            brute_force: BruteForceConfig::default(),
            credential_stuffing: CredentialStuffingConfig::default(),
            lateral_movement: LateralMovementConfig::default(),
            rate_anomaly: RateAnomalyConfig::default(),
            waf_burst: WafBurstConfig::default(),
            token_misuse: TokenMisuseConfig::default(),
            deny_spike: SpikeConfig::default(),
            error_spike: SpikeConfig::default(),
            expiry: ExpiryConfig::default(),
        }
    }
}

/// Authentication failures (deny at stage `authn` or `login`) in a sliding window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BruteForceConfig {
    pub enabled: bool,
    #[serde(with = "crate::time::duration")]
    pub window: Duration,
    /// Failures for one principal (other than `Anonymous`) that raise an alert.
    pub per_principal: usize,
    /// Failures from one client IP that raise an alert.
    pub per_ip: usize,
}

impl Default for BruteForceConfig {
    fn default() -> Self {
        BruteForceConfig { enabled: true, window: Duration::from_secs(60), per_principal: 10, per_ip: 20 }
    }
}

/// Distinct principals with a failed login (deny at stage `login`) from one IP in a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CredentialStuffingConfig {
    pub enabled: bool,
    #[serde(with = "crate::time::duration")]
    pub window: Duration,
    pub distinct_principals: usize,
}

impl Default for CredentialStuffingConfig {
    fn default() -> Self {
        CredentialStuffingConfig { enabled: true, window: Duration::from_secs(300), distinct_principals: 5 }
    }
}

/// New service-to-service edges after a learning period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LateralMovementConfig {
    pub enabled: bool,
    /// Allowed edges seen within this time of the first event are the baseline.
    #[serde(with = "crate::time::duration")]
    pub learning_period: Duration,
    /// Most baseline edges; past it learning stops (later new edges alert).
    pub max_edges: usize,
}

impl Default for LateralMovementConfig {
    fn default() -> Self {
        LateralMovementConfig { enabled: true, learning_period: Duration::from_secs(24 * 3600), max_edges: 10_000 }
    }
}

/// Per-route request counts per fixed interval against an EWMA mean and variance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateAnomalyConfig {
    pub enabled: bool,
    #[serde(with = "crate::time::duration")]
    pub interval: Duration,
    /// EWMA weight of the newest interval, in (0, 1].
    pub alpha: f64,
    /// |z| above which an interval is anomalous.
    pub z_threshold: f64,
    /// Complete intervals folded into the mean before the detector judges.
    pub min_intervals: u32,
    /// A spike needs at least this many requests in the interval; a drop needs a mean of at least this.
    pub min_count: u64,
    /// Also alert when a route's count falls far below its mean.
    pub detect_drops: bool,
}

impl Default for RateAnomalyConfig {
    fn default() -> Self {
        RateAnomalyConfig {
            enabled: true,
            interval: Duration::from_secs(60),
            alpha: 0.1,
            z_threshold: 5.0,
            min_intervals: 10,
            min_count: 20,
            detect_drops: true,
        }
    }
}

/// WAF matches (stage `waf`) in a sliding window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WafBurstConfig {
    pub enabled: bool,
    #[serde(with = "crate::time::duration")]
    pub window: Duration,
    pub per_ip: usize,
    pub per_route: usize,
}

impl Default for WafBurstConfig {
    fn default() -> Self {
        WafBurstConfig { enabled: true, window: Duration::from_secs(60), per_ip: 20, per_route: 50 }
    }
}

/// Denies whose reason names a replayed, used or revoked token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenMisuseConfig {
    pub enabled: bool,
    /// Case-insensitive substrings of the deny reason.
    pub reasons: Vec<String>,
}

impl Default for TokenMisuseConfig {
    fn default() -> Self {
        TokenMisuseConfig { enabled: true, reasons: vec!["replay".into(), "already used".into(), "revoked".into()] }
    }
}

/// Denies (or 5xx) per source in a sliding window: alert when both the count reaches `floor`
/// and the share of that source's events reaches `ratio`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpikeConfig {
    pub enabled: bool,
    #[serde(with = "crate::time::duration")]
    pub window: Duration,
    pub floor: u64,
    pub ratio: f64,
}

impl Default for SpikeConfig {
    fn default() -> Self {
        SpikeConfig { enabled: true, window: Duration::from_secs(60), floor: 50, ratio: 0.5 }
    }
}

/// Certificate and key expiry thresholds (time left before `not_after`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpiryConfig {
    pub enabled: bool,
    #[serde(with = "crate::time::duration")]
    pub warning: Duration,
    #[serde(with = "crate::time::duration")]
    pub critical: Duration,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        ExpiryConfig {
            enabled: true,
            warning: Duration::from_secs(30 * 24 * 3600),
            critical: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl DetectorConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_keys == 0 {
            return err("max_keys", "must be at least 1");
        }
        let windows = [
            ("brute_force.window", self.brute_force.window),
            ("credential_stuffing.window", self.credential_stuffing.window),
            ("rate_anomaly.interval", self.rate_anomaly.interval),
            ("waf_burst.window", self.waf_burst.window),
            ("deny_spike.window", self.deny_spike.window),
            ("error_spike.window", self.error_spike.window),
        ];
        for (field, window) in windows {
            if window.as_millis() < 10 {
                return err(field, "must be at least 10ms");
            }
        }
        let counts = [
            ("brute_force.per_principal", self.brute_force.per_principal),
            ("brute_force.per_ip", self.brute_force.per_ip),
            ("credential_stuffing.distinct_principals", self.credential_stuffing.distinct_principals),
            ("waf_burst.per_ip", self.waf_burst.per_ip),
            ("waf_burst.per_route", self.waf_burst.per_route),
        ];
        for (field, n) in counts {
            if n == 0 {
                return err(field, "must be at least 1");
            }
        }
        let r = &self.rate_anomaly;
        if !(r.alpha > 0.0 && r.alpha <= 1.0) {
            return err("rate_anomaly.alpha", "must be in (0, 1]");
        }
        if !(r.z_threshold.is_finite() && r.z_threshold > 0.0) {
            return err("rate_anomaly.z_threshold", "must be a positive number");
        }
        for (field, s) in [("deny_spike", &self.deny_spike), ("error_spike", &self.error_spike)] {
            if !(s.ratio > 0.0 && s.ratio <= 1.0) {
                return err(field, "ratio must be in (0, 1]");
            }
            if s.floor == 0 {
                return err(field, "floor must be at least 1");
            }
        }
        if self.expiry.critical > self.expiry.warning {
            return err("expiry.critical", "must not exceed expiry.warning");
        }
        if self.token_misuse.reasons.iter().any(|r| r.trim().is_empty()) {
            return err("token_misuse.reasons", "must not contain an empty string");
        }
        Ok(())
    }
}
