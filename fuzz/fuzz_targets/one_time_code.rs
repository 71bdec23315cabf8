//! The one-time code parser: any text gives a code or an error; a code re-displays and re-parses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use support_protocol::one_time_code::OneTimeCode;

fuzz_target!(|text: &str| {
    if let Ok(code) = OneTimeCode::parse(text) {
        assert_eq!(OneTimeCode::parse(&code.to_display_string()).ok(), Some(code));
    }
});
