//! A spinner with elapsed time on slow steps (a hub booting, a device
//! connecting). On a terminal it redraws one line; otherwise it prints the
//! step once and its outcome, so logs stay readable.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One slow step in progress.
pub struct Step {
    label: Arc<Mutex<String>>,
    done: Arc<AtomicBool>,
    started: Instant,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Step {
    /// Starts showing `label`.
    pub fn start(label: &str) -> Step {
        let tty = std::io::stderr().is_terminal();
        let label = Arc::new(Mutex::new(label.to_string()));
        let done = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        if !tty {
            eprintln!("{}...", label.lock().map(|l| l.clone()).unwrap_or_default());
        }
        let thread = tty.then(|| {
            let (label, done) = (label.clone(), done.clone());
            std::thread::spawn(move || {
                const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
                let mut i = 0;
                while !done.load(Ordering::SeqCst) {
                    let l = label.lock().map(|l| l.clone()).unwrap_or_default();
                    eprint!(
                        "\r\x1b[2K{} {l} ({}s)",
                        FRAMES[i % FRAMES.len()],
                        started.elapsed().as_secs()
                    );
                    let _ = std::io::stderr().flush();
                    i += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        });
        Step {
            label,
            done,
            started,
            thread,
        }
    }

    /// Changes the text (a provider reporting its own progress).
    pub fn set(&self, text: &str) {
        if let Ok(mut l) = self.label.lock() {
            if self.thread.is_none() && *l != text {
                eprintln!("{text}...");
            }
            *l = text.to_string();
        }
    }

    /// Ends the step with `outcome` and the elapsed time; returns the time.
    pub fn finish(mut self, outcome: &str) -> Duration {
        let took = self.started.elapsed();
        self.stop();
        eprintln!("{outcome} ({:.1}s)", took.as_secs_f64());
        took
    }

    fn stop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            eprint!("\r\x1b[2K");
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        self.stop();
    }
}
