//! The two exits of the engine: input order (a bounded reorder buffer) or finish order.
//!
//! Both also decide which failure wins: in input order, the earliest position; in finish
//! order, the first to arrive.

use std::collections::VecDeque;

use super::Outcome;

pub(crate) enum Exit<O> {
    /// One place per item pulled and not yet yielded, front = the next position to yield.
    Ordered {
        next_out: u64,
        places: VecDeque<Option<Outcome<O>>>,
        /// Position of the earliest failure known; nothing after it is kept.
        failed_at: Option<u64>,
    },
    /// Results in the order they finished.
    Unordered {
        ready: VecDeque<(u64, Outcome<O>)>,
        /// The first failure to arrive, yielded next; everything else is dropped.
        failure: Option<(u64, Outcome<O>)>,
    },
}

/// What [`Exit::finish`] asks the engine to do next.
pub(crate) enum Cancel {
    /// Nothing to cancel.
    None,
    /// Cancel every job at this position or later.
    From(u64),
}

/// Whether the place at `offset` from the front holds a result.
fn place_filled<O>(places: &VecDeque<Option<Outcome<O>>>, offset: usize) -> bool {
    matches!(places.get(offset), Some(Some(_)))
}

impl<O> Exit<O> {
    pub(crate) fn new(ordered: bool) -> Self {
        if ordered {
            Exit::Ordered {
                next_out: 0,
                places: VecDeque::new(),
                failed_at: None,
            }
        } else {
            Exit::Unordered {
                ready: VecDeque::new(),
                failure: None,
            }
        }
    }

    pub(crate) fn is_ordered(&self) -> bool {
        matches!(self, Exit::Ordered { .. })
    }

    /// Reserves the place of a newly pulled item.
    pub(crate) fn pulled(&mut self) {
        if let Exit::Ordered { places, .. } = self {
            places.push_back(None);
        }
    }

    /// Whether a failure is known: no more items may be pulled.
    pub(crate) fn failed(&self) -> bool {
        match self {
            Exit::Ordered { failed_at, .. } => failed_at.is_some(),
            Exit::Unordered { failure, .. } => failure.is_some(),
        }
    }

    /// Records the result of the item at `index`.
    pub(crate) fn finish(&mut self, index: u64, outcome: Outcome<O>, failure: bool) -> Cancel {
        match self {
            Exit::Ordered {
                next_out,
                places,
                failed_at,
            } => {
                if failed_at.is_some_and(|at| index > at) {
                    return Cancel::None;
                }
                let offset = usize::try_from(index - *next_out)
                    .expect("flowgate: a result's position lies within the window");
                places[offset] = Some(outcome);
                if failure {
                    *failed_at = Some(index);
                    places.truncate(offset + 1);
                    return Cancel::From(index + 1);
                }
                Cancel::None
            }
            Exit::Unordered {
                ready,
                failure: first_failure,
            } => {
                if first_failure.is_some() {
                    return Cancel::None;
                }
                if failure {
                    ready.clear();
                    *first_failure = Some((index, outcome));
                    return Cancel::From(0);
                }
                ready.push_back((index, outcome));
                Cancel::None
            }
        }
    }

    /// Whether a result may leave now.
    pub(crate) fn has_ready(&self) -> bool {
        match self {
            Exit::Ordered { places, .. } => place_filled(places, 0),
            Exit::Unordered { ready, failure } => failure.is_some() || !ready.is_empty(),
        }
    }

    /// Whether a result may leave now and another after it.
    pub(crate) fn has_backlog(&self) -> bool {
        match self {
            Exit::Ordered { places, .. } => place_filled(places, 0) && place_filled(places, 1),
            Exit::Unordered { ready, .. } => ready.len() >= 2,
        }
    }

    /// The positions pulled (below `pulled`) whose results have not left, in order
    /// (`in_flight` holds them for the unordered exit, which does not keep them).
    pub(crate) fn not_yielded(
        &self,
        pulled: u64,
        in_flight: &std::collections::BTreeSet<u64>,
    ) -> Vec<u64> {
        match self {
            Exit::Ordered { next_out, .. } => (*next_out..pulled).collect(),
            Exit::Unordered { .. } => in_flight.iter().copied().collect(),
        }
    }

    /// Takes the next result that may leave, with its position, if any.
    pub(crate) fn pop(&mut self) -> Option<(u64, Outcome<O>)> {
        match self {
            Exit::Ordered {
                next_out, places, ..
            } => {
                if !place_filled(places, 0) {
                    return None;
                }
                let index = *next_out;
                *next_out += 1;
                places.pop_front().flatten().map(|outcome| (index, outcome))
            }
            Exit::Unordered { ready, failure } => failure.take().or_else(|| ready.pop_front()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: u32) -> Outcome<u32> {
        Ok(v)
    }

    #[test]
    fn ordered_waits_for_the_head() {
        let mut exit = Exit::new(true);
        for _ in 0..3 {
            exit.pulled();
        }
        exit.finish(2, ok(2), false);
        exit.finish(1, ok(1), false);
        assert!(exit.pop().is_none());
        exit.finish(0, ok(0), false);
        let out: Vec<u32> = std::iter::from_fn(|| exit.pop())
            .map(|(_, o)| o.unwrap())
            .collect();
        assert_eq!(out, vec![0, 1, 2]);
    }

    #[test]
    fn ordered_earliest_failure_wins_and_later_results_are_dropped() {
        let mut exit = Exit::new(true);
        for _ in 0..5 {
            exit.pulled();
        }
        assert!(matches!(exit.finish(3, ok(30), true), Cancel::From(4)));
        assert!(matches!(exit.finish(4, ok(4), false), Cancel::None));
        assert!(matches!(exit.finish(1, ok(10), true), Cancel::From(2)));
        exit.finish(3, ok(3), false);
        exit.finish(0, ok(0), false);
        let out: Vec<u32> = std::iter::from_fn(|| exit.pop())
            .map(|(_, o)| o.unwrap())
            .collect();
        assert_eq!(out, vec![0, 10]);
        assert!(exit.failed());
    }

    #[test]
    fn unordered_failure_jumps_the_queue_and_drops_ready_results() {
        let mut exit = Exit::new(false);
        exit.finish(0, ok(0), false);
        exit.finish(2, ok(2), false);
        assert!(matches!(exit.finish(1, ok(99), true), Cancel::From(0)));
        exit.finish(3, ok(3), true);
        assert_eq!(exit.pop().unwrap().1.unwrap(), 99);
        assert!(exit.pop().is_none());
    }
}
