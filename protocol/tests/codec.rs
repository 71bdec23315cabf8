//! Every message round-trips; hostile bytes to every decoder give an error,
//! never a panic, and never an allocation beyond the message limit.

use proptest::prelude::*;
use support_protocol::approval_box::{ApprovalContents, SealedApproval};
use support_protocol::audit::AuditRecord;
use support_protocol::certificate::ApproverCertificate;
use support_protocol::codec::{
    decode, encode, CodecError, Message, MAX_MESSAGE_LEN, PROTOCOL_VERSION,
};
use support_protocol::connected_report::{ConnectedReport, SealedReport};
use support_protocol::messages::{AdminCall, AdminReply, DeviceCall, DeviceReply, TunnelRequest};

fn round_trip<M: Message + PartialEq + core::fmt::Debug>(m: &M) -> Result<(), TestCaseError> {
    let bytes = encode(m).map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    prop_assert_eq!(bytes[0], PROTOCOL_VERSION);
    prop_assert_eq!(bytes[1], M::KIND);
    let back: M = decode(&bytes).map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    prop_assert_eq!(&back, m);
    // Every strict prefix is an error, not a panic.
    for cut in 0..bytes.len() {
        // Too short for the envelope, or cut inside the body: never a
        // success, never another kind of error.
        let refused = decode::<M>(&bytes[..cut]);
        prop_assert!(
            matches!(
                refused,
                Err(CodecError::Empty | CodecError::Malformed { .. })
            ),
            "prefix of {} bytes: {:?}",
            cut,
            refused.err()
        );
    }
    // A trailing byte is refused: one message, one encoding.
    let mut longer = bytes.clone();
    longer.push(0);
    prop_assert_eq!(
        decode::<M>(&longer),
        Err(CodecError::TrailingBytes { count: 1 })
    );
    Ok(())
}

macro_rules! round_trip_tests {
    ($($name:ident: $ty:ty,)*) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
            $(
                #[test]
                fn $name(m in any::<$ty>()) { round_trip(&m)?; }
            )*
        }
    };
}

round_trip_tests! {
    tunnel_request_round_trips: TunnelRequest,
    certificate_round_trips: ApproverCertificate,
    approval_contents_round_trip: ApprovalContents,
    sealed_approval_round_trips: SealedApproval,
    connected_report_round_trips: ConnectedReport,
    sealed_report_round_trips: SealedReport,
    audit_record_round_trips: AuditRecord,
    device_call_round_trips: DeviceCall,
    device_reply_round_trips: DeviceReply,
    admin_call_round_trips: AdminCall,
    admin_reply_round_trips: AdminReply,
}

/// Feeds `bytes` to every decoder; none may panic.
fn decode_all(bytes: &[u8]) {
    let _ = decode::<TunnelRequest>(bytes);
    let _ = decode::<ApproverCertificate>(bytes);
    let _ = decode::<ApprovalContents>(bytes);
    let _ = decode::<SealedApproval>(bytes);
    let _ = decode::<ConnectedReport>(bytes);
    let _ = decode::<SealedReport>(bytes);
    let _ = decode::<AuditRecord>(bytes);
    let _ = decode::<DeviceCall>(bytes);
    let _ = decode::<DeviceReply>(bytes);
    let _ = decode::<AdminCall>(bytes);
    let _ = decode::<AdminReply>(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_any_decoder(body in proptest::collection::vec(any::<u8>(), 0..512), kind in 0u8..0x30) {
        let mut bytes = vec![PROTOCOL_VERSION, kind];
        bytes.extend(body);
        decode_all(&bytes);
    }

    #[test]
    fn mutated_valid_messages_never_panic(m in any::<AdminReply>(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut bytes = encode(&m).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (pos, x) in flips {
            let i = pos % bytes.len();
            bytes[i] ^= x;
        }
        decode_all(&bytes);
    }
}

#[test]
fn oversize_input_is_refused_before_parsing() {
    let mut big = vec![PROTOCOL_VERSION, TunnelRequest::KIND];
    big.resize(MAX_MESSAGE_LEN + 1, 0);
    assert_eq!(
        decode::<TunnelRequest>(&big),
        Err(CodecError::TooLarge {
            len: MAX_MESSAGE_LEN + 1,
            max: MAX_MESSAGE_LEN
        })
    );
}

#[test]
fn unknown_versions_and_kinds_are_refused_with_a_clear_error() {
    let e = decode::<DeviceCall>(&[2, DeviceCall::KIND, 0]).expect_err("version 2 refused");
    assert_eq!(
        e,
        CodecError::UnsupportedVersion {
            got: 2,
            supported: 1
        }
    );
    assert!(e.to_string().contains("version 2 is not supported"));
    let e = decode::<DeviceCall>(&[PROTOCOL_VERSION, AdminCall::KIND, 0])
        .expect_err("wrong kind refused");
    assert!(matches!(e, CodecError::WrongKind { .. }));
    assert_eq!(decode::<DeviceCall>(&[]), Err(CodecError::Empty));
}

#[test]
fn a_length_prefix_claiming_more_than_the_bound_is_refused_without_allocating_it() {
    // An admin reply with a list claiming u32::MAX tunnels: the bound stops it.
    // Layout: request id (varint u64) | Result::Ok (0) | AdminResponse::List (0) | vec len varint.
    let mut bytes = vec![PROTOCOL_VERSION, AdminReply::KIND, 1, 0, 0];
    bytes.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(
        decode::<AdminReply>(&bytes),
        Err(CodecError::Malformed { .. })
    ));
    // A string claiming 4 GiB.
    let mut bytes = vec![PROTOCOL_VERSION, AdminCall::KIND, 1, 3, 0];
    bytes.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(
        decode::<AdminCall>(&bytes),
        Err(CodecError::Malformed { .. })
    ));
}

#[test]
fn text_with_terminal_escapes_is_refused() {
    use support_protocol::bounded::BoundError;
    use support_protocol::bounded::BoundedString;
    assert_eq!(
        BoundedString::<64>::new("host\u{1b}[2Jname").err(),
        Some(BoundError::ControlCharacter)
    );
    assert!(BoundedString::<64>::new("plain-host").is_ok());
    // Bidi overrides and zero-width characters would let a hostname display as another.
    assert_eq!(
        BoundedString::<64>::new("amplipi\u{202E}txt.exe").err(),
        Some(BoundError::ControlCharacter)
    );
    assert_eq!(
        BoundedString::<64>::new("amp\u{200B}lipi").err(),
        Some(BoundError::ControlCharacter)
    );
    assert!(BoundedString::<64>::new("Küche-Pi").is_ok());
    assert_eq!(
        BoundedString::<4>::new("toolong").err(),
        Some(BoundError::TooLong { len: 7, max: 4 })
    );
}

#[test]
fn padded_varints_are_refused_so_each_message_has_one_encoding() {
    // Found by the decode_admin fuzz target: request id 122 as [0xfa, 0x00] instead of [0x7a].
    let canonical = [PROTOCOL_VERSION, AdminCall::KIND, 0x7a, 1, 1];
    let padded = [PROTOCOL_VERSION, AdminCall::KIND, 0xfa, 0x00, 1, 1];
    assert!(decode::<AdminCall>(&canonical).is_ok());
    assert_eq!(
        decode::<AdminCall>(&padded),
        Err(CodecError::NonCanonical {
            message: "admin call"
        })
    );
}
