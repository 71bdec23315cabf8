//! Prometheus text metrics: requests by route and status, tunnels by state,
//! long-polls waiting, store latency.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 8] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0];

/// The counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    store: Mutex<([u64; 8], u64, f64)>,
}

impl Metrics {
    /// Counts one request.
    pub fn request(&self, route: &'static str, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route, status))
            .or_default() += 1;
    }

    /// Records one store call's latency.
    pub fn store_latency(&self, d: Duration) {
        let s = d.as_secs_f64();
        let mut g = self.store.lock().unwrap_or_else(|p| p.into_inner());
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                g.0[i] += 1;
            }
        }
        g.1 += 1;
        g.2 += s;
    }

    /// Renders the text exposition format.
    pub fn render(&self, by_state: &[(&str, u64)], polls_waiting: i64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP support_cp_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE support_cp_requests_total counter");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "support_cp_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP support_cp_tunnels Tunnels by state.");
        let _ = writeln!(out, "# TYPE support_cp_tunnels gauge");
        for (state, n) in by_state {
            let _ = writeln!(out, "support_cp_tunnels{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP support_cp_long_polls_waiting Device long-polls being held."
        );
        let _ = writeln!(out, "# TYPE support_cp_long_polls_waiting gauge");
        let _ = writeln!(out, "support_cp_long_polls_waiting {polls_waiting}");
        let g = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# HELP support_cp_store_seconds Store call latency.");
        let _ = writeln!(out, "# TYPE support_cp_store_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "support_cp_store_seconds_bucket{{le=\"{b}\"}} {}",
                g.0[i]
            );
        }
        let _ = writeln!(
            out,
            "support_cp_store_seconds_bucket{{le=\"+Inf\"}} {}",
            g.1
        );
        let _ = writeln!(out, "support_cp_store_seconds_sum {}", g.2);
        let _ = writeln!(out, "support_cp_store_seconds_count {}", g.1);
        out
    }
}
