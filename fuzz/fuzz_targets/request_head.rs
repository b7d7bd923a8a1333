//! Raw client bytes through the gateway's request-head handling: the smuggling tracker
//! (fed in two pieces), host normalization and header rules. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_proxy::fuzzing::request_head(data);
});
