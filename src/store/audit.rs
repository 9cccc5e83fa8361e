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
}
