//! How much of the stream the filter may hold in the VM: one frame may be held whole only up to
//! `max_held_frame_bytes`, and all connections of a VM (one worker thread) together only up to
//! `max_held_bytes`. What does not fit is refused, never half-held.

use std::cell::Cell;
use std::rc::Rc;

/// The bytes held by all connections of one VM.
#[derive(Debug, Clone, Default)]
pub struct HeldBudget {
    used: Rc<Cell<usize>>,
    limit: usize,
}

impl HeldBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            used: Rc::new(Cell::new(0)),
            limit,
        }
    }

    /// Take `n` bytes of the budget, if they are left.
    pub fn try_take(&self, n: usize) -> bool {
        match self.used.get().checked_add(n) {
            Some(total) if total <= self.limit => {
                self.used.set(total);
                true
            }
            _ => false,
        }
    }

    pub fn give_back(&self, n: usize) {
        self.used.set(self.used.get().saturating_sub(n));
    }

    pub fn in_use(&self) -> usize {
        self.used.get()
    }
}

/// One connection's share of the budget, per direction: given back when its frame is decided,
/// and when the connection goes away.
#[derive(Debug, Default)]
pub struct Reservation {
    bytes: usize,
}

impl Reservation {
    pub fn take(&mut self, budget: &HeldBudget, n: usize) -> bool {
        if self.bytes > 0 {
            budget.give_back(self.bytes);
            self.bytes = 0;
        }
        let ok = budget.try_take(n);
        if ok {
            self.bytes = n;
        }
        ok
    }

    pub fn release(&mut self, budget: &HeldBudget) {
        // Every frame releases; almost none held anything.
        if self.bytes > 0 {
            budget.give_back(std::mem::take(&mut self.bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_budget_and_reservations() {
        let b = HeldBudget::new(100);
        let mut r1 = Reservation::default();
        let mut r2 = Reservation::default();
        assert!(r1.take(&b, 60));
        assert!(!r2.take(&b, 50));
        assert!(r2.take(&b, 40));
        assert_eq!(b.in_use(), 100);
        r1.release(&b);
        r1.release(&b);
        assert_eq!(b.in_use(), 40);
        assert!(!b.try_take(usize::MAX));
        // Taking again replaces the earlier reservation.
        assert!(r2.take(&b, 100));
        assert_eq!(b.in_use(), 100);
        r2.release(&b);
        assert_eq!(b.in_use(), 0);
    }
}
