//! A linearizability checker: Wing & Gong's search with Lowe's memoization, applied per key
//! (P-compositionality: a history is linearizable iff its restriction to every key is).
//!
//! An [`Operation`] has an invocation time, a completion time and what it returned; one whose
//! outcome is unknown (a timeout, a lost connection) has no completion and no return: it may
//! have taken effect at any point after its invocation, or never. The search linearizes, one
//! at a time, an operation invoked before every remaining completed operation returned, checks
//! it against the sequential [`Model`], and backtracks; a state it has seen with the same set
//! of operations done is not explored twice. It succeeds once only unknown-outcome operations
//! remain.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;

/// A sequential specification.
pub trait Model: Clone + Eq + Hash {
    /// An operation on the model.
    type Op: fmt::Debug;
    /// What an operation returns.
    type Ret: fmt::Debug;

    /// The state after `op` returned `ret` from `self`, or `None` if `ret` is impossible here.
    /// With `ret = None` (outcome unknown), the state after `op` whatever it returned.
    fn step(&self, op: &Self::Op, ret: Option<&Self::Ret>) -> Option<Self>;
}

/// One operation of a history, on one key.
#[derive(Debug, Clone)]
pub struct Operation<O, R> {
    /// Which client issued it (for reports).
    pub client: usize,
    /// When it was invoked.
    pub invoke: u64,
    /// When it returned, with what; `None` if the outcome is unknown.
    pub complete: Option<(u64, R)>,
    /// What it did.
    pub op: O,
}

/// How many states the search explores before it gives up and calls the history
/// [`Verdict::Inconclusive`] (many unknown-outcome operations on one key multiply the
/// orders to try).
pub const SEARCH_BUDGET: usize = 2_000_000;

/// What a check found, when it found no linearization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No order of the operations agrees with the model.
    Violation(Violation),
    /// The search explored [`SEARCH_BUDGET`] states without deciding.
    Inconclusive,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Violation(v) => v.fmt(f),
            Self::Inconclusive => write!(f, "undecided after exploring {SEARCH_BUDGET} states"),
        }
    }
}

/// Why a history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The longest prefix of operations (by index into the history) the search could
    /// linearize.
    pub linearized: Vec<usize>,
    /// The operations it could not place after that prefix.
    pub stuck: Vec<usize>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no linearization: the longest one found places operations {:?} and then none of {:?}",
            self.linearized, self.stuck
        )
    }
}

/// Check `history` against `init`. Operations may be in any order.
pub fn check<M: Model>(init: &M, history: &[Operation<M::Op, M::Ret>]) -> Result<(), Verdict> {
    let mut search = Search {
        history,
        done: vec![false; history.len()],
        seen: HashSet::new(),
        path: Vec::new(),
        best: Vec::new(),
    };
    if search.explore(init.clone()) {
        Ok(())
    } else if search.seen.len() >= SEARCH_BUDGET {
        Err(Verdict::Inconclusive)
    } else {
        let stuck = (0..history.len())
            .filter(|i| !search.best.contains(i) && history[*i].complete.is_some())
            .collect();
        Err(Verdict::Violation(Violation {
            linearized: search.best,
            stuck,
        }))
    }
}

struct Search<'h, M: Model> {
    history: &'h [Operation<M::Op, M::Ret>],
    done: Vec<bool>,
    seen: HashSet<(Vec<bool>, M)>,
    path: Vec<usize>,
    best: Vec<usize>,
}

impl<M: Model> Search<'_, M> {
    fn explore(&mut self, state: M) -> bool {
        let open: Vec<usize> = (0..self.history.len()).filter(|i| !self.done[*i]).collect();
        if open.iter().all(|i| self.history[*i].complete.is_none()) {
            return true;
        }
        if self.seen.len() >= SEARCH_BUDGET || !self.seen.insert((self.done.clone(), state.clone()))
        {
            return false;
        }
        // Only an operation invoked before the earliest remaining completion can go next.
        let horizon = open
            .iter()
            .filter_map(|i| self.history[*i].complete.as_ref().map(|(at, _)| *at))
            .min()
            .unwrap_or(u64::MAX);
        for &i in &open {
            let operation = &self.history[i];
            if operation.invoke > horizon {
                continue;
            }
            let ret = operation.complete.as_ref().map(|(_, r)| r);
            let Some(next) = state.step(&operation.op, ret) else {
                continue;
            };
            self.done[i] = true;
            self.path.push(i);
            if self.path.len() > self.best.len() {
                self.best.clone_from(&self.path);
            }
            if self.explore(next) {
                return true;
            }
            self.path.pop();
            self.done[i] = false;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register of one integer.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct Register(i64);

    #[derive(Debug)]
    enum Op {
        Write(i64),
        Read,
    }

    impl Model for Register {
        type Op = Op;
        type Ret = i64;

        fn step(&self, op: &Op, ret: Option<&i64>) -> Option<Self> {
            match (op, ret) {
                (Op::Write(v), _) => Some(Register(*v)),
                (Op::Read, Some(v)) if *v != self.0 => None,
                (Op::Read, _) => Some(self.clone()),
            }
        }
    }

    fn op(client: usize, invoke: u64, complete: Option<(u64, i64)>, op: Op) -> Operation<Op, i64> {
        Operation {
            client,
            invoke,
            complete,
            op,
        }
    }

    #[test]
    fn concurrent_writes_may_be_read_in_either_order() {
        let history = [
            op(0, 0, Some((10, 0)), Op::Write(1)),
            op(1, 1, Some((11, 0)), Op::Write(2)),
            op(2, 12, Some((13, 1)), Op::Read),
            op(2, 14, Some((15, 1)), Op::Read),
        ];
        assert_eq!(check(&Register(0), &history), Ok(()));
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let history = [
            op(0, 0, Some((10, 0)), Op::Write(1)),
            op(1, 11, Some((12, 0)), Op::Read),
        ];
        let violation = check(&Register(0), &history).err();
        assert_eq!(
            violation,
            Some(Verdict::Violation(Violation {
                linearized: vec![0],
                stuck: vec![1]
            }))
        );
    }

    #[test]
    fn reads_that_go_back_in_time_are_caught() {
        // Write(1) and Write(2) overlap; one reader sees 2 then 1, after both completed.
        let history = [
            op(0, 0, Some((10, 0)), Op::Write(1)),
            op(1, 0, Some((10, 0)), Op::Write(2)),
            op(2, 11, Some((12, 2)), Op::Read),
            op(2, 13, Some((14, 1)), Op::Read),
        ];
        assert!(check(&Register(0), &history).is_err());
    }

    #[test]
    fn an_unknown_write_may_have_happened_or_not() {
        let happened = [
            op(0, 0, None, Op::Write(7)),
            op(1, 5, Some((6, 7)), Op::Read),
        ];
        assert_eq!(check(&Register(0), &happened), Ok(()));
        let not_yet = [
            op(0, 0, None, Op::Write(7)),
            op(1, 5, Some((6, 0)), Op::Read),
            op(1, 7, Some((8, 7)), Op::Read),
        ];
        assert_eq!(check(&Register(0), &not_yet), Ok(()));
        // Once it was seen, it cannot be undone.
        let undone = [
            op(0, 0, None, Op::Write(7)),
            op(1, 5, Some((6, 7)), Op::Read),
            op(1, 7, Some((8, 0)), Op::Read),
        ];
        assert!(check(&Register(0), &undone).is_err());
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught() {
        let history = [
            op(0, 0, Some((1, 0)), Op::Write(1)),
            op(1, 2, Some((3, 5)), Op::Read),
        ];
        assert!(check(&Register(0), &history).is_err());
    }
}
