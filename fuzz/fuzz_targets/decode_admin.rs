//! The admin API's decoders.
#![no_main]
use libfuzzer_sys::fuzz_target;
use support_protocol::messages::{AdminCall, AdminReply};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = support_protocol::decode::<AdminCall>(data) {
        assert_eq!(support_protocol::encode(&m).ok().as_deref(), Some(data));
    }
    if let Ok(m) = support_protocol::decode::<AdminReply>(data) {
        assert_eq!(support_protocol::encode(&m).ok().as_deref(), Some(data));
    }
});
