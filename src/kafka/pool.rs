//! Where the CPU work on a partition's records runs: decompressing, decoding and
//! converting them into logs.
//!
//! Large or compressed record data is worked on by the pool's own `threads` threads (one
//! job per thread, taken in arrival order), never on the async workers, so one large
//! partition cannot stall the connections sharing a worker. Small data is converted
//! inline when what it can decompress to is small: the work is then bounded by its size,
//! and a hand-off would cost more than the work. A request has at most `per_request`
//! jobs queued or running, so other requests' jobs interleave with a request of many
//! partitions instead of waiting for all of them.
//!
//! (Measured in BENCHMARKS.md, round 4: running jobs in `block_in_place` instead cost the
//! same CPU but 50-85 MiB more peak RSS, as jobs moved over ever new threads; these
//! threads at nice +5 doubled the median Produce latency while a client shared the cores.)
//!
//! What the jobs produce (the converted logs, until storage has written them) is counted
//! in a server-wide budget of bytes: a job's thread slot is given back only once its
//! output is counted, so when storage falls behind, decoding waits (backpressure) instead
//! of piling up converted logs.

use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// Bytes per permit of the pending-output budget.
const PERMIT_BYTES: usize = 1024;

/// Record data that can decompress to at most this many bytes is converted on the async
/// worker (see [`DecodePool::run`]'s `inline`).
pub const INLINE_OUTPUT_BYTES: usize = 64 * 1024;

/// The pool was shut down, or a job panicked.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("decode pool closed")]
    Closed,
    #[error("decode job failed: {0}")]
    Job(String),
}

type Job = Box<dyn FnOnce() + Send>;

/// Bounded CPU work on record data, and the budget of its output.
pub struct DecodePool {
    /// Jobs for the threads; at most `threads` are in it or running (the slots below).
    jobs: mpsc::Sender<Job>,
    threads: Arc<Semaphore>,
    pending: Arc<Semaphore>,
    pending_permits: usize,
    per_request: usize,
}

/// Output of a job counted in the pending budget; give it back by dropping it once the
/// output is written (or dropped).
#[derive(Debug)]
pub struct Pending(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// The jobs of one request, limited to the pool's per-request share.
pub struct RequestJobs(Semaphore);

impl DecodePool {
    /// A pool of `threads` job slots (0: one per core) whose output may hold
    /// `max_pending_bytes` at once.
    pub fn new(threads: usize, max_pending_bytes: usize) -> Self {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let pending_permits = (max_pending_bytes / PERMIT_BYTES).clamp(1, Semaphore::MAX_PERMITS);
        let (send, receive) = mpsc::channel::<Job>();
        let receive = Arc::new(Mutex::new(receive));
        for i in 0..threads {
            let receive = receive.clone();
            let spawned = std::thread::Builder::new().name(format!("loggate-decode-{i}")).spawn(move || {
                loop {
                    // The lock is held only while waiting for the next job.
                    let job = receive.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        // A job that panics (a bug, never input: decoders return errors)
                        // loses only its own answer; the thread goes on.
                        Ok(job) => {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                        Err(_) => return,
                    }
                }
            });
            if let Err(e) = spawned {
                warn!(error = %e, "cannot start a decode thread");
            }
        }
        Self {
            jobs: send,
            threads: Arc::new(Semaphore::new(threads)),
            pending: Arc::new(Semaphore::new(pending_permits)),
            pending_permits,
            per_request: threads.div_ceil(2),
        }
    }

    /// The job limit of one request.
    pub fn request_jobs(&self) -> RequestJobs {
        RequestJobs(Semaphore::new(self.per_request))
    }

    /// Runs `job` (inline when `inline`, else on a pool thread), then counts `size(&output)`
    /// bytes of its output in the pending budget, waiting for room while still holding the
    /// job's slot.
    pub async fn run<T, F, S>(&self, request: &RequestJobs, inline: bool, job: F, size: S) -> Result<(T, Pending), PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
        S: FnOnce(&T) -> usize,
    {
        if inline {
            let output = job();
            let pending = self.hold(size(&output)).await?;
            return Ok((output, pending));
        }
        let _mine = request.0.acquire().await.map_err(|_| PoolError::Closed)?;
        let _slot = self.threads.acquire().await.map_err(|_| PoolError::Closed)?;
        let (done, output) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(job());
        });
        self.jobs.send(job).map_err(|_| PoolError::Closed)?;
        // A job that panicked drops its sender without an answer.
        let output = output.await.map_err(|_| PoolError::Job("the decode job panicked".into()))?;
        let pending = self.hold(size(&output)).await?;
        Ok((output, pending))
    }

    /// Counts `bytes` in the pending budget (at most all of it, so an output larger than
    /// the budget waits for the whole budget instead of forever).
    async fn hold(&self, bytes: usize) -> Result<Pending, PoolError> {
        let permits = bytes.div_ceil(PERMIT_BYTES).min(self.pending_permits);
        if permits == 0 {
            return Ok(Pending(None));
        }
        let permits = u32::try_from(permits).unwrap_or(u32::MAX);
        let permit = self.pending.clone().acquire_many_owned(permits).await.map_err(|_| PoolError::Closed)?;
        Ok(Pending(Some(permit)))
    }

    /// Bytes of the pending budget free now (for tests).
    pub fn pending_free_bytes(&self) -> usize {
        self.pending.available_permits() * PERMIT_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn output_is_counted_until_dropped_and_the_budget_blocks_more() {
        let pool = DecodePool::new(1, 64 * 1024);
        let jobs = pool.request_jobs();
        let (out, pending) = pool.run(&jobs, false, || vec![0u8; 60 * 1024], Vec::len).await.unwrap();
        assert_eq!(out.len(), 60 * 1024);
        assert_eq!(pool.pending_free_bytes(), 4 * 1024);
        // The next job's output does not fit: it waits, holding its thread slot.
        let blocked = tokio::time::timeout(Duration::from_millis(100), pool.run(&jobs, false, || vec![0u8; 8 * 1024], Vec::len));
        assert!(blocked.await.is_err());
        drop(pending);
        let (_, p) = pool.run(&jobs, true, || vec![0u8; 8 * 1024], Vec::len).await.unwrap();
        assert_eq!(pool.pending_free_bytes(), 56 * 1024);
        drop(p);
        // Larger than the whole budget: takes all of it rather than waiting forever.
        let (_, p) = pool.run(&jobs, false, || vec![0u8; 1 << 20], Vec::len).await.unwrap();
        assert_eq!(pool.pending_free_bytes(), 0);
        drop(p);
        assert_eq!(pool.pending_free_bytes(), 64 * 1024);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_off_the_async_workers() {
        let pool = DecodePool::new(2, 1 << 20);
        let jobs = pool.request_jobs();
        let worker = std::thread::current().id();
        let (thread, _) = pool.run(&jobs, false, || std::thread::current().name().map(str::to_string), |_| 0).await.unwrap();
        assert!(thread.as_deref().is_some_and(|n| n.starts_with("loggate-decode-")), "{thread:?}");
        let (inline, _) = pool.run(&jobs, true, || std::thread::current().id(), |_| 0).await.unwrap();
        assert_eq!(inline, worker);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn other_tasks_go_on_while_a_job_runs() {
        let pool = Arc::new(DecodePool::new(1, 1 << 20));
        let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = ticks.load(std::sync::atomic::Ordering::Relaxed);
        // 300 ms of work in a task on the runtime's only worker (the test body runs on a
        // thread of its own): the ticker must keep ticking.
        tokio::spawn(async move {
            let jobs = pool.request_jobs();
            pool.run(&jobs, false, || std::thread::sleep(Duration::from_millis(300)), |_| 0).await.unwrap();
        })
        .await
        .unwrap();
        let during = ticks.load(std::sync::atomic::Ordering::Relaxed) - before;
        ticker.abort();
        assert!(during >= 20, "the ticker ticked {during} times in 300 ms");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_panics_fails_only_itself() {
        let pool = DecodePool::new(1, 1 << 20);
        let jobs = pool.request_jobs();
        let failed = pool.run(&jobs, false, || -> u8 { panic!("bad input") }, |_| 0).await;
        assert!(matches!(failed, Err(PoolError::Job(_))));
        let (ok, _) = pool.run(&jobs, false, || 7u8, |_| 0).await.unwrap();
        assert_eq!(ok, 7);
    }
}
