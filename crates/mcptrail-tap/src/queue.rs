//! The hand-off from the relays to the recorder: a bounded FIFO whose producers choose when
//! the consumer is woken.
//!
//! A relay enqueues a message's copy *before* delivering its bytes (so the recorder sees a
//! request before the response it causes) but wakes the recorder only *after* delivering
//! them. With a channel that wakes on every send, the woken recorder can preempt the relay on
//! a busy CPU and put all of its work between the client and the server.
//!
//! While traffic flows the consumer does not want a wake-up per message either: it waits
//! *lazily* (a short timed wait that producers do not interrupt unless the queue fills up)
//! and takes what accumulated in one batch. After a quiet interval it waits *eagerly*: the
//! next message wakes it at once.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

struct State<T> {
    items: VecDeque<T>,
    senders: usize,
    consumer: Consumer,
}

/// What the consumer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Consumer {
    Busy,
    /// Waiting; wake it when something arrives.
    Eager,
    /// Waiting briefly; wake it only when the queue is a quarter full.
    Lazy,
}

/// How the consumer waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Woken by the next message.
    Eager,
    /// Woken by the timeout, or a queue a quarter full.
    Lazy,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
}

/// A bounded queue with deferred wake-ups; see the module doc.
pub(crate) fn queue<T>(capacity: usize) -> (QueueSender<T>, QueueReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            consumer: Consumer::Busy,
        }),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
        capacity: capacity.max(1),
    });
    (
        QueueSender {
            shared: Arc::clone(&shared),
        },
        QueueReceiver { shared },
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Producer side; clone one per thread.
pub(crate) struct QueueSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> QueueSender<T> {
    /// Enqueue without waking the consumer (call [`wake`](Self::wake) later). Blocks while the
    /// queue is full — the relay slows down rather than lose a record.
    pub(crate) fn push_quiet(&self, item: T) {
        let mut st = lock(&self.shared.state);
        while st.items.len() >= self.shared.capacity {
            self.shared.not_empty.notify_one();
            st = self
                .shared
                .not_full
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
        st.items.push_back(item);
    }

    /// Enqueue and wake the consumer.
    pub(crate) fn push(&self, item: T) {
        self.push_quiet(item);
        self.wake();
    }

    /// Wake the consumer if it waits for what is queued.
    pub(crate) fn wake(&self) {
        let st = lock(&self.shared.state);
        let wanted = match st.consumer {
            Consumer::Busy => false,
            Consumer::Eager => !st.items.is_empty(),
            Consumer::Lazy => st.items.len() >= self.shared.capacity / 4,
        };
        if wanted {
            self.shared.not_empty.notify_one();
        }
    }
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        lock(&self.shared.state).senders += 1;
        QueueSender {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for QueueSender<T> {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.state);
        st.senders -= 1;
        if st.senders == 0 {
            self.shared.not_empty.notify_one();
        }
    }
}

/// What [`QueueReceiver::recv_batch`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Items were moved into the caller's buffer.
    Items,
    /// The timeout passed with nothing queued.
    Timeout,
    /// Every sender is gone and nothing is left.
    Disconnected,
}

/// Consumer side.
pub(crate) struct QueueReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> QueueReceiver<T> {
    /// Move everything queued into `into`, waiting up to `timeout` for something to arrive.
    pub(crate) fn recv_batch(&self, into: &mut Vec<T>, timeout: Duration, wait: Wait) -> Received {
        let mut st = lock(&self.shared.state);
        if st.items.is_empty() {
            if st.senders == 0 {
                return Received::Disconnected;
            }
            st.consumer = match wait {
                Wait::Eager => Consumer::Eager,
                Wait::Lazy => Consumer::Lazy,
            };
            let (guard, _) = self
                .shared
                .not_empty
                .wait_timeout_while(st, timeout, |s| s.items.is_empty() && s.senders > 0)
                .unwrap_or_else(|p| p.into_inner());
            st = guard;
            st.consumer = Consumer::Busy;
            if st.items.is_empty() {
                return if st.senders == 0 {
                    Received::Disconnected
                } else {
                    Received::Timeout
                };
            }
        }
        let was_full = st.items.len() >= self.shared.capacity;
        into.extend(st.items.drain(..));
        if was_full {
            self.shared.not_full.notify_all();
        }
        Received::Items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_across_producers_and_disconnect() {
        let (tx, rx) = queue::<u32>(4);
        let tx2 = tx.clone();
        let a = std::thread::spawn(move || (0..100).for_each(|i| tx.push(i)));
        let b = std::thread::spawn(move || (100..200).for_each(|i| tx2.push_quiet(i)));
        let mut got = Vec::new();
        loop {
            match rx.recv_batch(&mut got, Duration::from_millis(5), Wait::Eager) {
                Received::Disconnected => break,
                Received::Items | Received::Timeout => {}
            }
        }
        a.join().unwrap();
        b.join().unwrap();
        let from_a: Vec<u32> = got.iter().copied().filter(|&i| i < 100).collect();
        let from_b: Vec<u32> = got.iter().copied().filter(|&i| i >= 100).collect();
        assert_eq!(
            from_a,
            (0..100).collect::<Vec<_>>(),
            "each producer's order is kept"
        );
        assert_eq!(from_b, (100..200).collect::<Vec<_>>());
    }

    #[test]
    fn quiet_push_is_seen_on_wake_or_timeout() {
        let (tx, rx) = queue::<u8>(8);
        tx.push_quiet(1);
        let mut got = Vec::new();
        assert_eq!(
            rx.recv_batch(&mut got, Duration::from_millis(1), Wait::Eager),
            Received::Items
        );
        assert_eq!(got, [1]);
        assert_eq!(
            rx.recv_batch(&mut got, Duration::from_millis(1), Wait::Lazy),
            Received::Timeout
        );
        drop(tx);
        assert_eq!(
            rx.recv_batch(&mut got, Duration::from_millis(1), Wait::Eager),
            Received::Disconnected
        );
    }

    #[test]
    fn an_eager_consumer_is_woken_a_lazy_one_is_not() {
        let (tx, rx) = queue::<u8>(64);
        let waiter = std::thread::spawn(move || {
            let mut got = Vec::new();
            let t = std::time::Instant::now();
            assert_eq!(
                rx.recv_batch(&mut got, Duration::from_secs(30), Wait::Eager),
                Received::Items
            );
            let eager = t.elapsed();
            let t = std::time::Instant::now();
            assert_eq!(
                rx.recv_batch(&mut got, Duration::from_millis(300), Wait::Lazy),
                Received::Items
            );
            (eager, t.elapsed(), got)
        });
        std::thread::sleep(Duration::from_millis(50));
        tx.push(1);
        std::thread::sleep(Duration::from_millis(50));
        tx.push(2); // a lazy consumer sleeps on until its timeout
        let (eager, lazy, got) = waiter.join().unwrap();
        assert!(eager < Duration::from_secs(30), "woken, not timed out");
        assert!(
            lazy >= Duration::from_millis(300),
            "not woken early: {lazy:?}"
        );
        assert_eq!(got, [1, 2]);
    }
}
