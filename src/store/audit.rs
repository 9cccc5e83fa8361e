//! The audit trail, keyed by a monotonic id (big-endian, so key order is insertion order).
//! Appends are not flushed individually; they reach disk with sled's periodic flush.

use crate::auth::audit::AuditEvent;
use crate::store::records::{AuditRecord, decode, encode};
use crate::store::{Store, StoreError};

const WHAT: &str = "audit";

impl Store {
    /// Appends an event to the trail.
    pub fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let id = self.db.generate_id()?;
        let value = encode(WHAT, &AuditRecord::from_event(event))?;
        self.audit.insert(id.to_be_bytes(), value)?;
        Ok(())
    }

    /// Removes the oldest events beyond the `keep` most recent; returns how many went.
    pub fn trim_audit(&self, keep: usize) -> Result<usize, StoreError> {
        let Some(entry) = self.audit.iter().rev().nth(keep) else {
            return Ok(0);
        };
        let (newest_removed, _) = entry?;
        let mut removed = 0;
        for entry in self.audit.range(..=newest_removed) {
            let (key, _) = entry?;
            if self.audit.remove(key)?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The `limit` most recent events, newest first. An unreadable record is an error.
    pub fn recent_audit(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.audit
            .iter()
            .rev()
            .take(limit)
            .map(|entry| {
                let (_, raw) = entry?;
                decode::<AuditRecord>(WHAT, &raw)?.into_event()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::auth::audit::{AuditEvent, AuditKind};
    use crate::clock::Timestamp;
    use crate::store::Store;

    #[test]
    fn recent_is_newest_first_and_limited_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            for i in 0..3 {
                store
                    .append_audit(&AuditEvent::new(Timestamp(i), AuditKind::LoginSucceeded))
                    .unwrap();
            }
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        store
            .append_audit(&AuditEvent::new(Timestamp(3), AuditKind::Logout))
            .unwrap();
        let recent = store.recent_audit(2).unwrap();
        let times: Vec<i64> = recent.iter().map(|e| e.at.as_millis()).collect();
        assert_eq!(times, [3, 2]);
        assert_eq!(recent[0].kind, AuditKind::Logout);
        assert_eq!(store.recent_audit(100).unwrap().len(), 4);
    }

    #[test]
    fn trimming_keeps_the_most_recent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.trim_audit(3).unwrap(), 0);
        for i in 0..10 {
            store
                .append_audit(&AuditEvent::new(Timestamp(i), AuditKind::LoginFailed))
                .unwrap();
        }
        assert_eq!(store.trim_audit(10).unwrap(), 0);
        assert_eq!(store.trim_audit(3).unwrap(), 7);
        let times: Vec<i64> = store
            .recent_audit(100)
            .unwrap()
            .iter()
            .map(|e| e.at.as_millis())
            .collect();
        assert_eq!(times, [9, 8, 7]);
        assert_eq!(store.trim_audit(3).unwrap(), 0);
    }
}
