//! The serving threads: each runs a single-threaded async runtime of its own and the client
//! connections handed to it, for their whole life.
//!
//! A connection's request, its upstream exchange (the upstream connection is driven from the
//! same task, `upstream.rs`) and its response then all happen on one thread, woken only by
//! its own sockets. A work-stealing runtime instead wakes a second worker on every request
//! to look for work that is not there (BENCHMARKS.md, "HTTP gateway": about 30 µs of CPU and
//! 0.1 ms of p50 latency per request at one connection on a 2-vCPU machine). New connections
//! go to the thread serving the fewest.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::time::MissedTickBehavior;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How often each serving thread wakes with nothing to do. A timer set to fire before the
/// runtime's next planned wake-up makes it write to its own eventfd, so that a parked thread
/// would see the new deadline. Every request sets such timers (hyper's header read timeout,
/// the body and upstream timeouts: 1 s and more), and without an earlier timer pending each
/// one cost a `write` and an extra `epoll_wait` on the thread's own eventfd (`strace`: one of
/// each per request at one connection). With this beat pending, the planned wake-up is never
/// more than this far away, and those timers are filed without a wake-up.
const HEARTBEAT: Duration = Duration::from_millis(500);

struct Lane {
    jobs: UnboundedSender<Job>,
    /// Connections this thread serves now.
    active: Arc<AtomicUsize>,
}

/// The serving threads. Dropping it (or [`ServingThreads::stop`]) ends them: connections
/// still open are cut.
pub(crate) struct ServingThreads {
    lanes: Vec<Lane>,
    joins: Vec<JoinHandle<()>>,
}

/// Counts a connection as served by its thread until dropped.
struct Serving(Arc<AtomicUsize>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ServingThreads {
    /// Start `n` threads (at least one).
    pub(crate) fn start(n: usize) -> std::io::Result<Self> {
        let mut lanes = Vec::new();
        let mut joins = Vec::new();
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (jobs, mut rx) = unbounded_channel::<Job>();
            let join = std::thread::Builder::new()
                .name(format!("mcptrail-serve-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let mut heartbeat = tokio::time::interval(HEARTBEAT);
                        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
                        loop {
                            tokio::select! {
                                job = rx.recv() => match job {
                                    Some(job) => drop(tokio::spawn(job)),
                                    None => break,
                                },
                                _ = heartbeat.tick() => {}
                            }
                        }
                    });
                    // The runtime is dropped here: connections still open are cut, on
                    // this thread.
                })?;
            lanes.push(Lane {
                jobs,
                active: Arc::default(),
            });
            joins.push(join);
        }
        Ok(ServingThreads { lanes, joins })
    }

    /// Run `connection` on the thread that serves the fewest connections. The future is first
    /// polled there, so sockets it registers (e.g. with `TcpStream::from_std`) belong to that
    /// thread's runtime.
    pub(crate) fn serve(&self, connection: impl Future<Output = ()> + Send + 'static) {
        let lane = self
            .lanes
            .iter()
            .min_by_key(|l| l.active.load(Ordering::Relaxed))
            .expect("at least one serving thread");
        lane.active.fetch_add(1, Ordering::Relaxed);
        let serving = Serving(Arc::clone(&lane.active));
        let job: Job = Box::pin(async move {
            let _serving = serving;
            connection.await;
        });
        // A thread that has ended (it cannot, before `stop`) drops the job: the connection
        // closes.
        let _ = lane.jobs.send(job);
    }

    /// End the threads and wait for them: connections still open are cut (their tasks are
    /// dropped, which records what they had).
    pub(crate) fn stop(mut self) {
        self.lanes.clear();
        for j in self.joins.drain(..) {
            let _ = j.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_to_the_least_busy_thread_and_stop_cuts_what_is_left() {
        let threads = ServingThreads::start(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Two long connections: one per thread.
        for _ in 0..2 {
            let tx = tx.clone();
            threads.serve(async move {
                tx.send(std::thread::current().name().map(str::to_owned))
                    .unwrap();
                std::future::pending::<()>().await;
            });
        }
        let mut names: Vec<_> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                Some("mcptrail-serve-0".to_owned()),
                Some("mcptrail-serve-1".to_owned())
            ]
        );
        assert!(threads
            .lanes
            .iter()
            .all(|l| l.active.load(Ordering::Relaxed) == 1));
        // A short one ends and is no longer counted.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        threads.serve(async move { done_tx.send(()).unwrap() });
        done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while threads
            .lanes
            .iter()
            .map(|l| l.active.load(Ordering::Relaxed))
            .sum::<usize>()
            != 2
        {
            assert!(
                std::time::Instant::now() < deadline,
                "count never fell back"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // stop returns although the two long connections never end.
        threads.stop();
        drop(tx);
    }
}
