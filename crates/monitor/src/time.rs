//! Time helpers: detectors count in milliseconds since the Unix epoch (`u64`, saturating), and
//! serde adapters for RFC 3339 timestamps and humantime durations (`"60s"`, `"24h"`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch; a time before the epoch counts as 0.
pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH.checked_add(Duration::from_millis(ms)).unwrap_or(UNIX_EPOCH)
}

pub(crate) fn dur_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The time an audit event carries (RFC 3339), if it parses.
pub fn event_time(time: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(time).ok()
}

/// `SystemTime` as an RFC 3339 string with milliseconds, UTC.
pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(|_| serde::de::Error::custom("expected an RFC 3339 timestamp"))
    }
}

/// `Option<SystemTime>` as an optional RFC 3339 string.
pub(crate) mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            humantime::parse_rfc3339_weak(&s).map_err(|_| serde::de::Error::custom("expected an RFC 3339 timestamp"))
        })
        .transpose()
    }
}

/// `Duration` as a humantime string (`"90s"`, `"24h"`, `"500ms"`).
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("expected a duration like \"60s\" or \"24h\": {e}")))
    }
}
