//! The device's approval check on hostile boxes: decode, verify, open.
#![no_main]
use libfuzzer_sys::fuzz_target;
use support_protocol::approval_box::{SealedApproval, Trust};
use support_protocol::tunnel_keys::DeviceTunnelKeys;

fuzz_target!(|data: &[u8]| {
    let Ok(sealed) = support_protocol::decode::<SealedApproval>(data) else { return };
    let device = DeviceTunnelKeys::from_seed([1; 32]);
    let ca = [[0xca; 32]];
    let trust = Trust { ca_keys: &ca, time_floor: 0, accepted: None };
    // The fuzzer cannot forge a signature, so this must never succeed.
    assert!(sealed.open(device.tunnel_id(), &device.public_keys(), &device.one_time_secret(), &trust).is_err());
});
