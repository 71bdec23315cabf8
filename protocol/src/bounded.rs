//! Length-bounded containers for message fields.
//!
//! Every variable-length field of every message is one of these, so a decoder
//! never allocates more than the field's bound, whatever length prefix the
//! input claims. They allocate on the heap (rather than `heapless`' inline
//! storage) so that a 60 KiB list response does not live on a device's stack.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Deref;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// A value was longer than its field allows, or a string held a control character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundError {
    /// The value has `len` items (bytes for strings); the field allows `max`.
    TooLong {
        /// Actual length.
        len: usize,
        /// The field's bound.
        max: usize,
    },
    /// A fixed-size field had the wrong length.
    WrongLength {
        /// Actual length.
        len: usize,
        /// Required length.
        expected: usize,
    },
    /// Strings are shown to people; control characters (terminal escapes) are refused.
    ControlCharacter,
}

impl fmt::Display for BoundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoundError::TooLong { len, max } => {
                write!(f, "{len} items where at most {max} are allowed")
            }
            BoundError::WrongLength { len, expected } => {
                write!(f, "{len} bytes where exactly {expected} are required")
            }
            BoundError::ControlCharacter => {
                f.write_str("text contains a control or invisible formatting character")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BoundError {}

/// A vector of at most `MAX` items.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct BoundedVec<T, const MAX: usize>(Vec<T>);

impl<T, const MAX: usize> BoundedVec<T, MAX> {
    /// The largest number of items this field holds.
    pub const MAX: usize = MAX;

    /// Wraps `items` if there are at most `MAX` of them.
    pub fn new(items: Vec<T>) -> Result<Self, BoundError> {
        if items.len() > MAX {
            return Err(BoundError::TooLong {
                len: items.len(),
                max: MAX,
            });
        }
        Ok(Self(items))
    }

    /// An empty vector.
    pub fn empty() -> Self {
        Self(Vec::new())
    }

    /// Appends an item if there is room.
    pub fn push(&mut self, item: T) -> Result<(), BoundError> {
        if self.0.len() >= MAX {
            return Err(BoundError::TooLong {
                len: self.0.len() + 1,
                max: MAX,
            });
        }
        self.0.push(item);
        Ok(())
    }

    /// The items.
    pub fn into_inner(self) -> Vec<T> {
        self.0
    }
}

impl<T: Clone, const MAX: usize> TryFrom<&[T]> for BoundedVec<T, MAX> {
    type Error = BoundError;
    fn try_from(items: &[T]) -> Result<Self, BoundError> {
        Self::new(items.to_vec())
    }
}

impl<T, const MAX: usize> Deref for BoundedVec<T, MAX> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: fmt::Debug, const MAX: usize> fmt::Debug for BoundedVec<T, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: Serialize, const MAX: usize> Serialize for BoundedVec<T, MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for BoundedVec<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const MAX: usize>(core::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for V<T, MAX> {
            type Value = BoundedVec<T, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a sequence of at most {MAX} items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let claimed = seq.size_hint().unwrap_or(0);
                if claimed > MAX {
                    return Err(de::Error::invalid_length(claimed, &self));
                }
                let mut items = Vec::with_capacity(claimed);
                while let Some(item) = seq.next_element()? {
                    if items.len() == MAX {
                        return Err(de::Error::invalid_length(MAX + 1, &self));
                    }
                    items.push(item);
                }
                Ok(BoundedVec(items))
            }
        }
        d.deserialize_seq(V::<T, MAX>(core::marker::PhantomData))
    }
}

/// A byte string of at most `MAX` bytes, encoded compactly as bytes.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct BoundedBytes<const MAX: usize>(Vec<u8>);

impl<const MAX: usize> BoundedBytes<MAX> {
    /// Wraps `bytes` if there are at most `MAX` of them.
    pub fn new(bytes: Vec<u8>) -> Result<Self, BoundError> {
        if bytes.len() > MAX {
            return Err(BoundError::TooLong {
                len: bytes.len(),
                max: MAX,
            });
        }
        Ok(Self(bytes))
    }

    /// The bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.0
    }
}

impl<const MAX: usize> Deref for BoundedBytes<MAX> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const MAX: usize> fmt::Debug for BoundedBytes<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BoundedBytes({} bytes)", self.0.len())
    }
}

impl<const MAX: usize> Serialize for BoundedBytes<MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

struct BytesVisitor {
    min: usize,
    max: usize,
}

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "exactly {} bytes", self.max)
        } else {
            write!(f, "at most {} bytes", self.max)
        }
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        if v.len() < self.min || v.len() > self.max {
            return Err(E::invalid_length(v.len(), &self));
        }
        Ok(v.to_vec())
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for BoundedBytes<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(BytesVisitor { min: 0, max: MAX })
            .map(Self)
    }
}

/// Exactly `N` bytes (keys, hashes, signatures, ciphertexts), encoded as bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixedBytes<const N: usize>(pub [u8; N]);

impl<const N: usize> Deref for FixedBytes<N> {
    type Target = [u8; N];
    fn deref(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> From<[u8; N]> for FixedBytes<N> {
    fn from(b: [u8; N]) -> Self {
        Self(b)
    }
}

impl<const N: usize> TryFrom<&[u8]> for FixedBytes<N> {
    type Error = BoundError;
    fn try_from(b: &[u8]) -> Result<Self, BoundError> {
        <[u8; N]>::try_from(b)
            .map(Self)
            .map_err(|_| BoundError::WrongLength {
                len: b.len(),
                expected: N,
            })
    }
}

impl<const N: usize> fmt::Debug for FixedBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Public values only ever live in FixedBytes; show a short prefix.
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}…({N} bytes)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

impl<const N: usize> Serialize for FixedBytes<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de, const N: usize> Deserialize<'de> for FixedBytes<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = d.deserialize_bytes(BytesVisitor { min: N, max: N })?;
        FixedBytes::try_from(v.as_slice()).map_err(de::Error::custom)
    }
}

/// Control characters, and the invisible formatting characters that let
/// text display as something it is not (bidi overrides, zero-width joiners,
/// soft hyphens, byte-order marks).
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// UTF-8 text of at most `MAX` bytes without control characters.
///
/// Hostnames, names and notes are shown on the engineer's terminal; refusing
/// control characters means a hostile device cannot inject terminal escapes.
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct BoundedString<const MAX: usize>(String);

impl<const MAX: usize> BoundedString<MAX> {
    /// Checks the bound and the character rule.
    pub fn new(s: &str) -> Result<Self, BoundError> {
        if s.len() > MAX {
            return Err(BoundError::TooLong {
                len: s.len(),
                max: MAX,
            });
        }
        if s.chars().any(is_hidden) {
            return Err(BoundError::ControlCharacter);
        }
        Ok(Self(String::from(s)))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> Deref for BoundedString<MAX> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> fmt::Debug for BoundedString<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<const MAX: usize> fmt::Display for BoundedString<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> Serialize for BoundedString<MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for BoundedString<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const MAX: usize>;
        impl<'de, const MAX: usize> Visitor<'de> for V<MAX> {
            type Value = BoundedString<MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "text of at most {MAX} bytes without control characters")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                BoundedString::new(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V::<MAX>)
    }
}

#[cfg(feature = "proptest")]
mod strategies {
    use super::*;
    use proptest::prelude::*;

    impl<T: Arbitrary + 'static, const MAX: usize> Arbitrary for BoundedVec<T, MAX> {
        type Parameters = ();
        type Strategy = BoxedStrategy<Self>;
        fn arbitrary_with(_: ()) -> Self::Strategy {
            proptest::collection::vec(any::<T>(), 0..=MAX.min(8))
                .prop_map(BoundedVec)
                .boxed()
        }
    }

    impl<const MAX: usize> Arbitrary for BoundedBytes<MAX> {
        type Parameters = ();
        type Strategy = BoxedStrategy<Self>;
        fn arbitrary_with(_: ()) -> Self::Strategy {
            proptest::collection::vec(any::<u8>(), 0..=MAX.min(512))
                .prop_map(BoundedBytes)
                .boxed()
        }
    }

    impl<const N: usize> Arbitrary for FixedBytes<N> {
        type Parameters = ();
        type Strategy = BoxedStrategy<Self>;
        fn arbitrary_with(_: ()) -> Self::Strategy {
            proptest::collection::vec(any::<u8>(), N)
                .prop_map(|v| FixedBytes(v.try_into().unwrap_or([0; N])))
                .boxed()
        }
    }

    impl<const MAX: usize> Arbitrary for BoundedString<MAX> {
        type Parameters = ();
        type Strategy = BoxedStrategy<Self>;
        fn arbitrary_with(_: ()) -> Self::Strategy {
            "[a-zA-Z0-9 .:_\\-é漢]{0,24}"
                .prop_filter_map("fits", |s: String| BoundedString::new(&s).ok())
                .boxed()
        }
    }
}
