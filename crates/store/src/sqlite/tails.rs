//! The last event of each running operation, as the writer last wrote it.
//!
//! Recording an event needs the operation's last one (its sequence, kind,
//! fold count and feed position). The writer is the only one that writes
//! events, so for an operation whose timeline it wrote it already knows that
//! tail and can skip the `SELECT`. What a batch writes is staged and becomes
//! known only once the batch committed; a batch that fails forgets every
//! operation it touched, so the next write of those reads the database again.

use std::collections::HashMap;

/// The last event of one timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Tail {
    pub sequence: i64,
    pub kind: i64,
    pub folded: i64,
    pub position: i64,
}

/// How many timelines are remembered; past that, new ones are looked up.
const MAX_TAILS: usize = 65_536;

#[derive(Default)]
pub(super) struct Tails {
    committed: HashMap<String, Tail>,
    /// This batch's changes, in order: `None` forgets the operation.
    staged: Vec<(String, Option<Tail>)>,
}

impl Tails {
    /// The tail of `id` if this batch or a committed one wrote it.
    pub fn known(&self, id: &str) -> Option<Tail> {
        match self.staged.iter().rev().find(|(staged, _)| staged == id) {
            Some((_, tail)) => *tail,
            None => self.committed.get(id).copied(),
        }
    }

    /// `id`'s timeline now ends with `tail`; `None` forgets it (the
    /// operation is done, deleted, or its tail is unknown).
    pub fn stage(&mut self, id: &str, tail: Option<Tail>) {
        self.staged.push((id.to_owned(), tail));
    }

    /// A point to [`Tails::undo_to`] when one write of a batch is rolled back.
    pub fn mark(&self) -> usize {
        self.staged.len()
    }

    pub fn undo_to(&mut self, mark: usize) {
        self.staged.truncate(mark);
    }

    /// The batch committed: what it staged is now known.
    pub fn commit(&mut self) {
        for (id, tail) in self.staged.drain(..) {
            match tail {
                Some(tail)
                    if self.committed.len() < MAX_TAILS || self.committed.contains_key(&id) =>
                {
                    self.committed.insert(id, tail);
                }
                _ => {
                    self.committed.remove(&id);
                }
            }
        }
    }

    /// Nothing of the attempt is known to be stored: drop what it staged, and
    /// forget `touched` (a failed commit may still have reached the disk).
    pub fn abandon<'a>(&mut self, touched: impl IntoIterator<Item = &'a str>) {
        self.staged.clear();
        for id in touched {
            self.committed.remove(id);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.committed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(sequence: i64) -> Tail {
        Tail {
            sequence,
            kind: 1,
            folded: 0,
            position: sequence * 10,
        }
    }

    #[test]
    fn staged_tails_are_seen_by_their_batch_and_kept_only_once_committed() {
        let mut tails = Tails::default();
        tails.stage("a", Some(tail(1)));
        assert_eq!(tails.known("a"), Some(tail(1)));
        tails.abandon(["a"]);
        assert_eq!(tails.known("a"), None, "an abandoned batch leaves nothing");

        tails.stage("a", Some(tail(1)));
        tails.commit();
        assert_eq!(tails.known("a"), Some(tail(1)));
        tails.stage("a", Some(tail(2)));
        assert_eq!(
            tails.known("a"),
            Some(tail(2)),
            "the batch sees its own write"
        );
        tails.abandon(["a"]);
        assert_eq!(
            tails.known("a"),
            None,
            "a failed commit may have reached the disk: the old tail is not trusted"
        );
    }

    #[test]
    fn a_rolled_back_write_leaves_the_rest_of_its_batch() {
        let mut tails = Tails::default();
        tails.stage("a", Some(tail(1)));
        let mark = tails.mark();
        tails.stage("b", Some(tail(1)));
        tails.undo_to(mark);
        tails.commit();
        assert_eq!(tails.known("a"), Some(tail(1)));
        assert_eq!(tails.known("b"), None);
    }

    #[test]
    fn forgetting_removes_and_the_number_remembered_is_bounded() {
        let mut tails = Tails::default();
        tails.stage("a", Some(tail(1)));
        tails.commit();
        tails.stage("a", None);
        assert_eq!(tails.known("a"), None, "forgotten within the batch");
        tails.commit();
        assert_eq!(tails.known("a"), None);

        for n in 0..MAX_TAILS + 10 {
            tails.stage(&format!("op{n}"), Some(tail(1)));
        }
        tails.commit();
        assert_eq!(tails.len(), MAX_TAILS);
        assert_eq!(tails.known(&format!("op{}", MAX_TAILS + 5)), None);
        // A remembered one is still updated when full.
        tails.stage("op0", Some(tail(2)));
        tails.commit();
        assert_eq!(tails.known("op0"), Some(tail(2)));
    }
}
