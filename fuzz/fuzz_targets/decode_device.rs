//! The device API's decoders (what the control plane parses from devices and vice versa).
#![no_main]
use libfuzzer_sys::fuzz_target;
use support_protocol::messages::{DeviceCall, DeviceReply};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = support_protocol::decode::<DeviceCall>(data) {
        // Whatever decodes re-encodes to the same bytes (one encoding per message).
        assert_eq!(support_protocol::encode(&m).ok().as_deref(), Some(data));
    }
    if let Ok(m) = support_protocol::decode::<DeviceReply>(data) {
        assert_eq!(support_protocol::encode(&m).ok().as_deref(), Some(data));
    }
});
