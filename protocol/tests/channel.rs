//! The Noise IK control channel: authentication, rotation, tampering, replay.

use support_protocol::control_channel::{Api, ChannelError, ClientCall, ServerKeys, StaticKeypair};

fn server() -> (ServerKeys, StaticKeypair) {
    let k = StaticKeypair::from_secret([0x51; 32]);
    (ServerKeys::new(vec![k.clone()]), k)
}

#[test]
fn a_call_and_its_answer_round_trip_and_the_server_learns_the_client_key() {
    let (keys, server_key) = server();
    let client = StaticKeypair::from_secret([0xc1; 32]);
    let (call, body) =
        ClientCall::start(Api::Device, &client, &server_key.public, [1; 32], b"hello")
            .expect("starts");
    let incoming = keys.accept(Api::Device, &body, [2; 32]).expect("accepts");
    assert_eq!(incoming.call, b"hello");
    assert_eq!(incoming.client_public, client.public);
    let answer = incoming.respond(b"world").expect("responds");
    assert_eq!(call.finish(&answer).expect("finishes"), b"world");
}

#[test]
fn nothing_confidential_travels_in_clear_and_the_first_message_hides_the_call() {
    let (_, server_key) = server();
    let client = StaticKeypair::from_secret([0xc1; 32]);
    let secret_looking = b"a payload that should not appear in clear";
    let (_, body) = ClientCall::start(
        Api::Admin,
        &client,
        &server_key.public,
        [1; 32],
        secret_looking,
    )
    .expect("starts");
    assert!(!body
        .windows(16)
        .any(|w| secret_looking.windows(16).any(|s| s == w)));
    assert!(
        !body.windows(32).any(|w| w == client.public),
        "the client's static key is encrypted"
    );
}

#[test]
fn an_answer_forged_by_anyone_but_the_server_is_refused() {
    let (_, server_key) = server();
    let impostor = ServerKeys::new(vec![StaticKeypair::from_secret([0x66; 32])]);
    let client = StaticKeypair::from_secret([0xc1; 32]);
    let (_, body) =
        ClientCall::start(Api::Device, &client, &server_key.public, [1; 32], b"x").expect("starts");
    // The impostor does not hold the key the call names.
    assert!(matches!(
        impostor.accept(Api::Device, &body, [3; 32]),
        Err(ChannelError::UnknownServerKey)
    ));
    // Even if it claims the key id, it cannot decrypt.
    let mut claimed = body.clone();
    claimed[2..10].copy_from_slice(&support_protocol::control_channel::key_id(
        &impostor.public_keys().next().copied().unwrap_or_default(),
    ));
    assert!(matches!(
        impostor.accept(Api::Device, &claimed, [3; 32]),
        Err(ChannelError::Handshake)
    ));
}

#[test]
fn flipping_any_byte_of_a_call_or_answer_is_detected() {
    let (keys, server_key) = server();
    let client = StaticKeypair::from_secret([0xc1; 32]);
    let (_, body) = ClientCall::start(Api::Device, &client, &server_key.public, [1; 32], b"call")
        .expect("starts");
    for i in 0..body.len() {
        let mut b = body.clone();
        b[i] ^= 0x04;
        match keys.accept(Api::Device, &b, [2; 32]) {
            Err(_) => {}
            Ok(inc) => panic!("byte {i} flipped still accepted: {:?}", inc.call),
        }
    }
    let incoming = keys.accept(Api::Device, &body, [2; 32]).expect("accepts");
    let answer = incoming.respond(b"answer").expect("responds");
    for i in 0..answer.len() {
        let (call, _) =
            ClientCall::start(Api::Device, &client, &server_key.public, [1; 32], b"call")
                .expect("starts");
        let mut a = answer.clone();
        a[i] ^= 0x04;
        let refused = call.finish(&a).err();
        assert!(
            matches!(
                refused,
                Some(ChannelError::Handshake | ChannelError::UnsupportedVersion(_))
            ),
            "answer byte {i} flipped: {refused:?}"
        );
    }
}

#[test]
fn rotation_serves_old_and_new_keys_side_by_side() {
    let old = StaticKeypair::from_secret([0x01; 32]);
    let new = StaticKeypair::from_secret([0x02; 32]);
    let keys = ServerKeys::new(vec![new.clone(), old.clone()]);
    let client = StaticKeypair::from_secret([0xc1; 32]);
    for k in [&old, &new] {
        let (call, body) =
            ClientCall::start(Api::Device, &client, &k.public, [7; 32], b"x").expect("starts");
        let answer = keys
            .accept(Api::Device, &body, [8; 32])
            .expect("accepts")
            .respond(b"y")
            .expect("responds");
        assert_eq!(call.finish(&answer).expect("finishes"), b"y");
    }
    let retired = ServerKeys::new(vec![new]);
    let (_, body) =
        ClientCall::start(Api::Device, &client, &old.public, [7; 32], b"x").expect("starts");
    assert!(matches!(
        retired.accept(Api::Device, &body, [8; 32]),
        Err(ChannelError::UnknownServerKey)
    ));
}

#[test]
fn a_device_call_replayed_to_the_admin_api_is_refused() {
    let (keys, server_key) = server();
    let client = StaticKeypair::from_secret([0xc1; 32]);
    let (_, body) =
        ClientCall::start(Api::Device, &client, &server_key.public, [1; 32], b"x").expect("starts");
    assert!(matches!(
        keys.accept(Api::Admin, &body, [2; 32]),
        Err(ChannelError::WrongApi)
    ));
    let mut relabelled = body.clone();
    relabelled[1] = Api::Admin as u8;
    assert!(matches!(
        keys.accept(Api::Admin, &relabelled, [2; 32]),
        Err(ChannelError::Handshake)
    ));
}

#[test]
fn a_replayed_call_decrypts_again_but_its_answer_is_useless_to_the_replayer() {
    // Noise IK's first message is replayable (the protocol's calls are
    // idempotent for that reason); the answer to a replay is encrypted to the
    // original client's ephemeral, which the replayer does not have.
    let (keys, server_key) = server();
    let client = StaticKeypair::from_secret([0xc1; 32]);
    let (original, body) =
        ClientCall::start(Api::Device, &client, &server_key.public, [1; 32], b"x").expect("starts");
    let first = keys
        .accept(Api::Device, &body, [2; 32])
        .expect("accepts")
        .respond(b"secret answer")
        .expect("responds");
    let replay = keys
        .accept(Api::Device, &body, [3; 32])
        .expect("a replay decrypts");
    assert_eq!(replay.client_public, client.public);
    let second = replay.respond(b"secret answer").expect("responds");
    assert_ne!(first, second, "each answer uses a fresh server ephemeral");
    assert!(!second.windows(13).any(|w| w == b"secret answer"));
    assert_eq!(
        original.finish(&first).expect("original finishes"),
        b"secret answer"
    );
}

#[test]
fn hostile_framing_gets_errors_not_panics() {
    let (keys, _) = server();
    assert_eq!(
        keys.accept(Api::Device, &[], [0; 32]).err(),
        Some(ChannelError::Truncated)
    );
    assert_eq!(
        keys.accept(Api::Device, &[9; 20], [0; 32]).err(),
        Some(ChannelError::UnsupportedVersion(9))
    );
    let mut big = vec![1u8, 1];
    big.extend(std::iter::repeat_n(0u8, 70_000));
    assert_eq!(
        keys.accept(Api::Device, &big, [0; 32]).err(),
        Some(ChannelError::TooLarge)
    );
    for len in 0..200 {
        let mut b = vec![1u8, 1];
        b.extend((0..len).map(|i| i as u8));
        let refused = keys.accept(Api::Device, &b, [0; 32]).err();
        assert!(
            matches!(
                refused,
                Some(
                    ChannelError::Truncated
                        | ChannelError::UnknownServerKey
                        | ChannelError::Handshake
                )
            ),
            "{len} bytes of garbage: {refused:?}"
        );
    }
}
