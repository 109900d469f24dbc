//! The bounded queue between the HTTP handlers and a model's worker thread. Admission is
//! decided up front (`try_push` refuses once `capacity` requests wait), so an overloaded
//! server answers 503 at once instead of holding connections it cannot serve.

use prometheus::IntGauge;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sending side, held by the handlers.
pub struct Queue<J> {
    tx: mpsc::Sender<J>,
    waiting: Arc<AtomicUsize>,
    capacity: usize,
    gauge: IntGauge,
}

/// The receiving side, owned by the worker thread.
pub struct Inbox<J> {
    rx: mpsc::Receiver<J>,
    waiting: Arc<AtomicUsize>,
    gauge: IntGauge,
}

/// Why a job was not admitted.
pub enum Refused {
    Full { capacity: usize },
    /// The worker is gone (its model failed); the server is shutting down.
    Closed,
}

pub fn bounded<J>(capacity: usize, gauge: IntGauge) -> (Queue<J>, Inbox<J>) {
    let (tx, rx) = mpsc::channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    (Queue { tx, waiting: waiting.clone(), capacity, gauge: gauge.clone() }, Inbox { rx, waiting, gauge })
}

impl<J> Queue<J> {
    pub fn try_push(&self, job: J) -> Result<(), Refused> {
        let before = self.waiting.fetch_add(1, Ordering::SeqCst);
        if before >= self.capacity {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Refused::Full { capacity: self.capacity });
        }
        self.gauge.set((before + 1) as i64);
        if self.tx.send(job).is_err() {
            self.gauge.set(self.waiting.fetch_sub(1, Ordering::SeqCst) as i64 - 1);
            return Err(Refused::Closed);
        }
        Ok(())
    }
}

impl<J> Inbox<J> {
    fn took(&self) {
        let left = self.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        self.gauge.set(left as i64);
    }

    /// The next job, waiting as long as it takes; None once every sender is gone.
    pub fn recv(&self) -> Option<J> {
        let job = self.rx.recv().ok()?;
        self.took();
        Some(job)
    }

    /// The next job if one arrives before `deadline`.
    pub fn recv_until(&self, deadline: Instant) -> Option<J> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let job = if wait == Duration::ZERO { self.rx.try_recv().ok()? } else { self.rx.recv_timeout(wait).ok()? };
        self.took();
        Some(job)
    }
}
