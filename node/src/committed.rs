//! The committed ledger as the API reads it: the state after the newest
//! committed block, published by the daemon at each commit and read by any
//! number of handlers at once. A reader takes the current version (a
//! pointer) and keeps it as long as it needs, so a slow page never holds up
//! a commit, and a commit never copies the state for the readers (the
//! state's maps are persistent: publishing a version costs a pointer per
//! map, and the version shares everything unchanged with the store's).

use std::sync::{Arc, RwLock};

use agora_ledger::State;

pub struct CommittedLedger(RwLock<Arc<State>>);

/// The lock was poisoned by a panic while a version was being published.
pub const POISONED: &str = "the committed ledger's lock is poisoned";

impl CommittedLedger {
    pub fn new(state: State) -> CommittedLedger {
        CommittedLedger(RwLock::new(Arc::new(state)))
    }

    /// The newest committed version. Holding it holds no lock.
    pub fn read(&self) -> Result<Arc<State>, &'static str> {
        Ok(self.0.read().map_err(|_| POISONED)?.clone())
    }

    /// Makes `state` the version readers get from now on.
    pub fn publish(&self, state: State) {
        let version = Arc::new(state);
        if let Ok(mut current) = self.0.write() {
            *current = version;
        }
    }
}

#[cfg(test)]
mod tests {
    use agora_ledger::testkit::TestChain;
    use agora_protocol::Amount;

    use super::*;

    #[test]
    fn a_reader_keeps_its_version_while_a_newer_one_is_published() {
        let chain = TestChain::new(2, 1, Amount::agr(1_000));
        let mut state = chain.state();
        let ledger = CommittedLedger::new(state.clone());
        let held = ledger.read().unwrap();
        let block = chain.next_block(&mut state.clone(), vec![]).unwrap();
        agora_ledger::apply_block(&mut state, &block, agora_ledger::SigCheck::Verify).unwrap();
        ledger.publish(state);
        assert_eq!(held.height().0, 0, "the version a reader took does not change under it");
        assert_eq!(ledger.read().unwrap().height().0, 1);
    }
}
