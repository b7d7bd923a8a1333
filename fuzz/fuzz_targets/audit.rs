//! Untrusted monitoring input: an NDJSON batch sent to `POST /audit/v1/events`, the monitoring
//! settings file, and audit-log segment files handed to `verify` (a copy someone may have
//! tampered with). The first byte picks the parser. Must never panic; an accepted batch must
//! re-serialize to records that parse back to the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 3 {
        0 => {
            if let Ok(records) = palisade_audit::parse_batch(rest) {
                for r in records {
                    let line = serde_json::to_string(&r).expect("a parsed record serializes");
                    let back: palisade_core::audit::AuditRecord = serde_json::from_str(&line).expect("round trip");
                    assert_eq!(back.id, r.id);
                }
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = palisade_audit::MonitorFile::parse(text, std::path::Path::new("fuzz.yaml"));
            }
        }
        _ => {
            // One segment file plus a head file cut from the same input.
            let dir = tempfile::tempdir().expect("temp dir");
            let cut = rest.len() / 3;
            let (head, seg) = rest.split_at(cut);
            std::fs::write(dir.path().join("000001.log"), seg).expect("write");
            std::fs::write(dir.path().join("head.json"), head).expect("write");
            let _ = palisade_auditlog::verify(dir.path(), &[7u8; 32]);
        }
    }
});
