//! Stable error codes. The numbers are part of the protocol: never reuse one.

use core::fmt;
use serde::{Deserialize, Serialize};

use crate::bounded::BoundedString;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, )*) => {
        /// What went wrong with a call, as a stable number.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        #[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
        pub enum ErrorCode { $( $(#[$doc])* $name, )* }

        impl ErrorCode {
            /// The code's number on the wire.
            pub fn number(self) -> u16 { match self { $( ErrorCode::$name => $num, )* } }
            /// The code with this number, if it exists.
            pub fn from_number(n: u16) -> Option<Self> { match n { $( $num => Some(ErrorCode::$name), )* _ => None } }
            /// A short name for the code.
            pub fn name(self) -> &'static str { match self { $( ErrorCode::$name => stringify!($name), )* } }
        }
    };
}

error_codes! {
    /// The request did not decode.
    Malformed = 1,
    /// The request's protocol version is not supported.
    UnsupportedVersion = 2,
    /// The request is larger than allowed.
    TooLarge = 3,
    /// The caller's key is not known (not an enrolled admin, not a tunnel credential).
    Unauthenticated = 10,
    /// The caller is known but may not do this (a viewer approving, a credential of another tunnel).
    Forbidden = 11,
    /// No such tunnel.
    NotFound = 20,
    /// A tunnel with this id exists with different contents.
    AlreadyExists = 21,
    /// The tunnel's state does not allow this (e.g. approving a stopped tunnel).
    InvalidState = 30,
    /// The approval compare-and-set failed: someone approved in between, or the approval is older.
    StaleApproval = 31,
    /// Too many requests; try again later.
    RateLimited = 40,
    /// The control plane failed; try again later.
    Internal = 50,
    /// The control plane is shutting down or overloaded; try again later.
    Unavailable = 51,
}

impl ErrorCode {
    /// Whether retrying the same call later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::Unavailable
        )
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.number())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u16::deserialize(d)?;
        ErrorCode::from_number(n).ok_or_else(|| serde::de::Error::custom("unknown error code"))
    }
}

/// An error answer: a stable code and a human-readable message.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "proptest", derive(proptest_derive::Arbitrary))]
pub struct ApiError {
    /// The stable code, for programs.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: BoundedString<200>,
}

impl ApiError {
    /// An error with `code` and `message` (cut to fit, control characters replaced).
    pub fn new(code: ErrorCode, message: &str) -> Self {
        let mut text = alloc::string::String::new();
        for ch in message.chars() {
            let ch = if ch.is_control() { ' ' } else { ch };
            if text.len() + ch.len_utf8() > 200 {
                break;
            }
            text.push(ch);
        }
        Self {
            code,
            message: BoundedString::new(&text).unwrap_or_default(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (error {} {})",
            self.message,
            self.code.number(),
            self.code.name()
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ApiError {}
