//! Working memory for argon2id, reused from one computation to the next.
//!
//! Each argon2id computation needs `m_kib` KiB of blocks (19 MiB by default). Allocating them per
//! login on tokio's blocking threads let the C allocator keep every freed block in per-thread
//! arenas: a gateway that had served a few hundred logins held a gigabyte it never used again.
//! Here at most `max_concurrent_hashes` buffers exist (the hasher's semaphore bounds the leases),
//! they are zeroed after each use, and [`MemoryPool::release_idle`] frees them once logins stop.

use std::sync::Mutex;

use argon2::Block;
use zeroize::Zeroize;

/// Buffers for argon2 computations; see the module documentation.
pub(crate) struct MemoryPool {
    /// A buffer larger than this many blocks (a stored hash made with a higher memory cost than
    /// configured) is freed after use instead of being kept.
    keep_blocks: usize,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Vec<Block>>,
    /// Set by every lease, cleared by [`MemoryPool::release_idle`].
    leased_since_release: bool,
}

impl MemoryPool {
    /// A pool that keeps buffers of up to `keep_blocks` argon2 blocks (1 KiB each).
    pub(crate) fn new(keep_blocks: usize) -> Self {
        MemoryPool {
            keep_blocks,
            state: Mutex::new(PoolState::default()),
        }
    }

    /// `block_count` blocks of working memory, from an idle buffer when one is large enough.
    /// Callers hold a hashing permit, so the number of live leases is bounded by the permits.
    pub(crate) fn lease(&self, block_count: usize) -> Lease<'_> {
        let reused = {
            let mut state = self.lock();
            state.leased_since_release = true;
            let fit = state.idle.iter().position(|b| b.len() >= block_count);
            fit.map(|i| state.idle.swap_remove(i))
        };
        let blocks = reused.unwrap_or_else(|| vec![Block::default(); block_count]);
        Lease {
            pool: self,
            blocks,
            block_count,
        }
    }

    /// Frees every idle buffer if nothing was leased since the previous call, and returns how many
    /// were freed. Called periodically: memory goes back to the system one to two periods after
    /// the last login.
    pub(crate) fn release_idle(&self) -> usize {
        let freed = {
            let mut state = self.lock();
            if std::mem::take(&mut state.leased_since_release) {
                return 0;
            }
            std::mem::take(&mut state.idle)
        };
        freed.len()
    }

    /// Frees every idle buffer now.
    pub(crate) fn clear(&self) {
        let freed = std::mem::take(&mut self.lock().idle);
        drop(freed);
    }

    /// Buffers currently kept for reuse.
    pub(crate) fn idle_buffers(&self) -> usize {
        self.lock().idle.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // The state stays consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Working memory lent by a [`MemoryPool`]; zeroed and handed back when dropped.
pub(crate) struct Lease<'a> {
    pool: &'a MemoryPool,
    blocks: Vec<Block>,
    block_count: usize,
}

impl Lease<'_> {
    /// Exactly the number of blocks asked for.
    pub(crate) fn blocks(&mut self) -> &mut [Block] {
        &mut self.blocks[..self.block_count]
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // What argon2 left in memory is derived from the password: never keep it.
        self.blocks[..self.block_count]
            .iter_mut()
            .for_each(Zeroize::zeroize);
        if self.blocks.len() <= self.pool.keep_blocks {
            let blocks = std::mem::take(&mut self.blocks);
            self.pool.lock().idle.push(blocks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_reused_and_zeroed() {
        let pool = MemoryPool::new(64);
        {
            let mut lease = pool.lease(16);
            assert_eq!(lease.blocks().len(), 16);
            lease.blocks()[3].as_mut()[0] = 0xdead_beef;
        }
        assert_eq!(pool.idle_buffers(), 1);
        let mut again = pool.lease(8);
        assert_eq!(again.blocks().len(), 8, "exactly the blocks asked for");
        assert_eq!(pool.idle_buffers(), 0, "the idle buffer was taken");
        assert_eq!(again.blocks()[3].as_ref()[0], 0, "zeroed after use");
    }

    #[test]
    fn concurrent_leases_get_their_own_buffers_and_all_come_back() {
        let pool = MemoryPool::new(64);
        let a = pool.lease(16);
        let b = pool.lease(16);
        drop(a);
        drop(b);
        assert_eq!(pool.idle_buffers(), 2);
        let _c = pool.lease(16);
        assert_eq!(pool.idle_buffers(), 1);
    }

    #[test]
    fn a_larger_request_does_not_use_a_small_buffer() {
        let pool = MemoryPool::new(64);
        drop(pool.lease(8));
        let mut big = pool.lease(32);
        assert_eq!(big.blocks().len(), 32);
        assert_eq!(pool.idle_buffers(), 1, "the small buffer stays idle");
    }

    #[test]
    fn oversized_buffers_are_not_kept() {
        let pool = MemoryPool::new(16);
        drop(pool.lease(17));
        assert_eq!(pool.idle_buffers(), 0);
        drop(pool.lease(16));
        assert_eq!(pool.idle_buffers(), 1);
    }

    #[test]
    fn idle_buffers_are_released_one_period_after_the_last_lease() {
        let pool = MemoryPool::new(64);
        drop(pool.lease(16));
        assert_eq!(pool.release_idle(), 0, "leased during this period: kept");
        assert_eq!(pool.idle_buffers(), 1);
        assert_eq!(
            pool.release_idle(),
            1,
            "a whole period without a lease: freed"
        );
        assert_eq!(pool.idle_buffers(), 0);

        drop(pool.lease(16));
        pool.clear();
        assert_eq!(pool.idle_buffers(), 0);
    }
}
