//! Deciding on an approval: pure, no I/O, so every refusal is tested
//! deterministically. Nothing on the device changes before this says yes.

use std::net::{Ipv4Addr, SocketAddr};

use support_protocol::approval_box::{
    ApprovalContents, ApprovalError, LimitError, RelayEndpoint, SealedApproval, Trust,
};
use support_protocol::hybrid_psk::{derive_psk, PskInputs};
use support_protocol::tunnel_keys::DeviceTunnelKeys;
use support_protocol::ApprovalSeq;
use support_tunnel::{BufferProfile, EngineConfig, Forward, Role};
use zeroize::Zeroizing;

use crate::config::Config;

/// What the device asked for (from its own record, never from the control plane).
pub struct Requested<'a> {
    /// Requested ports.
    pub ports: &'a [u16],
    /// Requested duration.
    pub duration_secs: u32,
}

/// An approval that passed every check.
pub struct Accepted {
    /// Its sequence number.
    pub seq: ApprovalSeq,
    /// What it says.
    pub contents: ApprovalContents,
    /// The hybrid WireGuard PSK.
    pub psk: Zeroizing<[u8; 32]>,
    /// The hash the connected report binds.
    pub box_hash: [u8; 32],
}

/// Why an approval was refused: the box and its signature, or its terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The certificate, the signature or the box did not verify.
    Unverified {
        /// The approval's number.
        seq: ApprovalSeq,
        /// What failed.
        error: ApprovalError,
    },
    /// It asks for more than the device requested or allows.
    BeyondLimits {
        /// The approval's number.
        seq: ApprovalSeq,
        /// What it asks for too much of.
        error: LimitError,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unverified { seq, error } => write!(f, "{error} ({seq})"),
            Refusal::BeyondLimits { seq, error } => write!(f, "approval refused: {error} ({seq})"),
        }
    }
}

/// Verifies `sealed` for this device: certificate chain to a pinned CA,
/// signature, box, newer than `accepted`, ports and duration within both the
/// request and the config, then derives the PSK.
pub fn accept(
    sealed: &SealedApproval,
    keys: &DeviceTunnelKeys,
    requested: &Requested<'_>,
    config: &Config,
    time_floor: u64,
    accepted: Option<ApprovalSeq>,
) -> Result<Accepted, Refusal> {
    let public = keys.public_keys();
    let contents = sealed
        .open(
            keys.tunnel_id(),
            &public,
            &keys.one_time_secret(),
            &Trust {
                ca_keys: &config.support_ca_keys,
                time_floor,
                accepted,
            },
        )
        .map_err(|error| Refusal::Unverified {
            seq: sealed.approval_seq,
            error,
        })?;
    contents
        .check_limits(
            requested.ports,
            requested.duration_secs,
            &config.allowed_ports(),
            config.max_duration_secs(),
        )
        .map_err(|error| Refusal::BeyondLimits {
            seq: sealed.approval_seq,
            error,
        })?;
    let shared = Zeroizing::new(keys.kem().decapsulate(&contents.kem_ciphertext.0));
    let psk = derive_psk(&PskInputs {
        one_time_secret: &keys.one_time_secret(),
        kem_shared_secret: &shared,
        tunnel_id: keys.tunnel_id(),
        device_wireguard: &public.wireguard,
        admin_wireguard: &contents.admin_wireguard.0,
        kem_encapsulation_key: &public.kem.0,
        kem_ciphertext: &contents.kem_ciphertext.0,
    });
    Ok(Accepted {
        seq: sealed.approval_seq,
        box_hash: sealed.hash(),
        contents,
        psk,
    })
}

/// The relay's socket address.
pub fn relay_addr(r: &RelayEndpoint) -> SocketAddr {
    match *r {
        RelayEndpoint::V4(ip, port) => SocketAddr::from((ip, port)),
        RelayEndpoint::V6(ip, port) => SocketAddr::from((ip.0, port)),
    }
}

/// The device peer's configuration for an accepted approval: only the
/// approved ports, each to its configured local target (invariant 9).
pub fn engine_config(keys: &DeviceTunnelKeys, a: &Accepted, config: &Config) -> EngineConfig {
    let relay = relay_addr(&a.contents.relay);
    let bind: SocketAddr = if relay.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let forwards = a
        .contents
        .ports
        .iter()
        .filter_map(|p| {
            config.ports.get(p).map(|t| Forward {
                port: *p,
                target: *t,
            })
        })
        .collect();
    EngineConfig {
        private_key: *keys.wireguard().secret,
        peer_public: a.contents.admin_wireguard.0,
        psk: *a.psk,
        endpoint: relay,
        bind,
        local_ip: Ipv4Addr::from(a.contents.addresses.device),
        peer_ip: Ipv4Addr::from(a.contents.addresses.admin),
        prefix_len: a.contents.addresses.prefix_len,
        keepalive_secs: 25,
        profile: BufferProfile::DEVICE,
        role: Role::Device { forwards },
        random: u64::from_le_bytes(crate::util::random()),
    }
}

/// The SSH wire encoding of an ed25519 public key.
fn ssh_key_blob(key: &[u8; 32]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(51);
    for part in [&b"ssh-ed25519"[..], &key[..]] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(part);
    }
    blob
}

/// The OpenSSH public key line of the admin's ed25519 key.
pub fn ssh_public_key_line(key: &[u8; 32], comment: &str) -> String {
    format!(
        "ssh-ed25519 {} {comment}",
        crate::util::base64(&ssh_key_blob(key))
    )
}

/// OpenSSH's SHA256 fingerprint of that key, for the owner's log.
pub fn ssh_fingerprint(key: &[u8; 32]) -> String {
    use sha2::Digest;
    let b64 = crate::util::base64(&sha2::Sha256::digest(ssh_key_blob(key)));
    format!("SHA256:{}", b64.trim_end_matches('='))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use support_protocol::approval_box::{seal_approval, Approver, TunnelAddresses};
    use support_protocol::bounded::{BoundedString, BoundedVec, FixedBytes};
    use support_protocol::certificate::{Role, SigningSeed, SupportCa};
    use support_protocol::tunnel_keys::AdminTunnelKeys;

    pub(crate) struct Fixture {
        pub(crate) device: DeviceTunnelKeys,
        ca: SupportCa,
        signer: SigningSeed,
        pub(crate) config: Config,
    }

    pub(crate) fn fixture() -> Fixture {
        let file = format!(
            "control_plane = \"http://127.0.0.1:1\"\ncontrol_plane_keys = [\"{}\"]\nsupport_ca_keys = [\"{}\"]\n",
            hex::encode([1u8; 32]),
            hex::encode(SupportCa(SigningSeed::new([2; 32])).0.public()),
        );
        let config = Config::parse(&file).expect("config");
        Fixture {
            device: DeviceTunnelKeys::from_seed([3; 32]),
            ca: SupportCa(SigningSeed::new([2; 32])),
            signer: SigningSeed::new([4; 32]),
            config,
        }
    }

    pub(crate) fn sealed(f: &Fixture, seq: u32) -> SealedApproval {
        let cert = f.ca.certify(
            BoundedString::new("alice").expect("fits"),
            f.signer.public(),
            Role::Approver,
            1,
            crate::RELEASE_TIME,
            crate::RELEASE_TIME + 86400 * 365,
        );
        let admin = AdminTunnelKeys::from_seed([5; 32]);
        let public = f.device.public_keys();
        let (ct, _) = support_protocol::kem::encapsulate(&public.kem.0, &admin.kem_randomness())
            .expect("kem");
        let contents = ApprovalContents {
            relay: RelayEndpoint::V4([127, 0, 0, 1], 9),
            admin_wireguard: FixedBytes(admin.wireguard().public),
            admin_ssh: FixedBytes([6; 32]),
            addresses: TunnelAddresses {
                device: [10, 77, 0, 2],
                admin: [10, 77, 0, 3],
                prefix_len: 28,
            },
            kem_ciphertext: FixedBytes(ct),
            duration_secs: 600,
            ports: BoundedVec::try_from(&[22u16][..]).expect("fits"),
            issued_at: crate::RELEASE_TIME + 10,
        };
        seal_approval(
            &contents,
            f.device.tunnel_id(),
            &public,
            ApprovalSeq(seq),
            &f.device.one_time_secret(),
            [7; 32],
            &Approver {
                key: &f.signer,
                certificate: &cert,
            },
        )
    }

    const REQ: Requested<'static> = Requested {
        ports: &[22],
        duration_secs: 3600,
    };

    #[test]
    fn accepts_a_good_approval_and_never_an_older_one() {
        let f = fixture();
        let a = accept(&sealed(&f, 2), &f.device, &REQ, &f.config, 0, None).expect("accepted");
        assert_eq!(a.seq, ApprovalSeq(2));
        let e = accept(
            &sealed(&f, 1),
            &f.device,
            &REQ,
            &f.config,
            0,
            Some(ApprovalSeq(2)),
        )
        .err()
        .expect("older refused");
        assert!(
            matches!(
                e,
                Refusal::Unverified {
                    error: ApprovalError::NotNewer { .. },
                    ..
                }
            ),
            "{e}"
        );
        let e = accept(
            &sealed(&f, 2),
            &f.device,
            &REQ,
            &f.config,
            0,
            Some(ApprovalSeq(2)),
        )
        .err()
        .expect("same refused");
        assert!(e.to_string().contains("not newer"), "{e}");
    }

    #[test]
    fn a_certificate_known_to_have_expired_is_refused_whatever_the_clock() {
        let f = fixture();
        let floor = crate::RELEASE_TIME + 86400 * 400;
        let e = accept(&sealed(&f, 1), &f.device, &REQ, &f.config, floor, None)
            .err()
            .expect("refused");
        assert!(
            matches!(
                e,
                Refusal::Unverified {
                    error: ApprovalError::Certificate(_),
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("expired"), "{e}");
    }

    #[test]
    fn the_device_config_caps_ports_and_time() {
        let mut f = fixture();
        f.config.max_duration = std::time::Duration::from_secs(300);
        let e = accept(&sealed(&f, 1), &f.device, &REQ, &f.config, 0, None)
            .err()
            .expect("refused");
        assert!(
            matches!(
                e,
                Refusal::BeyondLimits {
                    error: LimitError::DurationNotAllowed { max: 300, .. },
                    ..
                }
            ),
            "{e}"
        );
        let mut f = fixture();
        f.config.ports.clear();
        let e = accept(&sealed(&f, 1), &f.device, &REQ, &f.config, 0, None)
            .err()
            .expect("refused");
        assert_eq!(
            e,
            Refusal::BeyondLimits {
                seq: ApprovalSeq(1),
                error: LimitError::PortNotAllowed(22)
            }
        );
    }

    #[test]
    fn the_peer_forwards_only_approved_and_allowed_ports() {
        let mut f = fixture();
        f.config
            .ports
            .insert(80, "127.0.0.1:8080".parse().expect("addr"));
        let a = accept(&sealed(&f, 1), &f.device, &REQ, &f.config, 0, None).expect("accepted");
        let c = engine_config(&f.device, &a, &f.config);
        match c.role {
            support_tunnel::Role::Device { forwards } => {
                assert_eq!(forwards.len(), 1, "port 80 is allowed but not approved");
                assert_eq!(forwards[0].port, 22);
            }
            support_tunnel::Role::Admin => panic!("device role"),
        }
    }

    #[test]
    fn ssh_key_lines_match_openssh() {
        // ssh-keygen -y of the all-zero-seed key would differ; check the format.
        let line = ssh_public_key_line(&[0; 32], "c");
        assert!(
            line.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"),
            "{line}"
        );
        assert!(ssh_fingerprint(&[0; 32]).starts_with("SHA256:"));
    }
}
