//! The envelope every protocol message travels in.
//!
//! Wire format: `[version: u8][kind: u8][postcard body]`. The whole envelope
//! is at most [`MAX_MESSAGE_LEN`] bytes; the version and the message kind are
//! checked before the body is parsed; trailing bytes and non-canonical
//! encodings (padded varints) are errors, so each message has exactly one
//! encoding.

use alloc::vec::Vec;
use core::fmt;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The only envelope version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// The largest envelope accepted or produced (it must fit one Noise message,
/// 65535 bytes, with room for the handshake's keys and tags).
pub const MAX_MESSAGE_LEN: usize = 60 * 1024;

/// A message type that has its own envelope kind.
pub trait Message: Serialize + DeserializeOwned {
    /// Distinguishes message types on the wire, so one can never be parsed as another.
    const KIND: u8;
    /// A name for errors and logs.
    const NAME: &'static str;
}

/// Why a message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// No bytes at all.
    Empty,
    /// The input (or the encoding) is longer than [`MAX_MESSAGE_LEN`].
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The envelope has a version this build does not speak.
    UnsupportedVersion {
        /// The version found.
        got: u8,
        /// The version supported.
        supported: u8,
    },
    /// The envelope holds another kind of message.
    WrongKind {
        /// The kind expected by the caller.
        expected: &'static str,
        /// The kind byte found.
        got: u8,
    },
    /// The body does not parse (truncated, a bound exceeded, a bad tag...).
    Malformed {
        /// The message expected.
        message: &'static str,
        /// postcard's description.
        reason: postcard::Error,
    },
    /// Bytes were left after the message.
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The body parses but is not the message's one canonical encoding
    /// (e.g. a varint padded with extra bytes).
    NonCanonical {
        /// The message expected.
        message: &'static str,
    },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Empty => f.write_str("empty message"),
            CodecError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the {max}-byte limit")
            }
            CodecError::UnsupportedVersion { got, supported } => write!(
                f,
                "protocol version {got} is not supported (this build speaks version {supported}); upgrade the older side"
            ),
            CodecError::WrongKind { expected, got } => {
                write!(f, "expected a {expected} message, got message kind {got}")
            }
            CodecError::Malformed { message, reason } => {
                write!(f, "malformed {message} message: {reason}")
            }
            CodecError::TrailingBytes { count } => {
                write!(f, "{count} unexpected bytes after the message")
            }
            CodecError::NonCanonical { message } => {
                write!(f, "{message} message is not canonically encoded")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CodecError {}

/// Encodes `msg` in its envelope.
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.push(PROTOCOL_VERSION);
    out.push(M::KIND);
    let out = postcard::to_extend(msg, out).map_err(|reason| CodecError::Malformed {
        message: M::NAME,
        reason,
    })?;
    if out.len() > MAX_MESSAGE_LEN {
        return Err(CodecError::TooLarge {
            len: out.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    Ok(out)
}

/// Decodes a message of type `M` from its envelope. Never panics; allocates
/// at most what the bounded fields of `M` allow.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, CodecError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    let (&version, rest) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(CodecError::UnsupportedVersion {
            got: version,
            supported: PROTOCOL_VERSION,
        });
    }
    let (&kind, body) = rest.split_first().ok_or(CodecError::Malformed {
        message: M::NAME,
        reason: postcard::Error::DeserializeUnexpectedEnd,
    })?;
    if kind != M::KIND {
        return Err(CodecError::WrongKind {
            expected: M::NAME,
            got: kind,
        });
    }
    decode_body(body)
}

/// Decodes a bare postcard body (no envelope) that must be consumed entirely.
/// Used inside sealed boxes, whose plaintext has no envelope of its own.
pub(crate) fn decode_body<M: Message>(body: &[u8]) -> Result<M, CodecError> {
    let (msg, trailing) =
        postcard::take_from_bytes::<M>(body).map_err(|reason| CodecError::Malformed {
            message: M::NAME,
            reason,
        })?;
    if !trailing.is_empty() {
        return Err(CodecError::TrailingBytes {
            count: trailing.len(),
        });
    }
    // postcard accepts padded varints; re-encoding rejects them, so equal
    // messages always have equal bytes (nothing can be smuggled in encodings).
    if encode_body(&msg) != body {
        return Err(CodecError::NonCanonical { message: M::NAME });
    }
    Ok(msg)
}

/// Encodes a bare postcard body (canonical bytes for MACs, signatures and boxes).
pub(crate) fn encode_body<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serialising into a Vec only fails on a Serialize impl that errors, and
    // none of this crate's types do.
    postcard::to_allocvec(value).unwrap_or_default()
}
