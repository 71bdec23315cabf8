//! WireGuard message framing (the parts a relay needs) and `mac1`.
//!
//! Message types and sizes from the WireGuard paper, section 5.4:
//! initiation (type 1, 148 bytes), response (type 2, 92 bytes), cookie reply
//! (type 3, 64 bytes), transport data (type 4, at least 32 bytes).

use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};

const LABEL_MAC1: &[u8] = b"mac1----";

/// A parsed WireGuard message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// Handshake initiation.
    Initiation {
        /// The initiator's session index.
        sender_index: u32,
    },
    /// Handshake response.
    Response {
        /// The responder's session index.
        sender_index: u32,
        /// The initiator's session index.
        receiver_index: u32,
    },
    /// Cookie reply (under load).
    CookieReply {
        /// The index of the handshake it answers.
        receiver_index: u32,
    },
    /// Transport data.
    Data {
        /// The receiver's session index.
        receiver_index: u32,
    },
}

/// Why a datagram is not a WireGuard message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Unknown message type or nonzero reserved bytes.
    UnknownType,
    /// Wrong length for its type.
    BadLength,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// Parses the header of `d`.
pub fn parse(d: &[u8]) -> Result<Message, ParseError> {
    if d.len() < 4 || d[1..4] != [0, 0, 0] {
        return Err(ParseError::UnknownType);
    }
    match (d[0], d.len()) {
        (1, 148) => Ok(Message::Initiation {
            sender_index: u32_at(d, 4),
        }),
        (2, 92) => Ok(Message::Response {
            sender_index: u32_at(d, 4),
            receiver_index: u32_at(d, 8),
        }),
        (3, 64) => Ok(Message::CookieReply {
            receiver_index: u32_at(d, 4),
        }),
        (4, n) if n >= 32 => Ok(Message::Data {
            receiver_index: u32_at(d, 4),
        }),
        (1..=4, _) => Err(ParseError::BadLength),
        _ => Err(ParseError::UnknownType),
    }
}

/// The `mac1` key of messages addressed to the holder of `public`.
pub fn mac1_key(public: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    Digest::update(&mut h, LABEL_MAC1);
    Digest::update(&mut h, public);
    h.finalize().into()
}

/// The `mac1` of a handshake message (everything before the two MACs).
pub fn mac1(key: &[u8; 32], msg_before_macs: &[u8]) -> [u8; 16] {
    let mut m = <Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new(key.into());
    Update::update(&mut m, msg_before_macs);
    m.finalize_fixed().into()
}

/// Whether handshake message `d` (initiation or response) carries a valid
/// `mac1` for the receiver whose `mac1` key is `key`.
pub fn mac1_valid(key: &[u8; 32], d: &[u8]) -> bool {
    if d.len() < 32 {
        return false;
    }
    let at = d.len() - 32;
    let expected = mac1(key, &d[..at]);
    // Not secret: anyone with the public key computes the same; no timing concern.
    expected[..] == d[at..at + 16]
}
