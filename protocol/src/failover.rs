//! Calls to a control plane named by several URLs (replicas over one
//! store): the one that answered last first, then each other in turn while
//! they do not answer. The device agent and the admin CLI both call it.

use core::sync::atomic::{AtomicUsize, Ordering};

/// Which of several replicas answered last: calls start there, so a dead
/// replica costs one failed connection, not one per call.
#[derive(Debug, Default)]
pub struct Failover {
    last_answered: AtomicUsize,
}

impl Failover {
    /// Calls `call_at(i)` for replicas `i` in `0..count`, from the one that
    /// answered last, until one answers (any result but an error that
    /// `unreachable` picks out), and remembers that one. When none
    /// answers: the last replica's error, or `none` when `count` is 0.
    pub fn call<T, E>(
        &self,
        count: usize,
        none: E,
        unreachable: impl Fn(&E) -> bool,
        mut call_at: impl FnMut(usize) -> Result<T, E>,
    ) -> Result<T, E> {
        let first = self.last_answered.load(Ordering::Relaxed);
        let mut last = none;
        for i in 0..count {
            let at = (first + i) % count;
            match call_at(at) {
                Err(e) if unreachable(&e) => last = e,
                answered => {
                    self.last_answered.store(at, Ordering::Relaxed);
                    return answered;
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::Failover;
    use alloc::vec::Vec;

    /// Replicas up or down; records the order they were tried in.
    fn calls(f: &Failover, up: &[bool], tried: &mut Vec<usize>) -> Result<usize, &'static str> {
        f.call(
            up.len(),
            "none",
            |e| *e == "down",
            |i| {
                tried.push(i);
                if up[i] {
                    Ok(i)
                } else {
                    Err("down")
                }
            },
        )
    }

    #[test]
    fn a_call_starts_at_the_replica_that_answered_last() {
        let f = Failover::default();
        let mut tried = Vec::new();
        assert_eq!(calls(&f, &[false, true, true], &mut tried), Ok(1));
        assert_eq!(tried, [0, 1]);
        tried.clear();
        assert_eq!(calls(&f, &[true, true, true], &mut tried), Ok(1));
        assert_eq!(tried, [1], "the dead first replica is not tried again");
        tried.clear();
        assert_eq!(calls(&f, &[true, false, false], &mut tried), Ok(0));
        assert_eq!(tried, [1, 2, 0], "wraps around");
    }

    #[test]
    fn an_answer_that_is_an_error_ends_the_call_and_none_answering_gives_the_last_error() {
        let f = Failover::default();
        let refused = f.call(2, "none", |e| *e == "down", |_| Err::<(), _>("refused"));
        assert_eq!(refused, Err("refused"));
        let mut tried = Vec::new();
        assert_eq!(calls(&f, &[false, false], &mut tried), Err("down"));
        assert_eq!(tried, [0, 1]);
        assert_eq!(calls(&f, &[], &mut tried), Err("none"));
    }
}
