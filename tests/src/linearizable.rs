//! A linearizability checker for a register: the algorithm of Wing and Gong with Lowe's
//! memoisation, in the iterative, list-based form Porcupine uses. Given a history of
//! operations on one key, each with its call time and (if the client learned it) its return
//! time, it says whether some order of the operations, each taking effect at one instant
//! between its call and its return, explains every read.
//!
//! A write whose outcome the client never learned (a timeout, a connection cut) may have taken
//! effect at any time after its call, or never: it gets a return at the end of time, where
//! taking effect changes nothing anyone read.

use std::collections::HashSet;

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Wrote this value.
    Write(u32),
    /// Read this value (`None`: the key did not exist).
    Read(Option<u32>),
}

/// One operation of a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// When the client sent it (any monotonic clock, the same for every client).
    pub call: u64,
    /// When the answer arrived; `None` when the outcome is unknown (writes only: a read
    /// without an answer read nothing and is left out).
    pub ret: Option<u64>,
    /// What it did.
    pub kind: Kind,
}

const NIL: usize = usize::MAX;

/// Whether `ops`, a register starting absent, is linearizable.
pub fn linearizable(ops: &[Op]) -> bool {
    // A write of unknown outcome whose value nobody read can always be taken to happen last
    // (or never) without changing any read, so it is left out: under a partition clients may
    // leave hundreds of them, and each would multiply the orders to try.
    let read: HashSet<u32> = ops.iter().filter_map(|o| if let Kind::Read(Some(v)) = o.kind { Some(v) } else { None }).collect();
    let ops: Vec<Op> = ops.iter().copied().filter(|o| o.ret.is_some() || matches!(o.kind, Kind::Write(v) if read.contains(&v))).collect();
    let ops = ops.as_slice();
    // Events: each operation's call and return, in time order; at equal times a return goes
    // first (the operations did not overlap).
    let mut ev: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, o) in ops.iter().enumerate() {
        ev.push((o.call, 1, i));
        ev.push((o.ret.unwrap_or(u64::MAX), 0, i));
    }
    ev.sort();
    let n = ev.len();
    if n == 0 {
        return true;
    }
    let head = n;
    let mut next = vec![NIL; n + 1];
    let mut prev = vec![NIL; n + 1];
    next[head] = 0;
    prev[0] = head;
    for k in 0..n {
        next[k] = if k + 1 < n { k + 1 } else { NIL };
        if k + 1 < n {
            prev[k + 1] = k;
        }
    }
    let mut ret_of = vec![NIL; ops.len()];
    for (k, e) in ev.iter().enumerate() {
        if e.1 == 0 {
            ret_of[e.2] = k;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, k: usize| {
        next[prev[k]] = next[k];
        if next[k] != NIL {
            prev[next[k]] = prev[k];
        }
    };
    // Re-linking in the reverse order of unlinking restores the list exactly.
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, k: usize| {
        next[prev[k]] = k;
        if next[k] != NIL {
            prev[next[k]] = k;
        }
    };
    let words = ops.len().div_ceil(64);
    let mut done = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Option<u32>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u32>)> = Vec::new();
    let mut state: Option<u32> = None;
    let mut entry = next[head];
    while next[head] != NIL {
        let (_, is_call, op) = ev[entry];
        if is_call == 1 {
            let after = match ops[op].kind {
                Kind::Write(v) => Some(Some(v)),
                Kind::Read(v) => (v == state).then_some(state),
            };
            if let Some(after) = after {
                let mut tried = done.clone();
                tried[op / 64] |= 1 << (op % 64);
                if seen.insert((tried.clone(), after)) {
                    stack.push((entry, state));
                    state = after;
                    done = tried;
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, ret_of[op]);
                    entry = next[head];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // A return whose call nothing could place before it: undo the last choice.
            let Some((e, s)) = stack.pop() else { return false };
            let op = ev[e].2;
            state = s;
            done[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, ret_of[op]);
            relink(&mut next, &mut prev, e);
            entry = next[e];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: Option<u64>, kind: Kind) -> Op {
        Op { call, ret, kind }
    }

    #[test]
    fn sequential_histories_are_judged_by_their_values() {
        assert!(linearizable(&[]));
        assert!(linearizable(&[op(0, Some(1), Kind::Read(None)), op(2, Some(3), Kind::Write(1)), op(4, Some(5), Kind::Read(Some(1)))]));
        // A read after an acknowledged write that does not see it: stale.
        assert!(!linearizable(&[op(0, Some(1), Kind::Write(1)), op(2, Some(3), Kind::Read(None))]));
        assert!(!linearizable(&[op(0, Some(1), Kind::Write(1)), op(2, Some(3), Kind::Write(2)), op(4, Some(5), Kind::Read(Some(1)))]));
        // A value nobody wrote.
        assert!(!linearizable(&[op(0, Some(1), Kind::Read(Some(7)))]));
    }

    #[test]
    fn overlapping_operations_may_take_effect_in_either_order() {
        // The read overlaps the write: it may see either value.
        assert!(linearizable(&[op(0, Some(10), Kind::Write(1)), op(1, Some(2), Kind::Read(None))]));
        assert!(linearizable(&[op(0, Some(10), Kind::Write(1)), op(1, Some(2), Kind::Read(Some(1)))]));
        // Two reads in a row inside one write: once one saw the new value, a later one must.
        assert!(!linearizable(&[op(0, Some(10), Kind::Write(1)), op(1, Some(2), Kind::Read(Some(1))), op(3, Some(4), Kind::Read(None))]));
    }

    #[test]
    fn a_write_of_unknown_outcome_may_have_happened_or_not_but_not_before_its_call() {
        assert!(linearizable(&[op(0, None, Kind::Write(1)), op(5, Some(6), Kind::Read(Some(1)))]));
        assert!(linearizable(&[op(0, None, Kind::Write(1)), op(5, Some(6), Kind::Read(None))]));
        assert!(!linearizable(&[op(5, None, Kind::Write(1)), op(0, Some(2), Kind::Read(Some(1)))]));
        // Once seen, it cannot be unseen.
        assert!(!linearizable(&[op(0, None, Kind::Write(1)), op(5, Some(6), Kind::Read(Some(1))), op(7, Some(8), Kind::Read(None))]));
    }

    #[test]
    fn writes_of_unknown_outcome_nobody_read_cost_nothing() {
        let mut ops: Vec<Op> = (0..500).map(|i| op(i, None, Kind::Write(1000 + i as u32))).collect();
        ops.push(op(600, Some(601), Kind::Write(1)));
        ops.push(op(602, Some(603), Kind::Read(Some(1))));
        assert!(linearizable(&ops));
        ops.push(op(604, Some(605), Kind::Read(Some(1200))));
        // The write of 1200 has no known return: it may take effect between 603 and 604.
        assert!(linearizable(&ops));
        ops.push(op(606, Some(607), Kind::Read(Some(1))));
        assert!(!linearizable(&ops), "1 was overwritten by 1200 and nobody wrote 1 again");
    }

    #[test]
    fn long_concurrent_histories_are_checked_quickly() {
        // Four clients, 2,000 operations, every read seeing the last write: linearizable.
        let mut ops = Vec::new();
        let mut last = None;
        for i in 0..2000u64 {
            let kind = if i % 3 == 0 {
                last = Some(i as u32);
                Kind::Write(i as u32)
            } else {
                Kind::Read(last)
            };
            ops.push(op(i * 10, Some(i * 10 + 5), kind));
        }
        assert!(linearizable(&ops));
        ops.push(op(30_000, Some(30_001), Kind::Read(Some(0))));
        assert!(!linearizable(&ops));
    }
}
