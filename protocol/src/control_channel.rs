//! The control channel: one Noise IK handshake per call, sans-IO.
//!
//! Each HTTP request body is the handshake's first message and carries the
//! call; the response body is the second message and carries the answer.
//!
//! ```text
//! request  = [version][api][server key id: 8][Noise IK message 1: e, es, s, ss + call]
//! response = [version][Noise IK message 2: e, ee, se + answer]
//! ```
//!
//! * **Mutual authentication**: the client proves its static key (an enrolled
//!   admin key, or the tunnel's credential) and must know the server's static
//!   key; only the holder of that key can produce the answer.
//! * **Pinned keys and rotation**: the client pins a list of server keys and
//!   names the one it uses by key id; the server can hold several at once.
//! * **Forward-secret answers**: the answer is encrypted under keys mixed
//!   with both ephemerals (`ee`, `se`).
//! * **Replays**: the first message can be replayed (Noise IK's known
//!   property), so it carries nothing confidential beyond what the control
//!   plane stores anyway, and every call is safe to repeat: creates are
//!   idempotent per credential, calls carry request ids, approvals are
//!   compare-and-set. Nothing uses clocks.
//! * **Domain separation**: the prologue names the protocol and the API, so
//!   a device call cannot be replayed to the admin API or vice versa.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use hkdf::Hkdf;
use sha2::Sha256;
use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroizing;

use crate::labels;

/// The Noise protocol name.
pub const NOISE_PATTERN: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// The channel framing version.
pub const CHANNEL_VERSION: u8 = 1;
/// The largest call or answer payload (one Noise message minus the handshake's own bytes).
pub const MAX_PAYLOAD: usize = 65535 - 32 - 48 - 16;
const PROLOGUE: &[u8] = b"support-tunnel v1 control channel";

/// Which API a call is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Api {
    /// `POST /v1/device`: calls authenticated by a tunnel credential.
    Device = 1,
    /// `POST /v1/admin`: calls authenticated by an enrolled admin key.
    Admin = 2,
}

/// An X25519 static key pair for the control channel.
#[derive(Clone)]
pub struct StaticKeypair {
    secret: Zeroizing<[u8; 32]>,
    /// The public key.
    pub public: [u8; 32],
}

impl StaticKeypair {
    /// The key pair with private key `secret`.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let kp = crate::tunnel_keys::X25519Keypair::from_secret(secret);
        Self {
            secret: kp.secret,
            public: kp.public,
        }
    }

    /// The private key, to store (0600).
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

impl core::fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "StaticKeypair {{ public: {:?}, secret: <redacted> }}",
            crate::bounded::FixedBytes(self.public)
        )
    }
}

/// The 8-byte id by which a request names the server key it was made for.
pub fn key_id(public: &[u8; 32]) -> [u8; 8] {
    let h = labels::labelled_hash(labels::CHANNEL_KEY_ID, &[public]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[..8]);
    id
}

/// Why a call or answer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelError {
    /// Too short to hold the framing.
    Truncated,
    /// Another framing version.
    UnsupportedVersion(u8),
    /// The call is for the other API.
    WrongApi,
    /// The request names a server key this server does not hold.
    UnknownServerKey,
    /// The Noise handshake failed: a forged, altered or misdirected message.
    Handshake,
    /// The payload exceeds [`MAX_PAYLOAD`].
    TooLarge,
}

impl core::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => f.write_str("control-channel message truncated"),
            Self::UnsupportedVersion(v) => write!(f, "control-channel version {v} is not supported"),
            Self::WrongApi => f.write_str("control-channel message is for the other API"),
            Self::UnknownServerKey => f.write_str(
                "the request is for a control-plane key this server does not hold (pinned key out of date?)",
            ),
            Self::Handshake => f.write_str(
                "control-channel authentication failed: the message was forged or altered, or the keys do not match",
            ),
            Self::TooLarge => f.write_str("control-channel payload too large"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ChannelError {}

/// Supplies snow's ephemeral keys from caller-given randomness, so the
/// channel is deterministic given its inputs and needs no OS RNG here.
struct SeededResolver {
    seed: Zeroizing<[u8; 32]>,
}

struct SeededRng {
    hk: Hkdf<Sha256>,
    counter: u64,
}

impl Random for SeededRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        for chunk in dest.chunks_mut(32) {
            self.counter += 1;
            self.hk
                .expand_multi_info(
                    &[labels::CHANNEL_EPHEMERAL, &self.counter.to_be_bytes()],
                    chunk,
                )
                .map_err(|_| snow::Error::Rng)?;
        }
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRng {
            hk: Hkdf::<Sha256>::new(None, self.seed.as_ref()),
            counter: 0,
        }))
    }
    fn resolve_dh(&self, _: &snow::params::DHChoice) -> Option<Box<dyn Dh>> {
        None
    }
    fn resolve_hash(&self, _: &snow::params::HashChoice) -> Option<Box<dyn Hash>> {
        None
    }
    fn resolve_cipher(&self, _: &snow::params::CipherChoice) -> Option<Box<dyn Cipher>> {
        None
    }
}

fn builder<'a>(api: Api, ephemeral_seed: [u8; 32]) -> Result<snow::Builder<'a>, ChannelError> {
    let params = NOISE_PATTERN.parse().map_err(|_| ChannelError::Handshake)?;
    let resolver = FallbackResolver::new(
        Box::new(SeededResolver {
            seed: Zeroizing::new(ephemeral_seed),
        }),
        Box::new(DefaultResolver),
    );
    let prologue: &'static [u8] = match api {
        Api::Device => b"support-tunnel v1 control channel: device api",
        Api::Admin => b"support-tunnel v1 control channel: admin api",
    };
    debug_assert!(prologue.starts_with(PROLOGUE));
    snow::Builder::with_resolver(params, Box::new(resolver))
        .prologue(prologue)
        .map_err(|_| ChannelError::Handshake)
}

/// A call in flight, on the client side.
pub struct ClientCall {
    hs: snow::HandshakeState,
}

impl ClientCall {
    /// Starts a call: returns the state to finish it with and the request body.
    /// `ephemeral_seed` must be fresh random bytes for every call.
    pub fn start(
        api: Api,
        client: &StaticKeypair,
        server_public: &[u8; 32],
        ephemeral_seed: [u8; 32],
        call: &[u8],
    ) -> Result<(ClientCall, Vec<u8>), ChannelError> {
        if call.len() > MAX_PAYLOAD {
            return Err(ChannelError::TooLarge);
        }
        let mut hs = builder(api, ephemeral_seed)?
            .local_private_key(client.secret())
            .and_then(|b| b.remote_public_key(server_public))
            .and_then(|b| b.build_initiator())
            .map_err(|_| ChannelError::Handshake)?;
        let mut out = vec![0u8; 10 + 96 + call.len()];
        out[0] = CHANNEL_VERSION;
        out[1] = api as u8;
        out[2..10].copy_from_slice(&key_id(server_public));
        let n = hs
            .write_message(call, &mut out[10..])
            .map_err(|_| ChannelError::Handshake)?;
        out.truncate(10 + n);
        Ok((ClientCall { hs }, out))
    }

    /// Checks the server's answer and returns its payload.
    pub fn finish(mut self, response: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let (&version, msg) = response.split_first().ok_or(ChannelError::Truncated)?;
        if version != CHANNEL_VERSION {
            return Err(ChannelError::UnsupportedVersion(version));
        }
        if msg.len() > 65535 {
            return Err(ChannelError::TooLarge);
        }
        let mut payload = vec![0u8; msg.len()];
        let n = self
            .hs
            .read_message(msg, &mut payload)
            .map_err(|_| ChannelError::Handshake)?;
        payload.truncate(n);
        Ok(payload)
    }
}

/// The server's static keys: the current one first, then older ones still served during a rotation.
pub struct ServerKeys {
    keys: Vec<StaticKeypair>,
}

impl ServerKeys {
    /// Serves `keys` (at least one).
    pub fn new(keys: Vec<StaticKeypair>) -> Self {
        Self { keys }
    }

    /// The public keys served, for clients to pin.
    pub fn public_keys(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.keys.iter().map(|k| &k.public)
    }

    /// Authenticates and decrypts a call for `api`. `ephemeral_seed` must be
    /// fresh random bytes: the answer's ephemeral key comes from it.
    pub fn accept(
        &self,
        api: Api,
        request: &[u8],
        ephemeral_seed: [u8; 32],
    ) -> Result<IncomingCall, ChannelError> {
        if request.len() < 10 {
            return Err(ChannelError::Truncated);
        }
        if request[0] != CHANNEL_VERSION {
            return Err(ChannelError::UnsupportedVersion(request[0]));
        }
        if request[1] != api as u8 {
            return Err(ChannelError::WrongApi);
        }
        let msg = &request[10..];
        if msg.len() > 65535 {
            return Err(ChannelError::TooLarge);
        }
        let key = self
            .keys
            .iter()
            .find(|k| key_id(&k.public)[..] == request[2..10])
            .ok_or(ChannelError::UnknownServerKey)?;
        let mut hs = builder(api, ephemeral_seed)?
            .local_private_key(key.secret())
            .and_then(|b| b.build_responder())
            .map_err(|_| ChannelError::Handshake)?;
        let mut call = vec![0u8; msg.len()];
        let n = hs
            .read_message(msg, &mut call)
            .map_err(|_| ChannelError::Handshake)?;
        call.truncate(n);
        let client_public = hs
            .get_remote_static()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or(ChannelError::Handshake)?;
        Ok(IncomingCall {
            hs,
            client_public,
            call,
        })
    }
}

/// A call received by the server, waiting for its answer.
pub struct IncomingCall {
    hs: snow::HandshakeState,
    /// The caller's authenticated static key.
    pub client_public: [u8; 32],
    /// The call's payload.
    pub call: Vec<u8>,
}

impl IncomingCall {
    /// Encrypts the answer.
    pub fn respond(self, answer: &[u8]) -> Result<Vec<u8>, ChannelError> {
        if answer.len() > MAX_PAYLOAD {
            return Err(ChannelError::TooLarge);
        }
        let mut hs = self.hs;
        let mut out = vec![0u8; 1 + 48 + answer.len()];
        out[0] = CHANNEL_VERSION;
        let n = hs
            .write_message(answer, &mut out[1..])
            .map_err(|_| ChannelError::Handshake)?;
        out.truncate(1 + n);
        Ok(out)
    }
}
