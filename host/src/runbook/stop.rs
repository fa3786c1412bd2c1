//! How a run is asked to stop: the first request (Ctrl-C, SIGTERM, a server shutting down)
//! stops the running action and the steps after it, but the rollbacks of completed steps
//! still run to completion, each within its own time limit; a second request cuts the
//! rollbacks short too, leaving the ones not done pending for `runcap recover`.

use tokio::sync::watch;

/// How far a stop request has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopLevel {
    /// Carry on.
    Run,
    /// Stop the steps; still run rollbacks and revert faults.
    Stop,
    /// Stop everything now, rollbacks included.
    Abort,
}

/// The sending side: whoever decides a run must stop.
#[derive(Debug)]
pub struct Stopper(watch::Sender<StopLevel>);

/// The receiving side, cheap to clone into every run.
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<StopLevel>);

/// A stopper and the signal it drives.
pub fn channel() -> (Stopper, StopSignal) {
    let (tx, rx) = watch::channel(StopLevel::Run);
    (Stopper(tx), StopSignal(rx))
}

impl Stopper {
    /// Raises the request one level (run → stop → abort); returns the new level.
    pub fn escalate(&self) -> StopLevel {
        let mut now = StopLevel::Run;
        self.0.send_modify(|l| {
            *l = match *l {
                StopLevel::Run => StopLevel::Stop,
                _ => StopLevel::Abort,
            };
            now = *l;
        });
        now
    }

    /// Sets the request to at least `level`.
    pub fn raise(&self, level: StopLevel) {
        self.0.send_modify(|l| *l = (*l).max(level));
    }

    /// A signal following this stopper.
    pub fn signal(&self) -> StopSignal {
        StopSignal(self.0.subscribe())
    }
}

impl StopSignal {
    /// A signal that never fires (runs nobody can stop: tests, benchmarks).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(StopLevel::Run);
        // The sender is dropped: the level stays `Run` forever.
        drop(tx);
        StopSignal(rx)
    }

    /// The level now.
    pub fn level(&self) -> StopLevel {
        *self.0.borrow()
    }

    /// Whether the level has reached `level`.
    pub fn reached(&self, level: StopLevel) -> bool {
        self.level() >= level
    }

    /// Resolves once the level reaches `level` (never, if its stopper is gone first).
    pub async fn wait_for(&self, level: StopLevel) {
        let mut rx = self.0.clone();
        if rx.wait_for(|l| *l >= level).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_requests_stop_then_abort() {
        let (stopper, signal) = channel();
        assert_eq!(signal.level(), StopLevel::Run);
        assert_eq!(stopper.escalate(), StopLevel::Stop);
        signal.wait_for(StopLevel::Stop).await;
        assert!(!signal.reached(StopLevel::Abort));
        assert_eq!(stopper.escalate(), StopLevel::Abort);
        assert_eq!(stopper.escalate(), StopLevel::Abort);
        assert!(signal.reached(StopLevel::Abort));
        assert_eq!(StopSignal::never().level(), StopLevel::Run);
    }
}
