//! Dedicated threads for password hashing, at a lower scheduling priority than the rest of the
//! gateway.
//!
//! An argon2id computation keeps a CPU busy for tens of milliseconds. On tokio's blocking pool it
//! competed on equal terms with the threads that proxy traffic, so a burst of logins showed in
//! the latency of every proxied request. Here a fixed set of threads (one per allowed concurrent
//! hash) runs the computations with the "nice" value raised by [`NICE`]: when the CPUs are
//! busy, proxied traffic goes first and logins wait a little; when they are idle, nothing changes.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// How much the hashing threads' nice value is raised (Linux: about a tenth of the CPU share of
/// a normal thread when both want to run).
pub(crate) const NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads. They end when this is dropped.
pub(crate) struct HashWorkers {
    jobs: Mutex<Sender<Job>>,
}

/// Why a job did not produce its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobFailed {
    /// The work panicked (the thread survives and takes the next job).
    Panicked,
    /// The threads are gone (they could not be started, or are shutting down).
    Unavailable,
}

impl HashWorkers {
    /// Starts `count` threads named `stepgate-hash-<n>`.
    pub(crate) fn start(count: usize) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..count {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("stepgate-hash-{n}"))
                .spawn(move || work(&queue))?;
        }
        Ok(HashWorkers {
            jobs: Mutex::new(jobs),
        })
    }

    /// Runs `work` on one of the threads and waits for its result without blocking the caller's
    /// thread.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, JobFailed>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job);
        if sent.is_err() {
            return Err(JobFailed::Unavailable);
        }
        // The sender is dropped without a value only when the work panicked.
        result.await.map_err(|_| JobFailed::Panicked)
    }
}

fn work(queue: &Mutex<Receiver<Job>>) {
    if let Err(e) = rustix::process::setpriority_process(None, NICE) {
        // Containers may forbid it; hashing still works, at the normal priority.
        tracing::debug!(error = %e, "could not lower the priority of a password-hashing thread");
    }
    loop {
        let job = match queue.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A panicking job drops its result sender (the caller sees `Panicked`); the thread goes on.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_here() -> i32 {
        rustix::process::getpriority_process(None).expect("getpriority")
    }

    #[tokio::test]
    async fn work_runs_on_a_named_thread_with_a_lower_priority() {
        let workers = HashWorkers::start(1).unwrap();
        let caller = nice_here();
        let (name, nice) = workers
            .run(|| {
                let name = std::thread::current().name().map(str::to_owned);
                (name, nice_here())
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("stepgate-hash-0"));
        assert!(
            nice >= (caller + NICE).min(19),
            "nice {nice}, caller {caller}"
        );
        assert_eq!(nice_here(), caller, "the caller's thread is unchanged");
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_thread_goes_on() {
        let workers = HashWorkers::start(1).unwrap();
        let failed = workers.run(|| -> u32 { panic!("boom") }).await;
        assert_eq!(failed, Err(JobFailed::Panicked));
        assert_eq!(workers.run(|| 7).await, Ok(7));
    }

    #[tokio::test]
    async fn jobs_beyond_the_thread_count_wait_their_turn() {
        let workers = Arc::new(HashWorkers::start(2).unwrap());
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut all = Vec::new();
        for _ in 0..8 {
            let (workers, running, peak) = (workers.clone(), running.clone(), peak.clone());
            all.push(tokio::spawn(async move {
                workers
                    .run(move || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        peak.fetch_max(now, SeqCst);
                        // Real work, so that the jobs overlap if they can.
                        let mut x = 0u64;
                        for i in 0..2_000_000u64 {
                            x = x.wrapping_mul(31).wrapping_add(i);
                        }
                        running.fetch_sub(1, SeqCst);
                        std::hint::black_box(x)
                    })
                    .await
            }));
        }
        for job in all {
            assert!(job.await.unwrap().is_ok());
        }
        assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    }
}
