//! Any bytes as a gateway config: parsing and validation must return Ok or located errors,
//! never panic, and every diagnostic must point inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = palisade_core::parse_str("fuzz.yaml", text, std::path::Path::new("/nonexistent")) {
        let lines = palisade_core::diagnostic::yaml_lines(text).len().max(1);
        for d in &e.diagnostics {
            assert!(d.line <= lines + 1, "diagnostic line {} outside a {lines}-line input", d.line);
            let _ = d.to_string();
        }
    }
});
