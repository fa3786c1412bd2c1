//! A small ordered worker pool: items are processed in parallel and their results delivered in
//! submission order, with a fixed bound on items in flight.
//!
//! Reading (files, a stream) stays sequential on the caller's thread while hashing, compression,
//! encryption and disk writes run on workers; the bound keeps memory flat whatever the data size
//! (at most `window` chunks are alive between the reader and the consumer).

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Scope;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::error::{Error, Result};

/// Worker threads for CPU work interleaved with disk I/O: one per core plus two, so a worker
/// blocked in `fsync` or `read` does not leave a core idle.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 32)
        + 2
}

/// An ordered parallel map running inside a thread scope.
pub(crate) struct Pipeline<I, O> {
    jobs: Option<Sender<(u64, I)>>,
    results: Receiver<(u64, Result<O>)>,
    next_seq: u64,
    next_out: u64,
    window: u64,
    reorder: BTreeMap<u64, Result<O>>,
    abort: Arc<AtomicBool>,
}

impl<I: Send, O: Send> Pipeline<I, O> {
    /// Starts `workers` threads in `scope`, each applying `work`; at most `window` items are
    /// submitted but not yet delivered.
    ///
    /// `work` is dropped when the last worker exits, which lets it own resources (a sender to
    /// other threads) whose release signals that all work is done.
    pub(crate) fn new<'scope, 'env, F>(
        scope: &'scope Scope<'scope, 'env>,
        workers: usize,
        window: usize,
        work: F,
    ) -> Pipeline<I, O>
    where
        F: Fn(I) -> Result<O> + Send + Sync + 'scope,
        I: 'scope,
        O: 'scope,
    {
        let work = Arc::new(work);
        let (job_tx, job_rx) = bounded::<(u64, I)>(window.max(1));
        let (res_tx, res_rx) = unbounded::<(u64, Result<O>)>();
        let abort = Arc::new(AtomicBool::new(false));
        for _ in 0..workers.max(1) {
            let job_rx = job_rx.clone();
            let res_tx = res_tx.clone();
            let abort = abort.clone();
            let work = work.clone();
            scope.spawn(move || {
                for (seq, item) in job_rx.iter() {
                    let result = if abort.load(Ordering::Relaxed) {
                        drop(item);
                        Err(Error::Internal("operation aborted".into()))
                    } else {
                        catch_unwind(AssertUnwindSafe(|| work(item))).unwrap_or_else(|panic| {
                            let msg = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "worker panicked".into());
                            Err(Error::Internal(format!("worker panicked: {msg}")))
                        })
                    };
                    if res_tx.send((seq, result)).is_err() {
                        break;
                    }
                }
            });
        }
        Pipeline {
            jobs: Some(job_tx),
            results: res_rx,
            next_seq: 0,
            next_out: 0,
            window: window.max(1) as u64,
            reorder: BTreeMap::new(),
            abort,
        }
    }

    /// Delivers, in order, every result that is ready.
    fn deliver(&mut self, sink: &mut dyn FnMut(O) -> Result<()>) -> Result<()> {
        while let Some(result) = self.reorder.remove(&self.next_out) {
            self.next_out += 1;
            let out = result.inspect_err(|_| self.abort.store(true, Ordering::Relaxed))?;
            sink(out).inspect_err(|_| self.abort.store(true, Ordering::Relaxed))?;
        }
        Ok(())
    }

    /// Waits for one result from the workers.
    fn receive_one(&mut self) -> Result<()> {
        let (seq, result) = self
            .results
            .recv()
            .map_err(|_| Error::Internal("all workers stopped".into()))?;
        self.reorder.insert(seq, result);
        Ok(())
    }

    /// Submits an item, first delivering finished results to `sink` and waiting while the
    /// pipeline is full.
    pub(crate) fn submit(&mut self, item: I, sink: &mut dyn FnMut(O) -> Result<()>) -> Result<()> {
        while let Ok((seq, result)) = self.results.try_recv() {
            self.reorder.insert(seq, result);
        }
        self.deliver(sink)?;
        while self.next_seq - self.next_out >= self.window {
            self.receive_one()?;
            self.deliver(sink)?;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.jobs
            .as_ref()
            .expect("open until finish")
            .send((seq, item))
            .map_err(|_| Error::Internal("all workers stopped".into()))
    }

    /// Waits for every submitted item and delivers the remaining results.
    pub(crate) fn finish(mut self, sink: &mut dyn FnMut(O) -> Result<()>) -> Result<()> {
        self.jobs = None;
        self.deliver(sink)?;
        while self.next_out < self.next_seq {
            self.receive_one()?;
            self.deliver(sink)?;
        }
        Ok(())
    }
}

impl<I, O> Drop for Pipeline<I, O> {
    fn drop(&mut self) {
        // Unfinished (an error is propagating): let workers skip what is queued and exit.
        if self.next_out < self.next_seq {
            self.abort.store(true, Ordering::Relaxed);
        }
        self.jobs = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_order() {
        let work = |i: u64| -> Result<u64> {
            std::thread::sleep(std::time::Duration::from_micros((i * 7919) % 300));
            Ok(i * 2)
        };
        let mut seen = Vec::new();
        std::thread::scope(|s| {
            let mut p = Pipeline::new(s, 4, 6, work);
            let mut sink = |o: u64| {
                seen.push(o);
                Ok(())
            };
            for i in 0..200 {
                p.submit(i, &mut sink).unwrap();
            }
            p.finish(&mut sink).unwrap();
        });
        assert_eq!(seen, (0..200).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn error_stops_and_is_returned() {
        let work = |i: u64| -> Result<u64> {
            if i == 50 {
                Err(Error::Internal("boom".into()))
            } else {
                Ok(i)
            }
        };
        let r = std::thread::scope(|s| -> Result<()> {
            let mut p = Pipeline::new(s, 3, 4, work);
            let mut sink = |_o: u64| Ok(());
            for i in 0..1000 {
                p.submit(i, &mut sink)?;
            }
            p.finish(&mut sink)
        });
        assert!(matches!(r, Err(Error::Internal(m)) if m == "boom"));
    }
}
