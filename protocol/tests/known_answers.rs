//! Known-answer vectors. They pin the key derivations, the PSK, the request
//! tag and the code format: a change to any of them breaks compatibility
//! between deployed devices and admins, so it must be deliberate (and bump
//! the protocol version).

mod common;

use common::*;
use support_protocol::approval_box::{Limits, Trust};
use support_protocol::bounded::FixedBytes;
use support_protocol::fixtures::{psk_from_inputs, Approvers, Terms};
use support_protocol::hybrid_psk::{derive_approver_psk, derive_psk, PskInputs};
use support_protocol::kem;
use support_protocol::messages::TunnelRequest;
use support_protocol::one_time_code::{OneTimeCode, OneTimeSecret};
use support_protocol::request_tag;
use support_protocol::tunnel_keys::{AdminTunnelKeys, DeviceTunnelKeys};
use support_protocol::ApprovalSeq;
use support_protocol::TunnelId;

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

#[test]
fn device_key_derivation() {
    let k = DeviceTunnelKeys::from_seed([0x01; 32]);
    let p = k.public_keys();
    assert_eq!(k.tunnel_id().to_string(), "d7c9eb69e31408ef");
    assert_eq!(
        hex(k.one_time_secret().as_bytes()),
        "7770ca9979104d06c064035d099f041f"
    );
    assert_eq!(
        hex(&p.credential),
        "b0622b8137cdcf2b548d9433db1097365abee5e0daaca0cb3967d29ca55bad1e"
    );
    assert_eq!(
        hex(&p.wireguard),
        "59e9daa01d6b9ca62573745955dc974677e78c0dbdb48e03bba4ec11ceea7609"
    );
    assert_eq!(
        hex(&kem::encapsulation_key_hash(&p.kem)),
        "6a203ba3e49b5702f1b97fe0486eabdd15b91d698ce22a7d510fd50824571277"
    );
}

#[test]
fn admin_key_derivation() {
    let k = AdminTunnelKeys::from_seed([0x02; 32]);
    assert_eq!(
        hex(&k.wireguard().public),
        "8d24359ce4fb7b03db9520bf118f47777a1d2bc0caba3a2cb1d4368ec2276760"
    );
    assert_eq!(
        hex(&k.ssh_public()),
        "77b09c9c20c70a074bc17b1bbf612a4b1afc347bc52bfae65cc26045e48ab25a"
    );
    assert_eq!(
        hex(&*k.kem_randomness()),
        "fa22e47f07a06d647cb186ab9f8e816cd43f41e43d919bf90ce31ba2ff4126c9"
    );
}

#[test]
fn one_time_code_format() {
    let code = OneTimeCode {
        tunnel_id: TunnelId(0x0123_4567_89ab_cdef),
        secret: OneTimeSecret::from_bytes(
            *b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff",
        ),
    };
    assert_eq!(
        code.to_display_string().as_str(),
        "04HMAS-W9NF6Y-Y00H48-SM8NB6-EY49KA-NVSKEY-XZR1S6"
    );
}

#[test]
fn request_tag() {
    let f = Fixture::new(1);
    // Changed when the body gained `pending_window_secs` (the tag covers it).
    assert_eq!(
        hex(&f.request.tag.0 .0),
        "2c159a667f09c5b21472a4968b49822ce9ed2bd2b8a941ca857aa5455afa69ad"
    );
}

#[test]
fn hybrid_psk() {
    let device = DeviceTunnelKeys::from_seed([0x01; 32]);
    let ek = device.public_keys().kem.0;
    let (ct, shared) = kem::encapsulate(&ek, &[0x03; 32]).expect("valid key");
    assert_eq!(
        hex(&shared),
        "d23cde9cb4dde144387aebd75c01b12608369044e0d9e7b586954a3674478730"
    );
    assert_eq!(device.kem().decapsulate(&ct), shared);
    let psk = psk_from_inputs(&PskInputs {
        one_time_secret: &device.one_time_secret(),
        kem_shared_secret: &shared,
        tunnel_id: device.tunnel_id(),
        device_wireguard: &device.wireguard().public,
        admin_wireguard: &[0x04; 32],
        kem_encapsulation_key: &ek,
        kem_ciphertext: &ct,
    });
    assert_eq!(
        hex(&*psk),
        "e6c4ff628fc9b40ed76bdb2b4d0e6d1379794b23c57125d7a440d07dbb744bc9"
    );
    // The device's path, from a checked approval carrying the same admin key
    // and ciphertext, gives the same PSK.
    let approvers = Approvers::new([0x02; 32], [0x03; 32], "alice", 0, u64::MAX / 2);
    let mut contents = Terms::new(10).contents(&ek, &AdminTunnelKeys::from_seed([0x05; 32]));
    contents.admin_wireguard = FixedBytes([0x04; 32]);
    contents.kem_ciphertext = FixedBytes(ct);
    let checked = approvers
        .seal(&contents, &device, ApprovalSeq(1), [0x09; 32])
        .open_checked(
            device.tunnel_id(),
            &device.public_keys(),
            &device.one_time_secret(),
            &Trust {
                ca_keys: &[approvers.ca_key()],
                time_floor: 0,
                accepted: None,
            },
            &Limits {
                requested_ports: &[22],
                requested_duration_secs: 3600,
                allowed_ports: &[22],
                max_duration_secs: 3600,
            },
        )
        .expect("the approval opens and is within limits");
    assert_eq!(
        hex(&*derive_psk(&checked, &device.one_time_secret(), &shared)),
        "e6c4ff628fc9b40ed76bdb2b4d0e6d1379794b23c57125d7a440d07dbb744bc9"
    );
    // And the approver's path, from the device's request as the code verified it.
    let request = TunnelRequest::new(&device, facts(), 3600, ports(&[22]), s(""));
    let verified =
        request_tag::verify(&device.one_time_secret(), &request).expect("the tag verifies");
    assert_eq!(
        hex(&*derive_approver_psk(
            &verified,
            &device.one_time_secret(),
            &shared,
            &[0x04; 32],
            &ct
        )),
        "e6c4ff628fc9b40ed76bdb2b4d0e6d1379794b23c57125d7a440d07dbb744bc9"
    );
}
