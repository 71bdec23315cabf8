//! The local terminal: raw mode for `connect` (restored on drop, also on
//! error), its size, and a hidden passphrase prompt.

use std::io::{BufRead, IsTerminal, Write};

use rustix::termios::{self, LocalModes, OptionalActions, Termios};
use zeroize::Zeroizing;

use crate::secret_file::SecretError;

/// Puts stdin's terminal in raw mode until dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode if stdin is a terminal; `None` otherwise.
    pub fn enable() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        // Now, not Flush: keystrokes typed ahead while connecting are kept.
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// (columns, rows) of the terminal on stdout, or 80x24.
pub fn size() -> (u32, u32) {
    termios::tcgetwinsize(std::io::stdout())
        .ok()
        .filter(|w| w.ws_col > 0 && w.ws_row > 0)
        .map(|w| (u32::from(w.ws_col), u32::from(w.ws_row)))
        .unwrap_or((80, 24))
}

/// Reads a line from the terminal without echo.
pub fn read_hidden(prompt: &str) -> Result<Zeroizing<String>, SecretError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(SecretError::NoTerminal);
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let saved =
        termios::tcgetattr(&stdin).map_err(|e| SecretError::Terminal(std::io::Error::from(e)))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    let _ = termios::tcsetattr(&stdin, OptionalActions::Flush, &quiet);
    let mut line = Zeroizing::new(String::new());
    let r = stdin.lock().read_line(&mut line);
    let _ = termios::tcsetattr(&stdin, OptionalActions::Flush, &saved);
    eprintln!();
    r.map_err(SecretError::Terminal)?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_string(),
    ))
}
