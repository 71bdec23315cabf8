//! The control plane's first parse of every request body: the Noise IK responder.
#![no_main]
use libfuzzer_sys::fuzz_target;
use support_protocol::control_channel::{Api, ServerKeys, StaticKeypair};

fuzz_target!(|data: &[u8]| {
    let keys = ServerKeys::new(vec![StaticKeypair::from_secret([0x51; 32])]);
    for api in [Api::Device, Api::Admin] {
        let _ = keys.accept(api, data, [7; 32]);
    }
});
