//! What the filter remembers of one request until its response: which stages asked to see the
//! response (each with one word of its own memory), whether the request was refused, and what
//! the stages did, for observers. The same small record whatever the stages are.

/// Stages a pipeline may have: the plan keeps a note for each.
/// Room for every stage the configuration can ask for (authorize, limit, rewrite, broker
/// addresses) and two more.
pub const MAX_STAGES: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    /// Bit `i`: stage `i` asked to see the response.
    watchers: u8,
    /// Per stage: what it asked to remember (meaningful only where it watches).
    notes: [u32; MAX_STAGES],
    /// The request never reached the broker: its response is replaced by an error response with
    /// this Kafka error code (the broker answers the harmless request sent in its place).
    pub refused: Option<i16>,
    pub outcome: Outcome,
}

impl Plan {
    /// Stage `stage` wants to see the response, with `note` to read then.
    pub fn watch(&mut self, stage: usize, note: u32) {
        if let Some(slot) = self.notes.get_mut(stage) {
            *slot = note;
            self.watchers |= 1 << stage;
        }
    }

    /// The note of stage `stage` if it watches the response.
    pub fn watched_by(&self, stage: usize) -> Option<u32> {
        if stage < MAX_STAGES && self.watchers & (1 << stage) != 0 {
            self.notes.get(stage).copied()
        } else {
            None
        }
    }

    /// Whether a stage below `stage` watches the response.
    pub fn watched_below(&self, stage: usize) -> bool {
        let below = (1u32 << stage.min(31)).wrapping_sub(1);
        u32::from(self.watchers) & below != 0
    }

    /// Whether the response must go through the pipeline (it may not pass as it comes).
    pub fn is_active(&self) -> bool {
        self.watchers != 0 || self.refused.is_some()
    }
}

/// What the stages did to a request, as bit flags: read by observers (metrics, request log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome(u8);

impl Outcome {
    /// A stage replaced the request's bytes (or some of them).
    pub const REWRITTEN: Outcome = Outcome(1);
    /// The request never reached the broker.
    pub const REFUSED: Outcome = Outcome(2);
    /// A stage held the connection after this request.
    pub const DELAYED: Outcome = Outcome(4);
    /// The frame was held whole in the filter.
    pub const HELD: Outcome = Outcome(8);
    /// The response was rewritten (or replaced by an error).
    pub const RESPONSE_REWRITTEN: Outcome = Outcome(16);

    pub fn set(&mut self, flag: Outcome) {
        self.0 |= flag.0;
    }

    pub fn has(self, flag: Outcome) -> bool {
        self.0 & flag.0 == flag.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_per_stage() {
        let mut p = Plan::default();
        assert!(!p.is_active());
        p.watch(2, 77);
        assert_eq!(p.watched_by(2), Some(77));
        assert_eq!(p.watched_by(0), None);
        assert_eq!(p.watched_by(MAX_STAGES), None);
        p.watch(MAX_STAGES, 1);
        assert!(p.is_active());
        let mut q = Plan {
            refused: Some(31),
            ..Plan::default()
        };
        assert!(q.is_active());
        q.outcome.set(Outcome::REFUSED);
        assert!(q.outcome.has(Outcome::REFUSED));
        assert!(!q.outcome.has(Outcome::REWRITTEN));
    }
}
