//! Failure counters and bans by regulation [`Subject`]. Every write is atomic (compare and swap
//! on the subject's record, retried on contention) and flushed before returning.

use crate::auth::regulation::{FailureState, Subject};
use crate::store::records::{BanRecord, decode, encode};
use crate::store::{Scan, Store, StoreError};

const WHAT: &str = "ban";

impl Store {
    /// The state of `subject`; empty if nothing is recorded.
    pub fn get_failures(&self, subject: &Subject) -> Result<FailureState, StoreError> {
        match self.bans.get(subject.storage_key().as_bytes())? {
            None => Ok(FailureState::default()),
            Some(raw) => Ok(decode::<BanRecord>(WHAT, &raw)?.into_state()),
        }
    }

    /// Atomically replaces the state of `subject` with `update(current)` and returns the new
    /// state. `update` may run more than once under contention, so it must be a pure function
    /// of its input. An empty result deletes the record.
    pub fn update_failures(
        &self,
        subject: &Subject,
        update: impl Fn(FailureState) -> FailureState,
    ) -> Result<FailureState, StoreError> {
        let key = subject.storage_key();
        loop {
            let current_raw = self.bans.get(key.as_bytes())?;
            let current = match &current_raw {
                None => FailureState::default(),
                Some(raw) => decode::<BanRecord>(WHAT, raw)?.into_state(),
            };
            let next = update(current);
            let next_raw = if next == FailureState::default() {
                None
            } else {
                Some(encode(WHAT, &BanRecord::from_state(&next))?)
            };
            if self
                .bans
                .compare_and_swap(key.as_bytes(), current_raw, next_raw)?
                .is_ok()
            {
                self.flush()?;
                return Ok(next);
            }
        }
    }

    /// Forgets `subject` entirely (lifts a ban); returns whether anything was recorded.
    pub fn delete_failures(&self, subject: &Subject) -> Result<bool, StoreError> {
        let existed = self
            .bans
            .remove(subject.storage_key().as_bytes())?
            .is_some();
        self.flush()?;
        Ok(existed)
    }

    /// Forgets `subject` only if its current state satisfies `condition`, atomically (so a
    /// failure recorded meanwhile is not lost). Returns whether it was deleted.
    pub fn delete_failures_if(
        &self,
        subject: &Subject,
        condition: impl Fn(&FailureState) -> bool,
    ) -> Result<bool, StoreError> {
        let key = subject.storage_key();
        loop {
            let Some(raw) = self.bans.get(key.as_bytes())? else {
                return Ok(false);
            };
            let state = decode::<BanRecord>(WHAT, &raw)?.into_state();
            if !condition(&state) {
                return Ok(false);
            }
            if self
                .bans
                .compare_and_swap(key.as_bytes(), Some(raw), None as Option<&[u8]>)?
                .is_ok()
            {
                self.flush()?;
                return Ok(true);
            }
        }
    }

    /// Every subject with recorded state, and the keys of records that cannot be read.
    pub fn list_failures(&self) -> Result<Scan<(Subject, FailureState)>, StoreError> {
        let mut scan = Scan::default();
        for entry in self.bans.iter() {
            let (k, v) = entry?;
            let read = std::str::from_utf8(&k)
                .ok()
                .and_then(Subject::from_storage_key)
                .and_then(|subject| {
                    let state = decode::<BanRecord>(WHAT, &v).ok()?.into_state();
                    Some((subject, state))
                });
            match read {
                Some(pair) => scan.readable.push(pair),
                None => scan.unreadable.push(k),
            }
        }
        Ok(scan)
    }

    /// Removes the failure record stored under `raw_key`, readable or not. Returns whether
    /// there was one.
    pub fn delete_raw_failures(&self, raw_key: &[u8]) -> Result<bool, StoreError> {
        let existed = self.bans.remove(raw_key)?.is_some();
        self.flush()?;
        Ok(existed)
    }

    #[cfg(test)]
    pub(crate) fn put_raw_failures_for_test(&self, subject: &Subject, raw: &[u8]) {
        self.bans
            .insert(subject.storage_key().as_bytes(), raw)
            .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::user::Username;
    use crate::clock::Timestamp;

    #[test]
    fn update_is_persisted_and_empty_state_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let subject = Subject::User(Username::parse("alice").unwrap());
        {
            let store = Store::open(dir.path()).unwrap();
            let state = store
                .update_failures(&subject, |mut s| {
                    s.failures.push(Timestamp(5));
                    s
                })
                .unwrap();
            assert_eq!(state.failures, [Timestamp(5)]);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.get_failures(&subject).unwrap().failures,
            [Timestamp(5)]
        );
        store
            .update_failures(&subject, |_| FailureState::default())
            .unwrap();
        assert!(store.list_failures().unwrap().readable.is_empty());
    }

    #[test]
    fn concurrent_updates_are_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
        let subject = Subject::User(Username::parse("alice").unwrap());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let store = store.clone();
                let subject = subject.clone();
                std::thread::spawn(move || {
                    for j in 0..10 {
                        store
                            .update_failures(&subject, |mut s| {
                                s.failures.push(Timestamp(i * 100 + j));
                                s
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(store.get_failures(&subject).unwrap().failures.len(), 40);
    }
}
