//! Arbitrary bytes as `connection.peer_certificate`: the filter's parser must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ruleset::cert::peer_cert_from_pem(data);
});
