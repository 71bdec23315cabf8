//! The one-time code: what the owner passes to support out of band.
//!
//! It carries the tunnel id (64 bits) and the one-time secret (128 bits) in
//! one copy-pasteable token of 42 characters, shown in groups of six:
//!
//! ```text
//! 1Z4K9M-Q0WX7T-...   (7 groups)
//! ```
//!
//! * Alphabet: Crockford base32 (`0-9 A-Z` without `I L O U`). Decoding
//!   ignores case, spaces, dashes and underscores, and reads `O` as `0` and
//!   `I`/`L` as `1`, the usual misreadings.
//! * Layout: 39 symbols hold the 192 payload bits (the last 3 bits are zero),
//!   then 3 check symbols.
//! * Check: read as a base-32 number, the whole 42-symbol code is divisible
//!   by the prime P = 32749. A single-symbol substitution changes that number
//!   by `d * 32^i` with `0 < |d| < 32`, and swapping two adjacent symbols by
//!   `(a - b) * 31 * 32^i`; neither is divisible by a prime above 31, so
//!   every such typo is detected (anywhere, check symbols included). Other
//!   random corruption passes with probability about 1/32749, and then the
//!   request tag still fails to verify.

use alloc::string::String;
use core::fmt;
use zeroize::Zeroizing;

use crate::ids::TunnelId;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CHECK_PRIME: u32 = 32749;
const DATA_SYMBOLS: usize = 39;
const CHECK_SYMBOLS: usize = 3;
/// Symbols in a code, without separators.
pub const CODE_SYMBOLS: usize = DATA_SYMBOLS + CHECK_SYMBOLS;
const GROUP: usize = 6;

/// The 128-bit one-time secret. Never logged, never sent to the control plane.
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimeSecret(Zeroizing<[u8; 16]>);

impl OneTimeSecret {
    /// Wraps 16 secret bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes (key material for HKDF).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for OneTimeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneTimeSecret(<redacted>)")
    }
}

/// Why a typed code was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeError {
    /// The code has the wrong number of symbols (separators not counted).
    WrongLength {
        /// Symbols found.
        got: usize,
    },
    /// A character outside the code's alphabet.
    InvalidCharacter {
        /// The character.
        ch: char,
        /// Its position among the symbols (1-based).
        position: usize,
    },
    /// The check symbols do not match: the code was mistyped.
    Mistyped,
}

impl fmt::Display for CodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeError::WrongLength { got } => write!(
                f,
                "the one-time code has {got} characters but must have {CODE_SYMBOLS} (dashes and spaces do not count); was it cut off?"
            ),
            CodeError::InvalidCharacter { ch, position } => write!(
                f,
                "character {position} of the one-time code ({ch:?}) cannot occur in a code; codes use 0-9 and A-Z without I, L, O, U"
            ),
            CodeError::Mistyped => f.write_str(
                "the one-time code is mistyped (its check characters do not match); ask the owner to read it again",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CodeError {}

/// A one-time code: the tunnel id and the one-time secret.
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimeCode {
    /// The tunnel the code belongs to.
    pub tunnel_id: TunnelId,
    /// The secret it carries.
    pub secret: OneTimeSecret,
}

impl fmt::Debug for OneTimeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OneTimeCode {{ tunnel_id: {}, secret: <redacted> }}",
            self.tunnel_id
        )
    }
}

fn symbol_value(ch: char) -> Option<u8> {
    let up = ch.to_ascii_uppercase();
    let up = match up {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    ALPHABET
        .iter()
        .position(|&a| a as char == up)
        .map(|v| v as u8)
}

fn horner(symbols: &[u8]) -> u32 {
    symbols
        .iter()
        .fold(0u32, |r, &s| (r * 32 + u32::from(s)) % CHECK_PRIME)
}

impl OneTimeCode {
    fn symbols(&self) -> [u8; CODE_SYMBOLS] {
        let mut payload = [0u8; 24];
        payload[..8].copy_from_slice(&self.tunnel_id.to_bytes());
        payload[8..].copy_from_slice(self.secret.as_bytes());
        let mut out = [0u8; CODE_SYMBOLS];
        for (i, sym) in out.iter_mut().take(DATA_SYMBOLS).enumerate() {
            *sym = read_bits(&payload, i * 5);
        }
        // Append check symbols C so that the whole code is 0 modulo the prime.
        let r = horner(&out[..DATA_SYMBOLS]) * (32 * 32 * 32 % CHECK_PRIME) % CHECK_PRIME;
        let c = (CHECK_PRIME - r) % CHECK_PRIME;
        out[DATA_SYMBOLS] = (c >> 10) as u8 & 31;
        out[DATA_SYMBOLS + 1] = (c >> 5) as u8 & 31;
        out[DATA_SYMBOLS + 2] = c as u8 & 31;
        out
    }

    /// The code as shown to the owner: 42 symbols in groups of six.
    pub fn to_display_string(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(CODE_SYMBOLS + CODE_SYMBOLS / GROUP));
        for (i, sym) in self.symbols().iter().enumerate() {
            if i > 0 && i % GROUP == 0 {
                s.push('-');
            }
            s.push(ALPHABET[usize::from(*sym)] as char);
        }
        s
    }

    /// Parses a typed or pasted code.
    pub fn parse(text: &str) -> Result<Self, CodeError> {
        let mut symbols = Zeroizing::new([0u8; CODE_SYMBOLS]);
        let mut n = 0usize;
        for ch in text.chars() {
            if ch == '-' || ch == '_' || ch.is_whitespace() {
                continue;
            }
            let v = symbol_value(ch).ok_or(CodeError::InvalidCharacter {
                ch,
                position: n + 1,
            })?;
            if n < CODE_SYMBOLS {
                symbols[n] = v;
            }
            n += 1;
        }
        if n != CODE_SYMBOLS {
            return Err(CodeError::WrongLength { got: n });
        }
        if horner(&symbols[..]) != 0 {
            return Err(CodeError::Mistyped);
        }
        let mut payload = Zeroizing::new([0u8; 25]);
        for (i, &sym) in symbols.iter().take(DATA_SYMBOLS).enumerate() {
            write_bits(&mut payload[..], i * 5, sym);
        }
        // The 3 bits past the payload must be zero: one code, one encoding.
        if payload[24] != 0 {
            return Err(CodeError::Mistyped);
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&payload[..8]);
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&payload[8..24]);
        Ok(Self {
            tunnel_id: TunnelId::from_random(id),
            secret: OneTimeSecret::from_bytes(secret),
        })
    }
}

/// 5 bits starting at bit `pos` (MSB first); bits past the end read as 0.
fn read_bits(bytes: &[u8], pos: usize) -> u8 {
    let mut v = 0u8;
    for k in 0..5 {
        let bit = pos + k;
        let b = bytes
            .get(bit / 8)
            .map_or(0, |byte| (byte >> (7 - bit % 8)) & 1);
        v = (v << 1) | b;
    }
    v
}

fn write_bits(bytes: &mut [u8], pos: usize, value: u8) {
    for k in 0..5 {
        let bit = pos + k;
        if (value >> (4 - k)) & 1 == 1 {
            if let Some(byte) = bytes.get_mut(bit / 8) {
                *byte |= 1 << (7 - bit % 8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u8) -> OneTimeCode {
        let mut secret = [0u8; 16];
        for (k, b) in secret.iter_mut().enumerate() {
            *b = i.wrapping_mul(37).wrapping_add(k as u8 * 11);
        }
        OneTimeCode {
            tunnel_id: TunnelId(u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            secret: OneTimeSecret::from_bytes(secret),
        }
    }

    #[test]
    fn round_trips_and_tolerates_case_spaces_dashes_and_misreadings() {
        for i in 0..64 {
            let code = sample(i);
            let shown = code.to_display_string();
            assert_eq!(shown.len(), CODE_SYMBOLS + 6);
            assert_eq!(OneTimeCode::parse(&shown), Ok(code.clone()));
            let sloppy: String = shown
                .chars()
                .map(|c| match c {
                    '0' => 'o',
                    '1' => 'l',
                    '-' => ' ',
                    c => c.to_ascii_lowercase(),
                })
                .collect();
            assert_eq!(OneTimeCode::parse(&sloppy), Ok(code));
        }
    }

    #[test]
    fn every_single_substitution_is_detected() {
        for i in 0..16 {
            let symbols = sample(i).symbols();
            for pos in 0..CODE_SYMBOLS {
                for v in 0..32u8 {
                    if v == symbols[pos] {
                        continue;
                    }
                    let mut bad = symbols;
                    bad[pos] = v;
                    let text: String = bad
                        .iter()
                        .map(|&s| ALPHABET[usize::from(s)] as char)
                        .collect();
                    assert_eq!(
                        OneTimeCode::parse(&text),
                        Err(CodeError::Mistyped),
                        "pos {pos} -> {v}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_adjacent_transposition_is_detected() {
        for i in 0..64 {
            let symbols = sample(i).symbols();
            for pos in 0..CODE_SYMBOLS - 1 {
                if symbols[pos] == symbols[pos + 1] {
                    continue;
                }
                let mut bad = symbols;
                bad.swap(pos, pos + 1);
                let text: String = bad
                    .iter()
                    .map(|&s| ALPHABET[usize::from(s)] as char)
                    .collect();
                assert_eq!(
                    OneTimeCode::parse(&text),
                    Err(CodeError::Mistyped),
                    "swap at {pos}"
                );
            }
        }
    }

    #[test]
    fn wrong_length_and_foreign_characters_say_so() {
        let shown = sample(1).to_display_string();
        assert_eq!(
            OneTimeCode::parse(&shown[..shown.len() - 1]),
            Err(CodeError::WrongLength { got: 41 })
        );
        assert_eq!(
            OneTimeCode::parse(""),
            Err(CodeError::WrongLength { got: 0 })
        );
        let mut s = String::from(shown.as_str());
        s.replace_range(0..1, "U");
        assert_eq!(
            OneTimeCode::parse(&s),
            Err(CodeError::InvalidCharacter {
                ch: 'U',
                position: 1
            })
        );
        assert!(matches!(
            OneTimeCode::parse("ü"),
            Err(CodeError::InvalidCharacter { .. })
        ));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let code = sample(3);
        let dbg = alloc::format!("{code:?} {:?}", code.secret);
        let secret_hex: String = code
            .secret
            .as_bytes()
            .iter()
            .map(|b| alloc::format!("{b:02x}"))
            .collect();
        let shown = code.to_display_string();
        assert!(!dbg.contains(&secret_hex));
        assert!(!dbg.contains(&shown[7..20]), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }
}
