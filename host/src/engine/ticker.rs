//! The thread that advances the engine's epoch, which is how a running action meets its
//! deadline and yields to other tasks. It ticks only while some action holds a store:
//! an idle `runcap serve` would otherwise wake 200 times a second for nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::Thread;

use wasmtime::EngineWeak;

use super::EPOCH_TICK;

/// Shared between the runtime, the ticking thread and the guards actions hold.
struct Shared {
    /// How many [`Ticking`] guards exist.
    holders: AtomicUsize,
    /// Set when the runtime is dropped; the thread then ends.
    stopped: AtomicBool,
    /// Ticks made so far, and whether the thread is parked (for tests and diagnostics).
    ticks: AtomicU64,
    parked: AtomicBool,
}

/// Owns the ticking thread; dropping it stops the thread.
pub(super) struct Ticker {
    shared: Arc<Shared>,
    thread: Thread,
}

/// Keeps the epoch advancing while it lives: held for as long as an action's store
/// exists, from instantiation to the end of its last call.
#[must_use = "the epoch advances only while this guard lives"]
pub struct Ticking {
    shared: Arc<Shared>,
    thread: Thread,
}

impl Ticker {
    /// Starts the (parked) thread that advances `engine`'s epoch.
    pub(super) fn start(engine: EngineWeak) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            holders: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            parked: AtomicBool::new(false),
        });
        let state = shared.clone();
        let handle = std::thread::Builder::new()
            .name("runcap-epoch".into())
            .spawn(move || {
                while !state.stopped.load(Ordering::Acquire) {
                    if state.holders.load(Ordering::Acquire) == 0 {
                        state.parked.store(true, Ordering::Release);
                        // An unpark that came before this park is not lost: park returns.
                        if state.holders.load(Ordering::Acquire) == 0 {
                            std::thread::park();
                        }
                        state.parked.store(false, Ordering::Release);
                        continue;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                    state.ticks.fetch_add(1, Ordering::AcqRel);
                }
            })?;
        Ok(Ticker {
            shared,
            thread: handle.thread().clone(),
        })
    }

    /// A guard that keeps the epoch advancing while it lives.
    pub(super) fn hold(&self) -> Ticking {
        if self.shared.holders.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        Ticking {
            shared: self.shared.clone(),
            thread: self.thread.clone(),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

impl Clone for Ticking {
    fn clone(&self) -> Self {
        self.shared.holders.fetch_add(1, Ordering::AcqRel);
        Ticking {
            shared: self.shared.clone(),
            thread: self.thread.clone(),
        }
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.shared.holders.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Polls `cond` until it holds, for at most ten seconds.
    fn eventually(what: &str, cond: impl Fn() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn ticks_only_while_held() {
        let config = wasmtime::Config::new().epoch_interruption(true).clone();
        let engine = wasmtime::Engine::new(&config).unwrap();
        let ticker = Ticker::start(engine.weak()).unwrap();
        let s = ticker.shared.clone();
        eventually("parked before anything holds it", || {
            s.parked.load(Ordering::Acquire)
        });
        assert_eq!(s.ticks.load(Ordering::Acquire), 0);

        let held = ticker.hold();
        let copy = held.clone();
        eventually("ticks while held", || s.ticks.load(Ordering::Acquire) >= 2);
        drop(held);
        let t = s.ticks.load(Ordering::Acquire);
        eventually("still ticks while a copy is held", || {
            s.ticks.load(Ordering::Acquire) > t
        });
        drop(copy);
        eventually("parks when nothing holds it", || {
            s.parked.load(Ordering::Acquire)
        });
        let t = s.ticks.load(Ordering::Acquire);
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(s.ticks.load(Ordering::Acquire), t, "no tick while parked");

        let _again = ticker.hold();
        eventually("wakes when held again", || {
            s.ticks.load(Ordering::Acquire) > t
        });
    }
}
