//! Untrusted identity-provider input: Authorization/Cookie header values, form bodies (with
//! scopes and client assertions), client registrations and client certificates. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    palisade_idp::fuzzing::request(data);
});
