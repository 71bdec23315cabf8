//! The agent's log lines on stderr, with syslog priorities that journald
//! understands (`<3>`…`<7>` prefixes) when stderr is a journal stream, and
//! a level below which lines are dropped (`log_level`, `--verbose`).

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// A line's priority, as syslog numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Something failed (3).
    Error = 3,
    /// Something may need the owner's attention (4).
    Warning = 4,
    /// What a tunnel did (6).
    Info = 6,
    /// Details for finding faults (7).
    Debug = 7,
}

impl Level {
    /// Parses `error`, `warning`, `info` or `debug`.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "error" => Level::Error,
            "warning" | "warn" => Level::Warning,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return None,
        })
    }

    fn word(self) -> &'static str {
        match self {
            Level::Error => "error: ",
            Level::Warning => "warning: ",
            Level::Info | Level::Debug => "",
        }
    }
}

static MAX: AtomicU8 = AtomicU8::new(Level::Info as u8);
static JOURNAL: OnceLock<bool> = OnceLock::new();

/// Lines above `level` (less important) are dropped from now on.
pub fn set_level(level: Level) {
    MAX.store(level as u8, Ordering::Relaxed);
}

/// Whether lines of `level` are written.
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX.load(Ordering::Relaxed)
}

/// True when stderr is the journal stream systemd named in
/// `JOURNAL_STREAM` (device:inode), as sd-daemon(3) says to check; a
/// redirected stderr of a child process is not.
fn to_journal() -> bool {
    *JOURNAL.get_or_init(|| {
        let Some(want) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Ok(st) = rustix::fs::fstat(std::io::stderr()) else {
            return false;
        };
        want.to_string_lossy() == format!("{}:{}", st.st_dev, st.st_ino)
    })
}

/// Writes one line at `level`.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    // One record per line: a newline inside a message (a hostile note, a
    // tool's error text) must not start a record with a priority of its own.
    let text = args.to_string().replace('\n', "\\n").replace('\r', "\\r");
    let line = if to_journal() {
        // journald adds the identifier and reads the priority off the prefix.
        format!("<{}>{}{text}\n", level as u8, level.word())
    } else {
        format!("support-agent: {}{text}\n", level.word())
    };
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs at error priority.
macro_rules! error {
    ($($t:tt)*) => { $crate::journal::write($crate::journal::Level::Error, format_args!($($t)*)) };
}
/// Logs at warning priority.
macro_rules! warning {
    ($($t:tt)*) => { $crate::journal::write($crate::journal::Level::Warning, format_args!($($t)*)) };
}
/// Logs at info priority.
macro_rules! info {
    ($($t:tt)*) => { $crate::journal::write($crate::journal::Level::Info, format_args!($($t)*)) };
}
/// Logs at debug priority.
macro_rules! debug {
    ($($t:tt)*) => { $crate::journal::write($crate::journal::Level::Debug, format_args!($($t)*)) };
}
pub(crate) use {debug, error, info, warning};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(Level::parse("warning"), Some(Level::Warning));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Error < Level::Debug);
    }
}
