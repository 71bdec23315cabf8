//! Durations as people type and read them: "90m", "24h", "7d" in, "1h 05m"
//! out. The agent and the admin CLI take durations on their command lines
//! and show them back, and the request carries them as whole seconds.

use alloc::format;
use alloc::string::{String, ToString};

/// "90s", "15m", "24h", "7d", or plain seconds, as seconds. Zero, and
/// anything that does not fit a `u32` (the request's field), is refused.
pub fn parse(text: &str) -> Result<u32, String> {
    let s = text.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 90m, 24h, 7d)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use s, m, h or d)")),
    };
    match n.checked_mul(mult) {
        Some(0) => Err("a duration of zero is not allowed".to_string()),
        Some(secs) => u32::try_from(secs).map_err(|_| format!("'{s}' is too long")),
        None => Err(format!("'{s}' is too long")),
    }
}

/// "2d 03h", "1h 05m", "4m 02s", "42s".
pub fn format(secs: u64) -> String {
    match secs {
        s if s >= 86400 => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
        s if s >= 3600 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_refuses_the_rest() {
        assert_eq!(parse("90m"), Ok(5400));
        assert_eq!(parse(" 2h "), Ok(7200));
        assert_eq!(parse("600"), Ok(600));
        assert_eq!(parse("1d"), Ok(86400));
        let refusal = |s: &str| parse(s).expect_err(s);
        assert_eq!(refusal("0h"), "a duration of zero is not allowed");
        assert_eq!(refusal("3w"), "'3w': unknown unit 'w' (use s, m, h or d)");
        assert_eq!(refusal("h"), "'h' is not a duration (e.g. 90m, 24h, 7d)");
        assert_eq!(refusal("99999999999d"), "'99999999999d' is too long");
        assert_eq!(refusal("4294967296"), "'4294967296' is too long");
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format(42), "42s");
        assert_eq!(format(242), "4m 02s");
        assert_eq!(format(3900), "1h 05m");
        assert_eq!(format(183_600), "2d 03h");
    }
}
