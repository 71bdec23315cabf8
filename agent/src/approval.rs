//! Deciding on an approval: pure, no I/O, so every refusal is tested
//! deterministically. Nothing on the device changes before this says yes.

use std::net::{Ipv4Addr, SocketAddr};

use support_protocol::approval_box::{
    ApprovalError, CheckedApproval, LimitError, Limits, RelayEndpoint, SealedApproval, Trust,
};
use support_protocol::hybrid_psk::derive_psk;
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
    /// What it says, as only [`SealedApproval::open_checked`] yields it: an
    /// `Accepted` (and so the peer's configuration, [`engine_config`])
    /// cannot be made from contents that skipped a check.
    pub contents: CheckedApproval,
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

/// Names the approval once and says what is wrong with it; the owner's log
/// adds that it was refused ("REFUSED, nothing changed: approval #2: ...").
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unverified { seq, error } => write!(f, "approval {seq}: {error}"),
            Refusal::BeyondLimits { seq, error } => write!(f, "approval {seq}: {error}"),
        }
    }
}

impl std::error::Error for Refusal {}

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
    let secret = keys.one_time_secret();
    let seq = sealed.approval_seq;
    let checked = sealed
        .open_checked(
            keys.tunnel_id(),
            &keys.public_keys(),
            &secret,
            &Trust {
                ca_keys: &config.support_ca_keys,
                time_floor,
                accepted,
            },
            &Limits {
                requested_ports: requested.ports,
                requested_duration_secs: requested.duration_secs,
                allowed_ports: &config.allowed_ports(),
                max_duration_secs: config.max_duration_secs(),
            },
        )
        .map_err(|error| match error {
            ApprovalError::Limits(error) => Refusal::BeyondLimits { seq, error },
            error => Refusal::Unverified { seq, error },
        })?;
    let shared = Zeroizing::new(keys.kem().decapsulate(&checked.kem_ciphertext.0));
    let psk = derive_psk(&checked, &secret, &shared);
    Ok(Accepted {
        seq,
        box_hash: checked.box_hash(),
        contents: checked,
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
/// approved ports, each to its configured local target (invariant 9). It
/// takes an [`Accepted`], so only an approval that was verified, opened and
/// checked ([`CheckedApproval`]) configures a peer.
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
    use support_protocol::fixtures::{Approvers, Terms};
    use support_protocol::tunnel_keys::AdminTunnelKeys;

    pub(crate) struct Fixture {
        pub(crate) device: DeviceTunnelKeys,
        approvers: Approvers,
        pub(crate) config: Config,
    }

    pub(crate) fn fixture() -> Fixture {
        let approvers = Approvers::new(
            [2; 32],
            [4; 32],
            "alice",
            crate::RELEASE_TIME,
            crate::RELEASE_TIME + 86400 * 365,
        );
        let file = format!(
            "control_plane = \"http://127.0.0.1:1\"\ncontrol_plane_keys = [\"{}\"]\nsupport_ca_keys = [\"{}\"]\n",
            hex::encode([1u8; 32]),
            hex::encode(approvers.ca_key()),
        );
        let config = Config::parse(&file).expect("config");
        Fixture {
            device: DeviceTunnelKeys::from_seed([3; 32]),
            approvers,
            config,
        }
    }

    pub(crate) fn sealed(f: &Fixture, seq: u32) -> SealedApproval {
        let terms = Terms {
            relay: RelayEndpoint::V4([127, 0, 0, 1], 9),
            duration_secs: 600,
            ..Terms::new(crate::RELEASE_TIME + 10)
        };
        f.approvers.approve(
            &f.device,
            &AdminTunnelKeys::from_seed([5; 32]),
            &terms,
            ApprovalSeq(seq),
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
        assert_eq!(
            e,
            Refusal::Unverified {
                seq: ApprovalSeq(2),
                error: ApprovalError::NotNewer {
                    got: ApprovalSeq(2),
                    accepted: ApprovalSeq(2)
                }
            }
        );
        // Named once, refused once (the owner's log says "REFUSED").
        assert_eq!(
            e.to_string(),
            "approval #2: not newer than the accepted approval #2"
        );
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
