//! The monitoring file (`palisade server --monitor-config FILE`, YAML): the audit log's
//! checkpoints, segments, fsync policy and retention, the detectors' thresholds, alert
//! suppression and webhooks. Every section is optional; errors name the file, line and field.

use std::path::Path;
use std::time::Duration;

use palisade_auditlog::Fsync;
use palisade_core::config::{locate_serde_error, YamlSerdeError};
use palisade_monitor::{DetectorConfig, ManagerConfig, NotifierConfig};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorFile {
    pub audit_log: LogSection,
    pub detectors: DetectorConfig,
    pub alerts: ManagerConfig,
    /// Webhook targets and delivery (retries, backoff).
    pub webhooks: NotifierConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// A signed checkpoint after this many records.
    pub checkpoint_every: u64,
    /// Rotate a segment file at this size (bytes).
    pub segment_max_bytes: u64,
    /// `always` (fsync each record), `batch` (each ingested batch; the default) or `never`.
    pub fsync: FsyncName,
    /// Delete whole segments older than this (e.g. `90d`); the rest still verifies.
    #[serde(deserialize_with = "opt_duration")]
    pub max_age: Option<Duration>,
    /// Delete the oldest segments while the log is larger than this (bytes).
    pub max_bytes: Option<u64>,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            checkpoint_every: 1000,
            segment_max_bytes: 64 << 20,
            fsync: FsyncName::Batch,
            max_age: None,
            max_bytes: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncName {
    Always,
    Batch,
    Never,
}

impl From<FsyncName> for Fsync {
    fn from(f: FsyncName) -> Fsync {
        match f {
            FsyncName::Always => Fsync::Always,
            FsyncName::Batch => Fsync::Batch,
            FsyncName::Never => Fsync::Never,
        }
    }
}

fn opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{e} (e.g. 90d, 12h)"))))
        .transpose()
}

impl MonitorFile {
    pub fn parse(text: &str, file: &Path) -> Result<MonitorFile, String> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let cfg: MonitorFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let map = palisade_core::diagnostic::SourceMap::build(text);
            let YamlSerdeError { path, message, line, .. } = locate_serde_error(&map, &e);
            let path = if path.is_empty() { String::new() } else { format!(" {path}:") };
            format!("{}:{line}:{path} {message}", file.display())
        })?;
        if cfg.audit_log.checkpoint_every == 0 {
            return Err(format!("{}: audit_log.checkpoint_every: must be at least 1", file.display()));
        }
        if cfg.audit_log.segment_max_bytes < 4096 {
            return Err(format!("{}: audit_log.segment_max_bytes: must be at least 4096", file.display()));
        }
        Ok(cfg)
    }

    pub fn load(file: &Path) -> Result<MonitorFile, String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        MonitorFile::parse(&text, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_is_optional_and_errors_name_file_line_and_field() {
        let f = Path::new("monitor.yaml");
        assert_eq!(MonitorFile::parse("{}", f).unwrap(), MonitorFile::default());
        let cfg = MonitorFile::parse(
            "audit_log:\n  fsync: always\n  max_age: 30d\nwebhooks:\n  targets:\n    - { url: \"http://127.0.0.1:9/hook\", format: slack }\n",
            f,
        )
        .unwrap();
        assert_eq!(cfg.audit_log.fsync, FsyncName::Always);
        assert_eq!(cfg.audit_log.max_age, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(cfg.webhooks.targets.len(), 1);
        let err = MonitorFile::parse("audit_log:\n  fsync: sometimes\n", f).unwrap_err();
        assert!(err.starts_with("monitor.yaml:2: audit_log.fsync: unknown variant `sometimes`"), "{err}");
        let err = MonitorFile::parse("detectors:\n  brute_force:\n    per_ipp: 3\n", f).unwrap_err();
        assert!(err.starts_with("monitor.yaml:3: detectors.brute_force.per_ipp: unknown field"), "{err}");
        let err = MonitorFile::parse("audit_log:\n  checkpoint_every: 0\n", f).unwrap_err();
        assert_eq!(err, "monitor.yaml: audit_log.checkpoint_every: must be at least 1");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_example_file_parses_with_the_documented_values() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/monitor.yaml"));
        let cfg = MonitorFile::load(path).unwrap();
        assert_eq!(cfg.audit_log.max_age, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(cfg.audit_log.fsync, FsyncName::Batch);
        assert_eq!(cfg.detectors.brute_force.per_ip, 20);
        assert_eq!(cfg.alerts.suppression, Duration::from_secs(3600));
        assert_eq!(cfg.webhooks.targets.len(), 1);
        assert_eq!(cfg.webhooks.attempts, 5);
    }
}
