//! Arbitrary bytes into the table decoder: it must return an error or a table, never
//! panic, and any table it accepts must re-encode to the same bytes and decide.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ruleset::{Peer, PeerCert};

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = ruleset::decode(data) {
        let again = ruleset::encode(&table).expect("a decoded table re-encodes");
        assert_eq!(again, data, "decode/encode is not a bijection");
        let engine = ruleset::Engine::new(table);
        let peer = Peer::new(PeerCert::Assumed {
            identity: "spiffe://cluster.local/ns/a/sa/b".into(),
        });
        let _ = engine.evaluate(&peer);
    }
});
