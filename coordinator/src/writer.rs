//! Group commit: one thread applies the scheduler's decisions to the store.
//!
//! Callers queue a batch and await its receipt. The thread takes every
//! batch waiting when it wakes and commits them in a single transaction,
//! so under load many exchanges share one commit and the dispatch path
//! never pays a disk write per request; a reply that acknowledges results
//! is only sent after the receipt, so an acknowledged result is durable.
//! A commit that fails stops the process (fail-stop): the scheduler's
//! memory would otherwise be ahead of the store.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use peergrid_proto::Hash;
use tokio::sync::oneshot;

use crate::store::{StderrTail, Store, StoreOp};

/// Most batches merged into one transaction.
const MAX_MERGE: usize = 1024;

struct Batch {
    ops: Vec<StoreOp>,
    blobs: Vec<(Hash, Vec<u8>)>,
    /// Stderr tails of error reports among `ops`.
    stderr: Vec<StderrTail>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

enum Message {
    Batch(Batch),
    /// Commit what is queued, then stop.
    Stop,
}

pub struct Writer {
    queue: mpsc::Sender<Message>,
}

/// The writer thread, joined at shutdown after [`Writer::stop`].
pub struct WriterThread(JoinHandle<()>);

impl WriterThread {
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Writer {
    pub fn spawn(store: Arc<dyn Store>) -> (Writer, WriterThread) {
        let (queue, rx) = mpsc::channel::<Message>();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(store, rx))
            .expect("spawning the store writer thread");
        (Writer { queue }, WriterThread(handle))
    }

    /// Queues a batch; the receiver resolves once it is committed.
    pub fn submit(
        &self,
        ops: Vec<StoreOp>,
        blobs: Vec<(Hash, Vec<u8>)>,
    ) -> oneshot::Receiver<Result<(), String>> {
        self.submit_with_stderr(ops, blobs, Vec::new())
    }

    /// [`Writer::submit`] with the stderr tails of the batch's error
    /// reports, stored with their results in the same transaction.
    pub fn submit_with_stderr(
        &self,
        ops: Vec<StoreOp>,
        blobs: Vec<(Hash, Vec<u8>)>,
        stderr: Vec<StderrTail>,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        let batch = Batch {
            ops,
            blobs,
            stderr,
            done: Some(tx),
        };
        if let Err(mpsc::SendError(Message::Batch(batch))) = self.queue.send(Message::Batch(batch))
            && let Some(done) = batch.done
        {
            let _ = done.send(Err("the store writer has stopped".into()));
        }
        rx
    }

    /// Asks the thread to commit everything queued so far and stop; later
    /// batches are refused with an error.
    pub fn stop(&self) {
        let _ = self.queue.send(Message::Stop);
    }

    /// Queues a batch nobody waits for (timeouts found by the ticker).
    pub fn submit_detached(&self, ops: Vec<StoreOp>) {
        let _ = self.queue.send(Message::Batch(Batch {
            ops,
            blobs: Vec::new(),
            stderr: Vec::new(),
            done: None,
        }));
    }
}

fn run(store: Arc<dyn Store>, rx: mpsc::Receiver<Message>) {
    let mut stopping = false;
    while !stopping {
        let Ok(Message::Batch(first)) = rx.recv() else {
            break;
        };
        let mut batches = vec![first];
        while batches.len() < MAX_MERGE {
            match rx.try_recv() {
                Ok(Message::Batch(b)) => batches.push(b),
                Ok(Message::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let mut ops = Vec::new();
        let mut blobs = Vec::new();
        let mut stderr = Vec::new();
        let mut waiters = Vec::new();
        for b in batches {
            ops.extend(b.ops);
            blobs.extend(b.blobs);
            stderr.extend(b.stderr);
            waiters.extend(b.done);
        }
        let started = std::time::Instant::now();
        let result = store.apply_with_stderr(&ops, &blobs, &stderr);
        crate::metrics::WRITER_COMMITS.observe(started.elapsed(), ops.len());
        let result = result.map_err(|e| {
            tracing::error!("committing {} store changes failed: {e}", ops.len());
            e.to_string()
        });
        let failed = result.is_err();
        for w in waiters {
            let _ = w.send(result.clone());
        }
        if failed {
            // The scheduler already applied these decisions in memory, so
            // memory is now ahead of the store. Nothing of the batch was
            // acknowledged; stop rather than serve from a state the store
            // does not hold. A restart rebuilds memory from the store.
            tracing::error!(
                "stopping: the store refused a commit; restart the coordinator to resume from what is stored"
            );
            std::process::exit(75);
        }
    }
}
