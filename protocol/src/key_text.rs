//! 32-byte keys as text: 64 hexadecimal characters, as the configuration
//! files, the CLI and the operator socket write them. One parser, one set of
//! messages, for every crate.

/// How many characters a key's text has.
pub const KEY_TEXT_LEN: usize = 64;

/// Why a text is not a 32-byte key. The messages do not repeat the text
/// (it may be a private key); callers add where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTextError {
    /// Not 64 characters long (after surrounding whitespace is trimmed).
    Length {
        /// How many characters there are.
        got: usize,
    },
    /// A character that is not a hexadecimal digit.
    NotHex {
        /// Its position, counting from 1.
        position: usize,
        /// The character.
        found: char,
    },
}

impl core::fmt::Display for KeyTextError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Length { got } => write!(
                f,
                "a key is {KEY_TEXT_LEN} hexadecimal characters (32 bytes), got {got}"
            ),
            Self::NotHex { position, found } => write!(
                f,
                "a key is {KEY_TEXT_LEN} hexadecimal characters (0-9, a-f), \
                 but character {position} is {found:?}"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for KeyTextError {}

/// Parses a 32-byte key from 64 hexadecimal characters (either case),
/// ignoring surrounding whitespace.
pub fn parse_key(text: &str) -> Result<[u8; 32], KeyTextError> {
    let text = text.trim();
    let got = text.chars().count();
    if got != KEY_TEXT_LEN {
        return Err(KeyTextError::Length { got });
    }
    let mut key = [0u8; 32];
    for (i, c) in text.chars().enumerate() {
        let digit = c.to_digit(16).ok_or(KeyTextError::NotHex {
            position: i + 1,
            found: c,
        })?;
        // A hex digit is below 16, so it fits a nibble.
        key[i / 2] |= (digit as u8) << if i % 2 == 0 { 4 } else { 0 };
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn parses_either_case_and_trims() {
        let mut want = [0u8; 32];
        want[0] = 0xab;
        want[31] = 0x0f;
        let text = alloc::format!(" AB{}0f\n", "00".repeat(30));
        assert_eq!(parse_key(&text), Ok(want));
        assert_eq!(parse_key(&"ab".repeat(32)), Ok([0xab; 32]));
    }

    #[test]
    fn says_what_is_wrong() {
        assert_eq!(parse_key(""), Err(KeyTextError::Length { got: 0 }));
        assert_eq!(
            parse_key(&"a".repeat(63)),
            Err(KeyTextError::Length { got: 63 })
        );
        assert_eq!(
            parse_key(&"a".repeat(66)),
            Err(KeyTextError::Length { got: 66 })
        );
        // Characters, not bytes: a multi-byte character counts once.
        let text = alloc::format!("{}é", "a".repeat(63));
        assert_eq!(
            parse_key(&text),
            Err(KeyTextError::NotHex {
                position: 64,
                found: 'é'
            })
        );
        let text = alloc::format!("0x{}", "a".repeat(62));
        let e = parse_key(&text).err();
        assert_eq!(
            e,
            Some(KeyTextError::NotHex {
                position: 2,
                found: 'x'
            })
        );
        assert_eq!(
            e.map(|e| e.to_string()).unwrap_or_default(),
            "a key is 64 hexadecimal characters (0-9, a-f), but character 2 is 'x'"
        );
        assert_eq!(
            KeyTextError::Length { got: 3 }.to_string(),
            "a key is 64 hexadecimal characters (32 bytes), got 3"
        );
    }
}
