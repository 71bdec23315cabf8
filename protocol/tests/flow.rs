//! The whole cryptographic flow, end to end, and what each check refuses.

mod common;

use common::*;
use support_protocol::approval_box::{ApprovalError, LimitError, Limits, Trust};
use support_protocol::bounded::{BoundedVec, FixedBytes};
use support_protocol::certificate::{CertificateError, Role, SigningSeed, SupportCa};
use support_protocol::connected_report::{ConnectedReport, ReportError};
use support_protocol::fixtures::psk_from_inputs;
use support_protocol::hybrid_psk::{derive_approver_psk, derive_psk, PskInputs};
use support_protocol::ids::ApprovalSeq;
use support_protocol::one_time_code::OneTimeCode;
use support_protocol::request_tag::{self, TagMismatch};
use support_protocol::TunnelId;

fn trust<'a>(cas: &'a [[u8; 32]]) -> Trust<'a> {
    Trust {
        ca_keys: cas,
        time_floor: NOW - 10 * DAY,
        accepted: None,
    }
}

#[test]
fn request_code_approve_open_and_both_sides_derive_the_same_psk() {
    let f = Fixture::new(1);
    // The admin parses the code the owner read out, and verifies the request.
    let code = OneTimeCode::parse(&f.code.to_display_string()).expect("code parses");
    assert_eq!(code.tunnel_id, f.request.body.tunnel_id);
    let verified = request_tag::verify(&code.secret, &f.request).expect("tag verifies");
    assert_eq!(verified.request(), &f.request);
    assert_eq!(verified.tunnel_id(), code.tunnel_id);

    let sealed = f.seal(1);
    let cas = [f.ca.0.public()];
    let checked = sealed
        .open_checked(
            f.device.tunnel_id(),
            &f.device.public_keys(),
            &f.device.one_time_secret(),
            &trust(&cas),
            &Limits {
                requested_ports: &[22, 80],
                requested_duration_secs: 24 * 3600,
                allowed_ports: &[22, 80, 443],
                max_duration_secs: 7 * 24 * 3600,
            },
        )
        .expect("device opens the approval and it is within limits");
    assert_eq!(checked.contents(), &f.contents);
    assert_eq!(checked.seq(), ApprovalSeq(1));
    assert_eq!(checked.box_hash(), sealed.hash());

    // Device side PSK: decapsulate, from the checked approval. Admin side
    // PSK: from its own encapsulation and the contents it wrote.
    let device_shared = f.device.kem().decapsulate(&checked.kem_ciphertext.0);
    let (_, admin_shared) =
        support_protocol::kem::encapsulate(&f.request.body.kem.0, &f.admin.kem_randomness())
            .expect("encapsulates");
    assert_eq!(device_shared, admin_shared);
    let device_psk = derive_psk(&checked, &f.device.one_time_secret(), &device_shared);
    let admin_psk = derive_approver_psk(
        &verified,
        &code.secret,
        &admin_shared,
        &f.admin.wireguard().public,
        &f.contents.kem_ciphertext.0,
    );
    assert_eq!(*device_psk, *admin_psk);

    // The device reports connected; the admin opens the report bound to its box.
    let report = ConnectedReport {
        accepted_box: FixedBytes(sealed.hash()),
        host_keys: BoundedVec::new(vec![s("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOvF host")])
            .expect("fits"),
    };
    let sealed_report = report
        .seal(
            f.code.tunnel_id,
            ApprovalSeq(1),
            &f.device.one_time_secret(),
            [9; 32],
        )
        .expect("fits");
    let got = sealed_report
        .open(
            f.code.tunnel_id,
            ApprovalSeq(1),
            &code.secret,
            &sealed.hash(),
        )
        .expect("report opens");
    assert_eq!(got, report);
    assert_eq!(
        sealed_report.open(
            f.code.tunnel_id,
            ApprovalSeq(1),
            &code.secret,
            &f.seal(2).hash()
        ),
        Err(ReportError::OtherApproval)
    );
    assert_eq!(
        sealed_report.open(TunnelId(1), ApprovalSeq(1), &code.secret, &sealed.hash()),
        Err(ReportError::Unopenable)
    );
}

#[test]
fn psk_changes_with_every_input() {
    let f = Fixture::new(2);
    let (ct, shared) =
        support_protocol::kem::encapsulate(&f.request.body.kem.0, &[5; 32]).expect("encapsulates");
    let base = PskInputs {
        one_time_secret: &f.code.secret,
        kem_shared_secret: &shared,
        tunnel_id: f.code.tunnel_id,
        device_wireguard: &[1; 32],
        admin_wireguard: &[2; 32],
        kem_encapsulation_key: &f.request.body.kem.0,
        kem_ciphertext: &ct,
    };
    let psk = *psk_from_inputs(&base);
    let other_secret = support_protocol::one_time_code::OneTimeSecret::from_bytes([0; 16]);
    let mut other_ct = ct;
    other_ct[0] ^= 1;
    let mut other_ek = f.request.body.kem.0;
    other_ek[0] ^= 1;
    let variants = [
        PskInputs {
            one_time_secret: &other_secret,
            ..base
        },
        PskInputs {
            kem_shared_secret: &[0; 32],
            ..base
        },
        PskInputs {
            tunnel_id: TunnelId(f.code.tunnel_id.0 ^ 1),
            ..base
        },
        PskInputs {
            device_wireguard: &[3; 32],
            ..base
        },
        PskInputs {
            admin_wireguard: &[3; 32],
            ..base
        },
        PskInputs {
            kem_encapsulation_key: &other_ek,
            ..base
        },
        PskInputs {
            kem_ciphertext: &other_ct,
            ..base
        },
    ];
    for (i, v) in variants.iter().enumerate() {
        assert_ne!(
            *psk_from_inputs(v),
            psk,
            "input {i} does not change the PSK"
        );
    }
}

#[test]
fn a_control_plane_that_alters_the_request_is_caught_by_the_tag() {
    let f = Fixture::new(3);
    let secret = &f.code.secret;
    let mut r = f.request.clone();
    r.body.ports = ports(&[22, 80, 8080]);
    assert_eq!(request_tag::verify(secret, &r), Err(TagMismatch), "ports");
    let mut r = f.request.clone();
    r.body.duration_secs += 1;
    assert_eq!(
        request_tag::verify(secret, &r),
        Err(TagMismatch),
        "duration"
    );
    let mut r = f.request.clone();
    r.body.facts.hostname = s("evil");
    assert_eq!(request_tag::verify(secret, &r), Err(TagMismatch), "facts");
    let mut r = f.request.clone();
    r.body.wireguard.0[5] ^= 1;
    assert_eq!(
        request_tag::verify(secret, &r),
        Err(TagMismatch),
        "wireguard key"
    );
    let mut r = f.request.clone();
    r.body.credential.0[5] ^= 1;
    assert_eq!(
        request_tag::verify(secret, &r),
        Err(TagMismatch),
        "credential"
    );
    let mut r = f.request.clone();
    r.body.kem.0[1000] ^= 1;
    assert_eq!(request_tag::verify(secret, &r), Err(TagMismatch), "kem key");
    let mut r = f.request.clone();
    r.body.tunnel_id = TunnelId(r.body.tunnel_id.0 ^ 1);
    assert_eq!(
        request_tag::verify(secret, &r),
        Err(TagMismatch),
        "tunnel id"
    );
    // Every byte of the tag itself.
    for i in 0..32 {
        let mut r = f.request.clone();
        r.tag.0 .0[i] ^= 0x01;
        assert_eq!(
            request_tag::verify(secret, &r),
            Err(TagMismatch),
            "tag byte {i}"
        );
    }
    // Another tunnel's code does not verify this request.
    let other = Fixture::new(4);
    assert_eq!(
        request_tag::verify(&other.code.secret, &f.request),
        Err(TagMismatch)
    );
    // The unaltered request verifies (so the refusals above are about the change).
    assert_eq!(
        request_tag::verify(secret, &f.request).map(|v| v.into_request()),
        Ok(f.request.clone())
    );
}

#[test]
fn flipping_any_byte_of_the_sealed_approval_makes_the_device_refuse_it() {
    let f = Fixture::new(5);
    let sealed = f.seal(1);
    let cas = [f.ca.0.public()];
    let open = |s: &support_protocol::approval_box::SealedApproval| {
        s.open(
            f.device.tunnel_id(),
            &f.device.public_keys(),
            &f.device.one_time_secret(),
            &trust(&cas),
        )
    };
    assert!(open(&sealed).is_ok());
    let bytes = support_protocol::encode(&sealed).expect("encodes");
    // Flips that still decode must be refused by `open`; those that do not
    // decode are refused by the codec. Both kinds are counted, so a codec
    // that refused everything (and left `open` untested) fails below.
    let (mut opened_and_refused, mut undecodable) = (0usize, 0usize);
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= bit;
            match support_protocol::decode::<support_protocol::approval_box::SealedApproval>(&b) {
                Ok(s) => {
                    let refusal = open(&s).err();
                    assert!(refusal.is_some(), "byte {i} bit {bit:#x} accepted");
                    opened_and_refused += 1;
                }
                Err(_) => undecodable += 1,
            }
        }
    }
    assert_eq!(opened_and_refused + undecodable, bytes.len() * 2);
    // The sealed box and signature are fixed-size bytes: nearly every flip
    // there still decodes, and it is `open` that must refuse it.
    assert!(
        opened_and_refused > bytes.len(),
        "only {opened_and_refused} of {} flips reached open()",
        bytes.len() * 2
    );
}

#[test]
fn an_uncertified_key_another_ca_a_viewer_or_an_expired_certificate_cannot_approve() {
    let f = Fixture::new(6);
    let cas = [f.ca.0.public()];
    let open = |s: &support_protocol::approval_box::SealedApproval| {
        s.open(
            f.device.tunnel_id(),
            &f.device.public_keys(),
            &f.device.one_time_secret(),
            &trust(&cas),
        )
    };

    // A key whose certificate names another key (the attacker has the code, a
    // valid certificate of someone else, and their own key).
    let mallory = SigningSeed::new([0x66; 32]);
    let s1 = f.seal_with(1, &f.contents, &mallory, &f.certificate);
    assert_eq!(open(&s1), Err(ApprovalError::BadSignature));

    // Certified by another CA the device does not pin.
    let rogue_ca = SupportCa(SigningSeed::new([0x99; 32]));
    let rogue_cert = rogue_ca.certify(
        s("mallory"),
        mallory.public(),
        Role::Approver,
        1,
        NOW - DAY,
        NOW + DAY,
    );
    let s2 = f.seal_with(1, &f.contents, &mallory, &rogue_cert);
    assert_eq!(
        open(&s2),
        Err(ApprovalError::Certificate(CertificateError::UnknownIssuer))
    );

    // A certificate claiming the pinned issuer but signed by the rogue CA.
    let mut forged = rogue_cert.clone();
    forged.body.issuer = FixedBytes(f.ca.0.public());
    let s3 = f.seal_with(1, &f.contents, &mallory, &forged);
    assert_eq!(
        open(&s3),
        Err(ApprovalError::Certificate(CertificateError::BadSignature))
    );

    // A viewer certificate.
    let viewer = f.ca.certify(
        s("bob"),
        mallory.public(),
        Role::Viewer,
        2,
        NOW - DAY,
        NOW + DAY,
    );
    let s4 = f.seal_with(1, &f.contents, &mallory, &viewer);
    assert!(matches!(
        open(&s4),
        Err(ApprovalError::Certificate(
            CertificateError::WrongRole { .. }
        ))
    ));

    // Expired before the device's time floor.
    let s5 = sealed_under_an_expired_certificate(&f, &mallory);
    assert!(matches!(
        open(&s5),
        Err(ApprovalError::Certificate(CertificateError::Expired { .. }))
    ));

    // Issued outside the certificate's window.
    let mut c = f.contents.clone();
    c.issued_at = NOW + 365 * DAY;
    let s6 = f.seal_with(1, &c, &f.approver_key, &f.certificate);
    assert!(matches!(
        open(&s6),
        Err(ApprovalError::Certificate(
            CertificateError::IssuedOutsideValidity { .. }
        ))
    ));
}

/// Carol's approval, signed with `key`: her certificate was valid from 100
/// to 20 days before NOW, and she issued the approval (by her clock) 30
/// days before NOW, inside it.
fn sealed_under_an_expired_certificate(
    f: &Fixture,
    key: &SigningSeed,
) -> support_protocol::approval_box::SealedApproval {
    let old = f.ca.certify(
        s("carol"),
        key.public(),
        Role::Approver,
        3,
        NOW - 100 * DAY,
        NOW - 20 * DAY,
    );
    let mut c = f.contents.clone();
    c.issued_at = NOW - 30 * DAY;
    f.seal_with(1, &c, key, &old)
}

#[test]
fn the_control_plane_checks_the_signer_by_its_own_clock_without_the_secret() {
    let f = Fixture::new(8);
    let cas = [f.ca.0.public()];
    let check = |s: &support_protocol::approval_box::SealedApproval, now: u64| {
        s.verify_signer(f.device.tunnel_id(), &f.device.public_keys(), &cas, now)
            .map(String::from)
    };
    let good = f.seal(1);
    assert_eq!(
        check(&good, NOW),
        Ok(f.certificate.body.name.as_str().to_string())
    );

    // Expired by the checker's clock, whatever the approver's clock said:
    // issued (by the approver's clock) inside the window.
    let mallory = SigningSeed::new([0x67; 32]);
    let expired = sealed_under_an_expired_certificate(&f, &mallory);
    assert!(matches!(
        check(&expired, NOW),
        Err(ApprovalError::Certificate(CertificateError::Expired { .. }))
    ));
    // Not valid yet.
    assert!(matches!(
        check(&good, f.certificate.body.not_before - 1),
        Err(ApprovalError::Certificate(
            CertificateError::NotYetValid { .. }
        ))
    ));
    // Another CA, another tunnel's device keys, a key the certificate does not name.
    assert!(matches!(
        good.verify_signer(
            f.device.tunnel_id(),
            &f.device.public_keys(),
            &[[7; 32]],
            NOW
        ),
        Err(ApprovalError::Certificate(CertificateError::UnknownIssuer))
    ));
    let other = Fixture::new(9);
    assert_eq!(
        good.verify_signer(f.device.tunnel_id(), &other.device.public_keys(), &cas, NOW),
        Err(ApprovalError::BadSignature)
    );
    let forged = f.seal_with(1, &f.contents, &mallory, &f.certificate);
    assert_eq!(check(&forged, NOW), Err(ApprovalError::BadSignature));
}

#[test]
fn a_wrong_device_clock_does_not_matter_only_the_time_floor_does() {
    let f = Fixture::new(7);
    let cas = [f.ca.0.public()];
    let sealed = f.seal(1);
    // A device that booted at 1970 has a time floor from its build; it still accepts.
    for floor in [0, NOW - 80 * DAY, NOW + 89 * DAY] {
        let t = Trust {
            ca_keys: &cas,
            time_floor: floor,
            accepted: None,
        };
        assert!(sealed
            .open(
                f.device.tunnel_id(),
                &f.device.public_keys(),
                &f.device.one_time_secret(),
                &t
            )
            .is_ok());
    }
    let t = Trust {
        ca_keys: &cas,
        time_floor: NOW + 91 * DAY,
        accepted: None,
    };
    assert!(matches!(
        sealed.open(
            f.device.tunnel_id(),
            &f.device.public_keys(),
            &f.device.one_time_secret(),
            &t
        ),
        Err(ApprovalError::Certificate(CertificateError::Expired { .. }))
    ));
}

#[test]
fn an_approval_for_another_tunnel_or_an_older_one_is_refused() {
    let f = Fixture::new(8);
    let other = Fixture::new(9);
    let cas = [f.ca.0.public()];
    // other's approval, presented to f's device (a control plane swapping
    // boxes): the signature binds the tunnel, so it fails before decryption.
    let foreign = other.seal(1);
    assert_eq!(
        foreign.open(
            f.device.tunnel_id(),
            &f.device.public_keys(),
            &f.device.one_time_secret(),
            &trust(&cas)
        ),
        Err(ApprovalError::BadSignature)
    );
    // A box relabelled with another sequence number does not open either.
    let mut relabelled = f.seal(1);
    relabelled.approval_seq = ApprovalSeq(5);
    assert_eq!(
        relabelled.open(
            f.device.tunnel_id(),
            &f.device.public_keys(),
            &f.device.one_time_secret(),
            &trust(&cas)
        ),
        Err(ApprovalError::BadSignature)
    );
    // Replaying approval 2 after 3 was accepted.
    let t = Trust {
        accepted: Some(ApprovalSeq(3)),
        ..trust(&cas)
    };
    for seq in [1, 2, 3] {
        assert_eq!(
            f.seal(seq).open(
                f.device.tunnel_id(),
                &f.device.public_keys(),
                &f.device.one_time_secret(),
                &t
            ),
            Err(ApprovalError::NotNewer {
                got: ApprovalSeq(seq),
                accepted: ApprovalSeq(3)
            })
        );
    }
    assert!(f
        .seal(4)
        .open(
            f.device.tunnel_id(),
            &f.device.public_keys(),
            &f.device.one_time_secret(),
            &t
        )
        .is_ok());
    // A swapped device key in the binding (a control plane that swapped the
    // request's keys and re-served the approval) fails to open.
    let mut keys = f.device.public_keys();
    keys.wireguard[0] ^= 1;
    assert_eq!(
        f.seal(1).open(
            f.device.tunnel_id(),
            &keys,
            &f.device.one_time_secret(),
            &trust(&cas)
        ),
        Err(ApprovalError::BadSignature)
    );
}

#[test]
fn limits_refuse_ports_and_durations_beyond_request_or_config() {
    let f = Fixture::new(10);
    let mut c = f.contents.clone();
    assert!(c.check_limits(&[22], 3600, &[22], 3600).is_ok());
    c.ports = ports(&[22, 80]);
    assert_eq!(
        c.check_limits(&[22], 3600, &[22, 80], 3600),
        Err(LimitError::PortNotAllowed(80))
    );
    assert_eq!(
        c.check_limits(&[22, 80], 3600, &[22], 3600),
        Err(LimitError::PortNotAllowed(80))
    );
    c.ports = ports(&[]);
    assert_eq!(
        c.check_limits(&[22], 3600, &[22], 3600),
        Err(LimitError::NoPorts)
    );
    c.ports = ports(&[22]);
    assert!(matches!(
        c.check_limits(&[22], 3599, &[22], 7200),
        Err(LimitError::DurationNotAllowed { .. })
    ));
    assert!(matches!(
        c.check_limits(&[22], 7200, &[22], 3599),
        Err(LimitError::DurationNotAllowed { .. })
    ));
    c.duration_secs = 0;
    assert!(matches!(
        c.check_limits(&[22], 7200, &[22], 7200),
        Err(LimitError::DurationNotAllowed { .. })
    ));
    c.duration_secs = 60;
    c.addresses.admin = c.addresses.device;
    assert_eq!(
        c.check_limits(&[22], 7200, &[22], 7200),
        Err(LimitError::BadAddresses)
    );
}

#[test]
fn only_an_approval_that_opens_and_is_within_limits_becomes_a_checked_approval() {
    let f = Fixture::new(12);
    let cas = [f.ca.0.public()];
    let sealed = f.seal(1);
    let check = |trust: &Trust<'_>, limits: &Limits<'_>| {
        sealed
            .open_checked(
                f.device.tunnel_id(),
                &f.device.public_keys(),
                &f.device.one_time_secret(),
                trust,
                limits,
            )
            .map(|c| (c.seq(), c.duration_secs))
    };
    let within = Limits {
        requested_ports: &[22],
        requested_duration_secs: 3600,
        allowed_ports: &[22],
        max_duration_secs: 3600,
    };
    assert_eq!(check(&trust(&cas), &within), Ok((ApprovalSeq(1), 3600)));
    assert_eq!(
        check(
            &trust(&cas),
            &Limits {
                allowed_ports: &[80],
                ..within
            }
        ),
        Err(ApprovalError::Limits(LimitError::PortNotAllowed(22)))
    );
    assert_eq!(
        check(
            &trust(&cas),
            &Limits {
                requested_duration_secs: 600,
                ..within
            }
        ),
        Err(ApprovalError::Limits(LimitError::DurationNotAllowed {
            approved: 3600,
            max: 600
        }))
    );
    // The box is checked before its terms: a replayed approval is refused as
    // not newer, whatever it asks for.
    let replayed = Trust {
        accepted: Some(ApprovalSeq(1)),
        ..trust(&cas)
    };
    assert_eq!(
        check(
            &replayed,
            &Limits {
                allowed_ports: &[80],
                ..within
            }
        ),
        Err(ApprovalError::NotNewer {
            got: ApprovalSeq(1),
            accepted: ApprovalSeq(1)
        })
    );
}

#[test]
fn device_keys_are_distinct_and_deterministic() {
    let a = support_protocol::tunnel_keys::DeviceTunnelKeys::from_seed([1; 32]);
    let b = support_protocol::tunnel_keys::DeviceTunnelKeys::from_seed([1; 32]);
    let c = support_protocol::tunnel_keys::DeviceTunnelKeys::from_seed([2; 32]);
    assert_eq!(a.public_keys(), b.public_keys());
    assert_ne!(a.public_keys(), c.public_keys());
    assert_ne!(a.tunnel_id(), c.tunnel_id());
    let p = a.public_keys();
    assert_ne!(p.credential, p.wireguard);
    assert_ne!(a.credential().secret(), &*a.wireguard().secret);
}

#[test]
fn a_certified_approver_without_the_code_cannot_make_a_box_the_device_opens() {
    let f = Fixture::new(11);
    let cas = [f.ca.0.public()];
    let wrong_secret = support_protocol::one_time_code::OneTimeSecret::from_bytes([0x55; 16]);
    let sealed = support_protocol::approval_box::seal_approval(
        &f.contents,
        f.code.tunnel_id,
        &f.request.device_public_keys(),
        ApprovalSeq(1),
        &wrong_secret,
        [1; 32],
        &support_protocol::approval_box::Approver {
            key: &f.approver_key,
            certificate: &f.certificate,
        },
    );
    assert_eq!(
        sealed.open(
            f.device.tunnel_id(),
            &f.device.public_keys(),
            &f.device.one_time_secret(),
            &trust(&cas)
        ),
        Err(ApprovalError::Unopenable)
    );
}
