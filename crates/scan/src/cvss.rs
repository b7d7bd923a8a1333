//! CVSS v3.0/v3.1 base score from a vector string (FIRST CVSS v3.1 specification, section 7), used to give
//! findings a severity. Only the base metric group is scored; an incomplete or unknown vector gives `None`.

use serde::{Deserialize, Serialize};

/// Qualitative severity (CVSS v3.1 section 5 ratings), ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub enum Severity {
    /// No CVSS score or database rating was available.
    #[default]
    Unknown,
    /// Score 0.0.
    None,
    /// Score 0.1-3.9.
    Low,
    /// Score 4.0-6.9 (GHSA "MODERATE").
    Medium,
    /// Score 7.0-8.9.
    High,
    /// Score 9.0-10.0.
    Critical,
}

impl Severity {
    /// Rating of a CVSS score.
    pub fn from_score(score: f32) -> Severity {
        match score {
            s if s <= 0.0 => Severity::None,
            s if s < 4.0 => Severity::Low,
            s if s < 7.0 => Severity::Medium,
            s if s < 9.0 => Severity::High,
            _ => Severity::Critical,
        }
    }

    /// Parses a database rating such as GHSA's `HIGH` or `MODERATE` (case-insensitive).
    pub fn from_label(label: &str) -> Option<Severity> {
        match label.trim().to_ascii_lowercase().as_str() {
            "none" => Some(Severity::None),
            "low" => Some(Severity::Low),
            "medium" | "moderate" => Some(Severity::Medium),
            "high" | "important" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// CVSS 3.1 "Roundup": the smallest number with one decimal place that is >= the input, computed on
/// integers to avoid floating-point artefacts (specification Appendix A).
fn roundup(x: f64) -> f64 {
    let i = (x * 100_000.0).round() as i64;
    if i % 10_000 == 0 {
        i as f64 / 100_000.0
    } else {
        ((i / 10_000) as f64 + 1.0) / 10.0
    }
}

/// Base score of a `CVSS:3.x/...` vector; `None` for other versions or a malformed vector.
pub fn base_score_v3(vector: &str) -> Option<f32> {
    let mut parts = vector.trim().split('/');
    let head = parts.next()?;
    if head != "CVSS:3.0" && head != "CVSS:3.1" {
        return None;
    }
    let (mut av, mut ac, mut pr, mut ui, mut s, mut c, mut i, mut a) = (None, None, None, None, None, None, None, None);
    for part in parts {
        let (k, v) = part.split_once(':')?;
        match k {
            "AV" => {
                av = Some(match v {
                    "N" => 0.85,
                    "A" => 0.62,
                    "L" => 0.55,
                    "P" => 0.2,
                    _ => return None,
                })
            }
            "AC" => {
                ac = Some(match v {
                    "L" => 0.77,
                    "H" => 0.44,
                    _ => return None,
                })
            }
            "PR" => {
                pr = Some(match v {
                    "N" | "L" | "H" => v,
                    _ => return None,
                })
            }
            "UI" => {
                ui = Some(match v {
                    "N" => 0.85,
                    "R" => 0.62,
                    _ => return None,
                })
            }
            "S" => {
                s = Some(match v {
                    "U" => false,
                    "C" => true,
                    _ => return None,
                })
            }
            "C" | "I" | "A" => {
                let val = match v {
                    "H" => 0.56,
                    "L" => 0.22,
                    "N" => 0.0,
                    _ => return None,
                };
                match k {
                    "C" => c = Some(val),
                    "I" => i = Some(val),
                    _ => a = Some(val),
                }
            }
            // Temporal and environmental metrics do not change the base score.
            _ => {}
        }
    }
    let (av, ac, pr, ui, changed, c, i, a) = (av?, ac?, pr?, ui?, s?, c?, i?, a?);
    let pr = match (pr, changed) {
        ("N", _) => 0.85,
        ("L", false) => 0.62,
        ("L", true) => 0.68,
        ("H", false) => 0.27,
        _ => 0.5,
    };
    let iss: f64 = 1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a);
    let impact = if changed { 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02).powi(15) } else { 6.42 * iss };
    let exploitability = 8.22 * av * ac * pr * ui;
    let score = if impact <= 0.0 {
        0.0
    } else if changed {
        roundup((1.08 * (impact + exploitability)).min(10.0))
    } else {
        roundup((impact + exploitability).min(10.0))
    };
    Some(score as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cvss_v31_reference_scores() {
        // Scores as given by the FIRST CVSS v3.1 calculator.
        let cases = [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N", 5.5),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
            ("CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N", 5.9),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:R/S:U/C:L/I:N/A:N", 2.8),
            ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:N/I:N/A:N", 0.0),
        ];
        for (v, want) in cases {
            assert_eq!(base_score_v3(v), Some(want), "{v}");
        }
        assert_eq!(Severity::from_score(9.8), Severity::Critical);
        assert_eq!(Severity::from_score(7.5), Severity::High);
        assert_eq!(Severity::from_score(5.5), Severity::Medium);
        assert_eq!(Severity::from_score(2.8), Severity::Low);
        assert_eq!(Severity::from_score(0.0), Severity::None);
    }

    #[test]
    fn cvss_rejects_malformed() {
        for v in [
            "",
            "CVSS:2.0/AV:N/AC:L/Au:N/C:P/I:P/A:P",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",
            "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AVN",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        ] {
            assert_eq!(base_score_v3(v), None, "{v}");
        }
        assert_eq!(Severity::from_label("MODERATE"), Some(Severity::Medium));
        assert_eq!(Severity::from_label("urgent"), None);
    }
}
