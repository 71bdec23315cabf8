//! The admin's per-tunnel secrets: `DATA/tunnels/<id>.json`, 0600, wiped
//! at stop, gc and hand-off (which leaves `DATA/tunnels/handed-off/<id>.json`,
//! nothing secret: to whom and when). Everything the admin's peer and SSH need derives from
//! what is kept here.
//!
//! On disk a tunnel id is its 16 hex digits ([`id_text`]), as it always was,
//! so records written by earlier versions (and hand-off packages, which
//! carry a record) still load.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use support_protocol::approval_box::{ApprovalContents, SealedApproval};
use support_protocol::codec::CodecError;
use support_protocol::hybrid_psk::derive_approver_psk;
use support_protocol::messages::TunnelRequest;
use support_protocol::one_time_code::OneTimeSecret;
use support_protocol::request_tag;
use support_protocol::tunnel_keys::AdminTunnelKeys;
use support_protocol::TunnelId;
use support_tunnel::{BufferProfile, EngineConfig, Role};
use zeroize::Zeroizing;

use crate::error::FileError;
use crate::handoff::HandedOff;
use crate::secret_file;
use crate::settings::Dirs;

/// Why a tunnel record cannot be had or used.
#[derive(Debug)]
pub enum RecordError {
    /// No record (and no hand-off note) matches the id or prefix.
    NotFound(String),
    /// The prefix matches several records.
    Ambiguous(String),
    /// The tunnel was handed off from here: to whom and when.
    HandedOff(HandedOff),
    /// The record file does not parse.
    Damaged(TunnelId),
    /// A field of the record does not decode (with the decoder's reason).
    DamagedField(Option<CodecError>),
    /// The device's ML-KEM key in the record is invalid.
    InvalidKemKey,
    /// The record's request does not verify with its one-time secret
    /// (altered on disk).
    RequestUnverified(TunnelId),
    /// The record could not be serialized.
    Encode(serde_json::Error),
    /// The record could not be read or written.
    File(FileError),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound(id) => write!(
                f,
                "no approved tunnel {id} on this machine (support-admin approve makes one)"
            ),
            Self::Ambiguous(id) => write!(f, "{id} matches several tunnels; give more digits"),
            Self::HandedOff(h) => f.write_str(&h.describe()),
            Self::Damaged(id) => write!(f, "the record of {id} is damaged"),
            Self::DamagedField(None) => f.write_str("a tunnel record is damaged"),
            Self::DamagedField(Some(e)) => write!(f, "a tunnel record is damaged: {e}"),
            Self::InvalidKemKey => f.write_str("the device's ML-KEM key is invalid"),
            Self::RequestUnverified(id) => write!(
                f,
                "the record of {id} is damaged: its request does not verify with its code"
            ),
            Self::Encode(e) => e.fmt(f),
            Self::File(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RecordError {}

/// A tunnel id as text in JSON: its 16 hex digits (`TunnelId`'s own serde
/// form is a number, for the wire codec).
pub mod id_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use support_protocol::TunnelId;

    /// Writes the 16 hex digits.
    pub fn serialize<S: Serializer>(id: &TunnelId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    /// Reads 16 hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TunnelId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which provider runs a hub; on disk and on the command line `local` or `gcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// `support-relay` as a process on this machine.
    Local,
    /// A Compute Engine VM.
    Gcp,
}

impl ProviderKind {
    /// Every provider.
    pub const ALL: [ProviderKind; 2] = [ProviderKind::Local, ProviderKind::Gcp];

    /// The name in `admin.toml`, records and messages.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Gcp => "gcp",
        }
    }

    /// The provider named `name`.
    pub fn from_name(name: &str) -> Option<ProviderKind> {
        ProviderKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the hub of a tunnel runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HubRecord {
    /// Which provider.
    pub provider: ProviderKind,
    /// The provider's handle (a pid, an instance name).
    pub handle: String,
    /// The relay's UDP address.
    pub endpoint: SocketAddr,
}

/// One approved tunnel, as the admin keeps it.
#[derive(Clone, Serialize, Deserialize)]
pub struct AdminTunnel {
    /// Tunnel id.
    #[serde(with = "id_text")]
    pub id: TunnelId,
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

fn decode_hex<M: support_protocol::codec::Message>(h: &str) -> Result<M, RecordError> {
    let b = hex::decode(h).map_err(|_| RecordError::DamagedField(None))?;
    support_protocol::decode(&b).map_err(|e| RecordError::DamagedField(Some(e)))
}

fn hex_array<const N: usize>(h: &str) -> Result<[u8; N], RecordError> {
    hex::decode(h)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(RecordError::DamagedField(None))
}

/// Hex of a message's encoding.
pub fn encode_hex<M: support_protocol::codec::Message>(m: &M) -> String {
    hex::encode(support_protocol::encode(m).unwrap_or_default())
}

impl AdminTunnel {
    /// The admin's keys.
    pub fn keys(&self) -> Result<AdminTunnelKeys, RecordError> {
        Ok(AdminTunnelKeys::from_seed(hex_array(&self.seed)?))
    }

    /// The one-time secret.
    pub fn secret(&self) -> Result<OneTimeSecret, RecordError> {
        Ok(OneTimeSecret::from_bytes(hex_array(&self.secret)?))
    }

    /// The device's request.
    pub fn request(&self) -> Result<TunnelRequest, RecordError> {
        decode_hex(&self.request)
    }

    /// The approval's contents.
    pub fn contents(&self) -> Result<ApprovalContents, RecordError> {
        decode_hex(&self.contents)
    }

    /// The sealed approval as posted.
    pub fn sealed_approval(&self) -> Result<SealedApproval, RecordError> {
        decode_hex(&self.approval)
    }

    /// The support user on the device.
    pub fn user(&self) -> String {
        self.id.support_user()
    }

    /// The admin peer's configuration (the PSK derived again from the record).
    pub fn engine_config(&self) -> Result<EngineConfig, RecordError> {
        let keys = self.keys()?;
        let request = self.request()?;
        let contents = self.contents()?;
        let (_, shared) =
            support_protocol::kem::encapsulate(&request.body.kem.0, &keys.kem_randomness())
                .map_err(|_| RecordError::InvalidKemKey)?;
        let shared = Zeroizing::new(shared);
        let secret = self.secret()?;
        // Verified again from the record: what the PSK binds to is the
        // request the code authenticated.
        let verified = request_tag::verify(&secret, &request)
            .map_err(|_| RecordError::RequestUnverified(self.id))?;
        let psk = derive_approver_psk(
            &verified,
            &secret,
            &shared,
            &keys.wireguard().public,
            &contents.kem_ciphertext.0,
        );
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

    /// The record file of tunnel `id`.
    pub fn path(&self, id: TunnelId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The per-tunnel files directory (ssh-config's key and known_hosts).
    pub fn files(&self, id: TunnelId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Saves (0600).
    pub fn save(&self, t: &AdminTunnel) -> Result<(), RecordError> {
        let json = Zeroizing::new(serde_json::to_vec_pretty(t).map_err(RecordError::Encode)?);
        secret_file::write(&self.path(t.id), &json, 0o600).map_err(RecordError::File)
    }

    /// Loads one, by id or unique prefix.
    pub fn load(&self, id: &str) -> Result<AdminTunnel, RecordError> {
        let matches: Vec<TunnelId> = self
            .ids()
            .into_iter()
            .filter(|i| i.to_string().starts_with(id))
            .collect();
        let full = match matches.as_slice() {
            [one] => *one,
            [] => {
                return Err(match self.handed_off(id) {
                    Some(h) => RecordError::HandedOff(h),
                    None => RecordError::NotFound(id.to_string()),
                })
            }
            _ => return Err(RecordError::Ambiguous(id.to_string())),
        };
        self.get(full)
    }

    /// Loads the record of `id` (a full id, as [`Self::ids`] gives them).
    pub fn get(&self, id: TunnelId) -> Result<AdminTunnel, RecordError> {
        let path = self.path(id);
        let bytes = std::fs::read(&path).map_err(|e| RecordError::File(FileError::at(path)(e)))?;
        serde_json::from_slice(&bytes).map_err(|_| RecordError::Damaged(id))
    }

    /// Every tunnel id with a record.
    pub fn ids(&self) -> Vec<TunnelId> {
        let mut v: Vec<TunnelId> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
            .collect();
        v.sort();
        v
    }

    /// Where the notes of handed-off tunnels are (nothing secret in them).
    fn handed_off_dir(&self) -> PathBuf {
        self.dir.join("handed-off")
    }

    /// Notes that a tunnel was handed off (before its secrets are wiped).
    pub fn note_handed_off(&self, h: &HandedOff) -> Result<(), RecordError> {
        let json = serde_json::to_vec_pretty(h).map_err(RecordError::Encode)?;
        secret_file::write(
            &self.handed_off_dir().join(format!("{}.json", h.id)),
            &json,
            0o600,
        )
        .map_err(RecordError::File)
    }

    /// Forgets the note of a tunnel that comes back (picked up again).
    pub fn forget_handed_off(&self, id: TunnelId) {
        let _ = std::fs::remove_file(self.handed_off_dir().join(format!("{id}.json")));
    }

    /// The note of a tunnel handed off from here, by id or unique prefix.
    pub fn handed_off(&self, id: &str) -> Option<HandedOff> {
        let mut found: Vec<HandedOff> = self
            .handed_off_all()
            .into_iter()
            .filter(|h| h.id.to_string().starts_with(id))
            .collect();
        (found.len() == 1).then(|| found.remove(0))
    }

    /// Every note of a handed-off tunnel.
    pub fn handed_off_all(&self) -> Vec<HandedOff> {
        std::fs::read_dir(self.handed_off_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }

    /// Wipes a tunnel's record and files.
    pub fn wipe(&self, id: TunnelId) {
        secret_file::wipe(&self.path(id));
        secret_file::wipe(&self.files(id));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record whose request, contents and approval do not decode (enough
    /// for what does not need them).
    pub(crate) fn fixture(id: TunnelId) -> AdminTunnel {
        AdminTunnel {
            id,
            seed: "11".repeat(32),
            secret: "22".repeat(16),
            request: "00".into(),
            contents: "00".into(),
            approval: "00".into(),
            hub: HubRecord {
                provider: ProviderKind::Local,
                handle: "4242".into(),
                endpoint: SocketAddr::from(([127, 0, 0, 1], 51820)),
            },
            host_keys: Vec::new(),
            approved_at: 1_700_000_000,
        }
    }

    #[test]
    fn a_request_altered_on_disk_gives_no_psk() {
        use support_protocol::bounded::{BoundedString, BoundedVec};
        use support_protocol::fixtures::Terms;
        use support_protocol::messages::DeviceFacts;
        use support_protocol::tunnel_keys::DeviceTunnelKeys;

        let device = DeviceTunnelKeys::from_seed([3; 32]);
        let facts = DeviceFacts {
            hostname: BoundedString::new("amplipi").expect("fits"),
            model: BoundedString::new("m").expect("fits"),
            firmware: BoundedString::new("f").expect("fits"),
            agent_version: BoundedString::new("a").expect("fits"),
        };
        let ports = BoundedVec::try_from(&[22u16][..]).expect("fits");
        let request = TunnelRequest::new(
            &device,
            facts,
            600,
            ports,
            BoundedString::new("").expect("fits"),
        );
        let admin = AdminTunnelKeys::from_seed([4; 32]);
        let contents = Terms::new(10).contents(&request.body.kem.0, &admin);
        let id = device.tunnel_id();
        let mut record = AdminTunnel {
            seed: hex::encode([4u8; 32]),
            secret: hex::encode(device.one_time_secret().as_bytes()),
            request: encode_hex(&request),
            contents: encode_hex(&contents),
            ..fixture(id)
        };
        assert!(record.engine_config().is_ok(), "the record as approved");
        let mut altered = request;
        altered.body.duration_secs += 1;
        record.request = encode_hex(&altered);
        assert!(matches!(
            record.engine_config(),
            Err(RecordError::RequestUnverified(i)) if i == id
        ));
    }

    fn records(d: &tempfile::TempDir) -> Records {
        Records::new(&Dirs {
            config: d.path().to_path_buf(),
            data: d.path().join("data"),
        })
    }

    /// A record as the versions before typed ids wrote it (the id a string
    /// field, the provider a string).
    const OLD_RECORD: &str = r#"{
  "id": "3f2a9c0e11d4b7a5",
  "seed": "1111111111111111111111111111111111111111111111111111111111111111",
  "secret": "22222222222222222222222222222222",
  "request": "00",
  "contents": "00",
  "approval": "00",
  "hub": {
    "provider": "gcp",
    "handle": "support-hub-3f2a9c0e11d4b7a5",
    "endpoint": "203.0.113.7:51820"
  },
  "host_keys": [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
  ],
  "approved_at": 1700000000
}"#;

    #[test]
    fn a_record_in_the_old_format_loads_and_is_written_back_the_same() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = records(&d);
        let id: TunnelId = "3f2a9c0e11d4b7a5".parse().expect("id");
        std::fs::create_dir_all(r.path(id).parent().expect("dir")).expect("mkdir");
        std::fs::write(r.path(id), OLD_RECORD).expect("write");
        let rec = r.load("3f2a").expect("loads");
        assert_eq!(rec.id, id);
        assert_eq!(rec.hub.provider, ProviderKind::Gcp);
        assert_eq!(
            rec.hub.endpoint,
            SocketAddr::from(([203, 0, 113, 7], 51820))
        );
        assert_eq!(rec.user(), "support-3f2a9c0e11d4b7a5");
        assert_eq!(rec.keys().expect("seed").seed(), &[0x11; 32]);
        assert_eq!(rec.secret().expect("secret").as_bytes(), &[0x22; 16]);
        // The same JSON comes back: records and hand-off packages stay
        // readable by the versions before and after.
        let again: serde_json::Value =
            serde_json::from_slice(&serde_json::to_vec(&rec).expect("json")).expect("json");
        let old: serde_json::Value = serde_json::from_str(OLD_RECORD).expect("json");
        assert_eq!(again, old);
        r.save(&rec).expect("saves");
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(r.path(id)).expect("read")).expect("json");
        assert_eq!(saved, old);
    }

    #[test]
    fn a_record_with_a_bad_id_or_provider_is_damaged() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = records(&d);
        let id: TunnelId = "3f2a9c0e11d4b7a5".parse().expect("id");
        std::fs::create_dir_all(r.path(id).parent().expect("dir")).expect("mkdir");
        for bad in [
            OLD_RECORD.replace("\"3f2a9c0e11d4b7a5\"", "\"3f2a\""),
            OLD_RECORD.replace("\"3f2a9c0e11d4b7a5\"", "4578936489572677541"),
            OLD_RECORD.replace("\"gcp\"", "\"aws\""),
            "{".to_string(),
        ] {
            std::fs::write(r.path(id), &bad).expect("write");
            assert!(
                matches!(r.load("3f2a9c0e11d4b7a5"), Err(RecordError::Damaged(i)) if i == id),
                "{bad}"
            );
        }
    }

    #[test]
    fn fields_that_do_not_decode_are_damaged_fields() {
        let mut rec = fixture(TunnelId(7));
        assert!(matches!(
            rec.request(),
            Err(RecordError::DamagedField(Some(_)))
        ));
        assert!(matches!(
            rec.sealed_approval(),
            Err(RecordError::DamagedField(Some(_)))
        ));
        assert!(matches!(
            rec.engine_config(),
            Err(RecordError::DamagedField(Some(_)))
        ));
        rec.contents = "not hex".into();
        assert!(matches!(
            rec.contents(),
            Err(RecordError::DamagedField(None))
        ));
        rec.seed = "11".into();
        assert!(matches!(rec.keys(), Err(RecordError::DamagedField(None))));
    }

    #[test]
    fn load_says_which_record_is_missing_ambiguous_or_handed_off() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = records(&d);
        let (a, b) = (
            TunnelId(0xabc1_0000_0000_0001),
            TunnelId(0xabc2_0000_0000_0002),
        );
        r.save(&fixture(a)).expect("saves");
        r.save(&fixture(b)).expect("saves");
        assert_eq!(r.ids(), vec![a, b]);
        assert_eq!(r.load("abc2").expect("unique").id, b);
        assert!(matches!(r.load("abc"), Err(RecordError::Ambiguous(p)) if p == "abc"));
        assert!(matches!(r.load("ffff"), Err(RecordError::NotFound(p)) if p == "ffff"));
        let c = TunnelId(0xdef0_0000_0000_0003);
        r.note_handed_off(&HandedOff {
            id: c,
            to: "bob".into(),
            at: 1_700_000_000,
        })
        .expect("notes");
        match r.load("def") {
            Err(RecordError::HandedOff(h)) => {
                assert_eq!((h.id, h.to.as_str(), h.at), (c, "bob", 1_700_000_000))
            }
            other => panic!("{:?}", other.map(|t| t.id)),
        }
        // On disk the note's id is text too.
        let note: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                d.path()
                    .join("data/tunnels/handed-off/def0000000000003.json"),
            )
            .expect("note"),
        )
        .expect("json");
        assert_eq!(note["id"], "def0000000000003");
        r.forget_handed_off(c);
        assert!(matches!(r.load("def"), Err(RecordError::NotFound(_))));
        r.wipe(a);
        assert_eq!(r.ids(), vec![b]);
    }
}
