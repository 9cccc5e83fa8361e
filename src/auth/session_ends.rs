//! What outlives a session's requests learns when the session ends.
//!
//! A request is checked against its session when it arrives; an upgraded connection (a
//! WebSocket tunnel) is one request that can last for hours. Such a connection holds a
//! [`SessionEndWatch`] on the session that opened it, and [`SessionEnds`] fires it the moment
//! the session ends: logout, the end of a user's other sessions, a password change, an account
//! disabled or deleted, second factors reset by an administrator, or the session found
//! expired (at a lookup or by the housekeeping). A session that moves to a fresh id (after a
//! second factor) keeps its watches.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::auth::session::SessionKey;
use crate::auth::user::Username;

/// The watches on sessions that are still open. Registering or dropping a watch takes a lock.
/// Ending a session takes it only while some watch is open (a count read without the lock),
/// and then finds the session's watches by its key: ends are frequent (every logout, every
/// session found expired, every second factor moving a session to a fresh id), tunnels few.
#[derive(Default)]
pub struct SessionEnds {
    watches: Mutex<Watches>,
    /// Watches open right now, read without the lock.
    open_count: AtomicUsize,
}

#[derive(Default)]
struct Watches {
    next: u64,
    open: HashMap<u64, Watched>,
    /// The watches of each session.
    by_key: HashMap<SessionKey, Vec<u64>>,
}

impl Watches {
    fn unlink(&mut self, key: &SessionKey, id: u64) {
        if let Some(ids) = self.by_key.get_mut(key) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_key.remove(key);
            }
        }
    }
}

struct Watched {
    key: SessionKey,
    username: Username,
    ended: CancellationToken,
}

impl fmt::Debug for SessionEnds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionEnds")
            .field("watches", &self.open_count())
            .finish()
    }
}

impl SessionEnds {
    fn lock(&self) -> MutexGuard<'_, Watches> {
        // Every change leaves the map consistent, whatever panicked while holding it.
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A watch on the session `key` of `username`, fired when that session ends. The caller
    /// checks that the session is still live *after* taking the watch: an end between its own
    /// lookup and this call would otherwise go unseen.
    pub fn watch(self: &Arc<Self>, key: SessionKey, username: &Username) -> SessionEndWatch {
        let ended = CancellationToken::new();
        let id = {
            let mut watches = self.lock();
            let id = watches.next;
            watches.next += 1;
            watches.open.insert(
                id,
                Watched {
                    key,
                    username: username.clone(),
                    ended: ended.clone(),
                },
            );
            watches.by_key.entry(key).or_default().push(id);
            self.open_count.fetch_add(1, Ordering::SeqCst);
            id
        };
        SessionEndWatch(Arc::new(Registration {
            ends: Arc::clone(self),
            id,
            ended,
        }))
    }

    /// The session `key` has ended.
    pub fn session_ended(&self, key: &SessionKey) {
        if self.open_count() == 0 {
            return;
        }
        let watches = self.lock();
        for id in watches.by_key.get(key).into_iter().flatten() {
            if let Some(watched) = watches.open.get(id) {
                watched.ended.cancel();
            }
        }
    }

    /// Every session of `username` has ended (rare: a password change, an account disabled,
    /// deleted or reset).
    pub fn user_ended(&self, username: &Username) {
        if self.open_count() == 0 {
            return;
        }
        for watched in self.lock().open.values() {
            if &watched.username == username {
                watched.ended.cancel();
            }
        }
    }

    /// The session `old` continues as `new` (a fresh id after a second factor).
    pub fn session_moved(&self, old: &SessionKey, new: &SessionKey) {
        if self.open_count() == 0 {
            return;
        }
        let mut watches = self.lock();
        let Some(ids) = watches.by_key.remove(old) else {
            return;
        };
        for id in &ids {
            if let Some(watched) = watches.open.get_mut(id) {
                watched.key = *new;
            }
        }
        watches.by_key.entry(*new).or_default().extend(ids);
    }

    /// Watches held right now (for tests and metrics).
    pub fn open_count(&self) -> usize {
        self.open_count.load(Ordering::SeqCst)
    }
}

/// A watch on one session's end; the watch is withdrawn when the last clone is dropped.
#[derive(Clone)]
pub struct SessionEndWatch(Arc<Registration>);

struct Registration {
    ends: Arc<SessionEnds>,
    id: u64,
    ended: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut watches = self.ends.lock();
        if let Some(watched) = watches.open.remove(&self.id) {
            watches.unlink(&watched.key, self.id);
            self.ends.open_count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl fmt::Debug for SessionEndWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionEndWatch")
            .field("ended", &self.has_ended())
            .finish()
    }
}

impl SessionEndWatch {
    /// Completes once the session has ended (at once if it already has).
    pub fn ended(&self) -> WaitForCancellationFuture<'_> {
        self.0.ended.cancelled()
    }

    pub fn has_ended(&self) -> bool {
        self.0.ended.is_cancelled()
    }

    /// Fires this watch alone: its session was found gone when the watch was taken.
    pub fn end(&self) {
        self.0.ended.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SessionKey {
        SessionKey::from_bytes([byte; 32])
    }

    fn user(name: &str) -> Username {
        Username::parse(name).expect("valid username")
    }

    #[test]
    fn a_session_end_fires_the_watches_on_that_session_only() {
        let ends = Arc::new(SessionEnds::default());
        let (alice, bob) = (user("alice"), user("bob"));
        let first = ends.watch(key(1), &alice);
        let second = ends.watch(key(1), &alice);
        let other_session = ends.watch(key(2), &alice);
        let other_user = ends.watch(key(3), &bob);
        ends.session_ended(&key(1));
        assert!(first.has_ended() && second.has_ended());
        assert!(!other_session.has_ended());
        assert!(!other_user.has_ended());
    }

    #[test]
    fn a_user_end_fires_every_watch_of_that_user_only() {
        let ends = Arc::new(SessionEnds::default());
        let (alice, bob) = (user("alice"), user("bob"));
        let a1 = ends.watch(key(1), &alice);
        let a2 = ends.watch(key(2), &alice);
        let b = ends.watch(key(3), &bob);
        ends.user_ended(&alice);
        assert!(a1.has_ended() && a2.has_ended());
        assert!(!b.has_ended());
    }

    #[test]
    fn a_moved_session_keeps_its_watches() {
        let ends = Arc::new(SessionEnds::default());
        let watch = ends.watch(key(1), &user("alice"));
        ends.session_moved(&key(1), &key(9));
        ends.session_ended(&key(1));
        assert!(!watch.has_ended(), "the old id no longer names the session");
        ends.session_ended(&key(9));
        assert!(watch.has_ended());
    }

    #[test]
    fn a_watch_moved_twice_then_dropped_leaves_nothing_behind() {
        let ends = Arc::new(SessionEnds::default());
        let watch = ends.watch(key(1), &user("alice"));
        let other = ends.watch(key(2), &user("alice"));
        ends.session_moved(&key(1), &key(3));
        ends.session_moved(&key(3), &key(4));
        ends.session_ended(&key(3));
        assert!(!watch.has_ended());
        drop(watch);
        assert_eq!(ends.open_count(), 1);
        {
            let watches = ends.lock();
            assert_eq!(watches.by_key.len(), 1, "only key 2's entry is left");
            assert!(watches.by_key.contains_key(&key(2)));
        }
        ends.session_ended(&key(2));
        assert!(other.has_ended());
    }

    #[test]
    fn a_watch_is_withdrawn_with_its_last_clone() {
        let ends = Arc::new(SessionEnds::default());
        let watch = ends.watch(key(1), &user("alice"));
        let clone = watch.clone();
        assert_eq!(ends.open_count(), 1);
        drop(watch);
        assert_eq!(ends.open_count(), 1);
        drop(clone);
        assert_eq!(ends.open_count(), 0);
    }

    #[tokio::test]
    async fn ended_completes_when_the_session_ends() {
        let ends = Arc::new(SessionEnds::default());
        let watch = ends.watch(key(1), &user("alice"));
        let waiting = {
            let watch = watch.clone();
            tokio::spawn(async move { watch.ended().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        ends.session_ended(&key(1));
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the wait ends")
            .expect("task");
    }
}
