//! Worker threads: one single-threaded event loop per thread (`server.workers`, one per CPU by
//! default). An accepted connection is handed to one worker and lives there until it closes,
//! together with everything it starts: its HTTP/2 streams, its WebSocket splice and the upstream
//! connections it uses (each worker has its own upstream pools, see `proxy::upstream`).
//!
//! Keeping a connection and its upstream connection on one thread means a proxied request wakes
//! no other thread: the client's request, the upstream's answer and the reply are handled by the
//! same event loop, the way an nginx worker handles them.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

thread_local! {
    /// The index of the worker running on this thread (`None` outside the workers).
    static WORKER_INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker the calling thread belongs to, or `None` on any other thread
/// (tests, command-line tools, the accept loop).
pub fn current() -> Option<usize> {
    WORKER_INDEX.with(Cell::get)
}

/// How long a stopping worker waits for its blocking tasks (store writes) to finish.
const BLOCKING_DRAIN: Duration = Duration::from_secs(5);

/// The running workers. Dropping this stops them: every task still on a worker is cancelled.
pub(crate) struct Workers {
    workers: Vec<Worker>,
    /// Turns: connection `n` goes to worker `n % workers`.
    next: AtomicUsize,
}

struct Worker {
    handle: Handle,
    /// Dropped (or sent) to end the worker's event loop.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` worker threads, each with its own event loop.
    pub(crate) fn start(count: usize) -> io::Result<Workers> {
        let count = count.max(1);
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            workers.push(Worker::start(index)?);
        }
        Ok(Workers {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    /// The worker for the next connection, in turn. Taking turns keeps the split even however
    /// the connections before it closed: a client that replaces its 50 connections at once gets
    /// 25 on each of two workers.
    pub(crate) fn assign(&self) -> (usize, &Handle) {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        (index, &self.workers[index].handle)
    }

    /// Runs `task` on every worker and waits for all of them (e.g. to close what each holds).
    #[cfg(test)]
    pub(crate) async fn on_each<F, Fut>(&self, task: F) -> Vec<Fut::Output>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let mut out = Vec::with_capacity(self.workers.len());
        for worker in &self.workers {
            let joined = worker.handle.spawn(task()).await;
            out.push(joined.expect("worker task panicked"));
        }
        out
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }
}

impl Worker {
    fn start(index: usize) -> io::Result<Worker> {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .thread_name(format!("stepgate-blocking-{index}"))
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name(format!("stepgate-worker-{index}"))
            .spawn(move || {
                WORKER_INDEX.with(|w| w.set(Some(index)));
                // Either a stop message or the sender's drop ends the loop.
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(BLOCKING_DRAIN);
            })?;
        Ok(Worker {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        // Joined only when no worker is dropping its own pool (a worker cannot join itself).
        let own = current();
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take()
                && own.is_none()
            {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_worker_knows_its_index_and_other_threads_have_none() {
        let workers = Workers::start(3).unwrap();
        assert_eq!(workers.len(), 3);
        let mut seen = workers.on_each(|| async { current() }).await;
        seen.sort();
        assert_eq!(seen, vec![Some(0), Some(1), Some(2)]);
        assert_eq!(current(), None);
    }

    #[tokio::test]
    async fn connections_go_to_the_workers_in_turn() {
        let workers = Workers::start(3).unwrap();
        let turns: Vec<usize> = (0..7).map(|_| workers.assign().0).collect();
        assert_eq!(turns, vec![0, 1, 2, 0, 1, 2, 0]);
        let (index, handle) = workers.assign();
        let on = handle.spawn(async { current() }).await.unwrap();
        assert_eq!(
            on,
            Some(index),
            "the handle runs tasks on the assigned worker"
        );
    }

    #[tokio::test]
    async fn dropping_the_workers_ends_their_threads_and_tasks() {
        let workers = Workers::start(2).unwrap();
        let (_, handle) = workers.assign();
        let (tx, rx) = oneshot::channel::<()>();
        handle.spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        drop(workers);
        // The task was cancelled with its runtime: the sender it held is gone.
        assert!(rx.await.is_err());
    }
}
