//! The admin's per-tunnel secrets: `DATA/tunnels/<id>.json`, 0600, wiped
//! at stop, gc and hand-off (which leaves `DATA/tunnels/handed-off/<id>.json`,
//! nothing secret: to whom and when). Everything the admin's peer and SSH need derives from
//! what is kept here.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use support_protocol::approval_box::ApprovalContents;
use support_protocol::hybrid_psk::{derive_psk, PskInputs};
use support_protocol::messages::TunnelRequest;
use support_protocol::one_time_code::OneTimeSecret;
use support_protocol::tunnel_keys::AdminTunnelKeys;
use support_protocol::TunnelId;
use support_tunnel::{BufferProfile, EngineConfig, Role};
use zeroize::Zeroizing;

use crate::secret_file;
use crate::settings::Dirs;

/// Where the hub of a tunnel runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HubRecord {
    /// "local" or "gcp".
    pub provider: String,
    /// The provider's handle (a pid, an instance name).
    pub handle: String,
    /// The relay's UDP address.
    pub endpoint: SocketAddr,
}

/// One approved tunnel, as the admin keeps it.
#[derive(Clone, Serialize, Deserialize)]
pub struct AdminTunnel {
    /// Tunnel id.
    pub id: String,
    /// The admin's per-tunnel seed (hex).
    pub seed: String,
    /// The one-time secret from the code (hex).
    pub secret: String,
    /// The device's request, verified against its tag (hex of its encoding).
    pub request: String,
    /// What the approval says (hex of its encoding).
    pub contents: String,
    /// The sealed approval as posted (hex).
    pub approval: String,
    /// The hub.
    pub hub: HubRecord,
    /// sshd host keys from the device's sealed report.
    pub host_keys: Vec<String>,
    /// Wall clock at approval.
    pub approved_at: u64,
}

pub fn decode_hex<M: support_protocol::codec::Message>(h: &str) -> Result<M, String> {
    let b = hex::decode(h).map_err(|_| "a tunnel record is damaged".to_string())?;
    support_protocol::decode(&b).map_err(|e| format!("a tunnel record is damaged: {e}"))
}

fn hex_array<const N: usize>(h: &str) -> Result<[u8; N], String> {
    hex::decode(h)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "a tunnel record is damaged".to_string())
}

/// Hex of a message's encoding.
pub fn encode_hex<M: support_protocol::codec::Message>(m: &M) -> String {
    hex::encode(support_protocol::encode(m).unwrap_or_default())
}

impl AdminTunnel {
    /// The tunnel id.
    pub fn tunnel_id(&self) -> Result<TunnelId, String> {
        self.id
            .parse()
            .map_err(|_| "a tunnel record is damaged".to_string())
    }

    /// The admin's keys.
    pub fn keys(&self) -> Result<AdminTunnelKeys, String> {
        Ok(AdminTunnelKeys::from_seed(hex_array(&self.seed)?))
    }

    /// The one-time secret.
    pub fn secret(&self) -> Result<OneTimeSecret, String> {
        Ok(OneTimeSecret::from_bytes(hex_array(&self.secret)?))
    }

    /// The device's request.
    pub fn request(&self) -> Result<TunnelRequest, String> {
        decode_hex(&self.request)
    }

    /// The approval's contents.
    pub fn contents(&self) -> Result<ApprovalContents, String> {
        decode_hex(&self.contents)
    }

    /// The support user on the device.
    pub fn user(&self) -> Result<String, String> {
        Ok(self.tunnel_id()?.support_user())
    }

    /// The admin peer's configuration (the PSK derived again from the record).
    pub fn engine_config(&self) -> Result<EngineConfig, String> {
        let keys = self.keys()?;
        let request = self.request()?;
        let contents = self.contents()?;
        let (_, shared) =
            support_protocol::kem::encapsulate(&request.body.kem.0, &keys.kem_randomness())
                .map_err(|_| "the device's ML-KEM key is invalid")?;
        let shared = Zeroizing::new(shared);
        let psk = derive_psk(&PskInputs {
            one_time_secret: &self.secret()?,
            kem_shared_secret: &shared,
            tunnel_id: self.tunnel_id()?,
            device_wireguard: &request.body.wireguard.0,
            admin_wireguard: &keys.wireguard().public,
            kem_encapsulation_key: &request.body.kem.0,
            kem_ciphertext: &contents.kem_ciphertext.0,
        });
        let a = contents.addresses;
        Ok(EngineConfig {
            private_key: *keys.wireguard().secret,
            peer_public: request.body.wireguard.0,
            psk: *psk,
            endpoint: self.hub.endpoint,
            bind: if self.hub.endpoint.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
            },
            local_ip: Ipv4Addr::from(a.admin),
            peer_ip: Ipv4Addr::from(a.device),
            prefix_len: a.prefix_len,
            keepalive_secs: 25,
            profile: BufferProfile::ADMIN,
            role: Role::Admin,
            random: u64::from_le_bytes(secret_file::random()),
        })
    }
}

/// The records directory.
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// Under the data dir.
    pub fn new(dirs: &Dirs) -> Records {
        Records {
            dir: dirs.data.join("tunnels"),
        }
    }

    /// The record file of tunnel `id` (full id).
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The per-tunnel files directory (ssh-config's key and known_hosts).
    pub fn files(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Saves (0600).
    pub fn save(&self, t: &AdminTunnel) -> Result<(), String> {
        let json = Zeroizing::new(serde_json::to_vec_pretty(t).map_err(|e| e.to_string())?);
        secret_file::write(&self.path(&t.id), &json, 0o600)
    }

    /// Loads one, by id or unique prefix.
    pub fn load(&self, id: &str) -> Result<AdminTunnel, String> {
        let ids = self.ids();
        let matches: Vec<&String> = ids.iter().filter(|i| i.starts_with(id)).collect();
        let full = match matches.as_slice() {
            [one] => (*one).clone(),
            [] => {
                if let Some(h) = self.handed_off(id) {
                    return Err(h.describe());
                }
                return Err(format!(
                    "no approved tunnel {id} on this machine (support-admin approve makes one)"
                ));
            }
            _ => return Err(format!("{id} matches several tunnels; give more digits")),
        };
        let bytes = std::fs::read(self.path(&full)).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|_| format!("the record of {full} is damaged"))
    }

    /// Every tunnel id with a record.
    pub fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(String::from)
            })
            .collect();
        v.sort();
        v
    }

    /// Where the notes of handed-off tunnels are (nothing secret in them).
    fn handed_off_dir(&self) -> PathBuf {
        self.dir.join("handed-off")
    }

    /// Notes that a tunnel was handed off (before its secrets are wiped).
    pub fn note_handed_off(&self, h: &crate::handoff::HandedOff) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(h).map_err(|e| e.to_string())?;
        secret_file::write(
            &self.handed_off_dir().join(format!("{}.json", h.id)),
            &json,
            0o600,
        )
    }

    /// Forgets the note of a tunnel that comes back (picked up again).
    pub fn forget_handed_off(&self, id: &str) {
        let _ = std::fs::remove_file(self.handed_off_dir().join(format!("{id}.json")));
    }

    /// The note of a tunnel handed off from here, by id or unique prefix.
    pub fn handed_off(&self, id: &str) -> Option<crate::handoff::HandedOff> {
        let mut found: Vec<crate::handoff::HandedOff> = self
            .handed_off_all()
            .into_iter()
            .filter(|h| h.id.starts_with(id))
            .collect();
        (found.len() == 1).then(|| found.remove(0))
    }

    /// Every note of a handed-off tunnel.
    pub fn handed_off_all(&self) -> Vec<crate::handoff::HandedOff> {
        std::fs::read_dir(self.handed_off_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }

    /// Wipes a tunnel's record and files.
    pub fn wipe(&self, id: &str) {
        secret_file::wipe(&self.path(id));
        secret_file::wipe(&self.files(id));
    }
}
