//! The tunnel state machine, as a table: every state against every event.

use support_protocol::ids::ApprovalSeq;
use support_protocol::state::{Event, TransitionError, TunnelState};

const A1: ApprovalSeq = ApprovalSeq(1);
const A2: ApprovalSeq = ApprovalSeq(2);

#[test]
fn every_state_against_every_event() {
    use Event as E;
    use TunnelState as S;
    type Row = (S, E, Result<S, TransitionError>);
    let table: &[Row] = &[
        (S::Pending, E::Approve(A1), Ok(S::Approved(A1))),
        (
            S::Pending,
            E::Connect(A1),
            Err(TransitionError::NotApproved),
        ),
        (S::Pending, E::Stop, Ok(S::Stopped)),
        (S::Pending, E::Expire, Ok(S::Expired)),
        (S::Pending, E::Fail, Ok(S::Failed)),
        (S::Approved(A1), E::Approve(A2), Ok(S::Approved(A2))),
        (
            S::Approved(A1),
            E::Approve(A1),
            Err(TransitionError::StaleApproval {
                current: A1,
                offered: A1,
            }),
        ),
        (
            S::Approved(A2),
            E::Approve(A1),
            Err(TransitionError::StaleApproval {
                current: A2,
                offered: A1,
            }),
        ),
        (S::Approved(A1), E::Connect(A1), Ok(S::Connected(A1))),
        (
            S::Approved(A2),
            E::Connect(A1),
            Err(TransitionError::NotApproved),
        ),
        (S::Approved(A1), E::Stop, Ok(S::Stopped)),
        (S::Approved(A1), E::Expire, Ok(S::Expired)),
        (S::Approved(A1), E::Fail, Ok(S::Failed)),
        (
            S::Connected(A1),
            E::Approve(A2),
            Err(TransitionError::AlreadyConnected),
        ),
        (S::Connected(A1), E::Connect(A1), Ok(S::Connected(A1))),
        (
            S::Connected(A1),
            E::Connect(A2),
            Err(TransitionError::NotApproved),
        ),
        (S::Connected(A1), E::Stop, Ok(S::Stopped)),
        (S::Connected(A1), E::Expire, Ok(S::Expired)),
        (S::Connected(A1), E::Fail, Ok(S::Failed)),
    ];
    for (state, event, expected) in table {
        assert_eq!(state.apply(*event), *expected, "{state:?} + {event:?}");
    }
    for end in [S::Stopped, S::Expired, S::Failed] {
        for event in [E::Approve(A2), E::Connect(A1), E::Stop, E::Expire, E::Fail] {
            assert_eq!(
                end.apply(event),
                Err(TransitionError::Ended(end)),
                "{end:?} + {event:?}"
            );
        }
    }
}

#[test]
fn states_only_move_forward() {
    // Rank states; no sequence of events ever lowers the rank.
    fn rank(s: TunnelState) -> u8 {
        match s {
            TunnelState::Pending => 0,
            TunnelState::Approved(_) => 1,
            TunnelState::Connected(_) => 2,
            _ => 3,
        }
    }
    let events = [
        Event::Approve(A1),
        Event::Approve(A2),
        Event::Connect(A1),
        Event::Connect(A2),
        Event::Stop,
        Event::Expire,
        Event::Fail,
    ];
    let mut frontier = vec![TunnelState::Pending];
    for _ in 0..4 {
        let mut next = Vec::new();
        for s in &frontier {
            for e in events {
                if let Ok(t) = s.apply(e) {
                    assert!(rank(t) >= rank(*s), "{s:?} + {e:?} -> {t:?}");
                    if let (Some(a), Some(b)) = (s.approval(), t.approval()) {
                        assert!(b >= a, "approval went back: {s:?} -> {t:?}");
                    }
                    next.push(t);
                }
            }
        }
        frontier = next;
    }
}
