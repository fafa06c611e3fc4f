//! What the worker's daemon and a task runner process say to each other
//! over the runner's stdin and stdout (`peergrid-runner`): one
//! [`ToRunner`] request at a time, answered by any number of
//! [`FromRunner`] events ending with [`FromRunner::Done`].
//!
//! A frame is a 4-byte little-endian length, then that many bytes of one
//! postcard document ([`crate::codec`]). [`frame`] and [`frame_len`] are the
//! pure halves; the reading and writing live with the processes.

use serde::{Deserialize, Serialize};

use crate::Hash;
use crate::codec::{self, CodecError};
use crate::limits::{MAX_FRAME, MAX_INPUT, MAX_MODULE, MAX_OUTPUT};
use crate::wire::TaskLimits;

/// The protocol's version: a runner of another version is refused at
/// start (its [`FromRunner::Ready`] says which it speaks).
///
/// Besides the frames, a runner takes one signal: SIGUSR1 asks the running
/// task for a checkpoint at its next offer, whatever the interval (the
/// worker is shutting down).
pub const RUNNER_PROTOCOL: u32 = 2;

/// One task for a runner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTask {
    pub module: Hash,
    /// The module's bytes, sent when the runner may not have compiled it
    /// yet; `None` when the runner asked for nothing (it answers
    /// [`FromRunner::NeedModule`] if it no longer has it).
    pub module_bytes: Option<Vec<u8>>,
    pub input: Vec<u8>,
    pub args: Vec<String>,
    pub seed: u64,
    pub limits: TaskLimits,
    pub canonical_nan: bool,
    /// A checkpoint to resume from: its state and the fuel used when it
    /// was taken.
    pub resume: Option<(Vec<u8>, u64)>,
    /// Least time between two checkpoints the runner forwards; 0: none.
    pub checkpoint_every_ms: u64,
}

/// The daemon's requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToRunner {
    Run(Box<RunTask>),
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunnerOutcome {
    /// The module's stdout.
    Success(Vec<u8>),
    /// Why it failed, for the researcher.
    Error(String),
}

/// A finished run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerReport {
    pub outcome: RunnerOutcome,
    /// Zero in [`crate::spec::Metering::Fixed`].
    pub fuel_used: u64,
    pub stderr: Vec<u8>,
    /// Time the runner spent on the task, compilation included.
    pub elapsed_us: u64,
    pub resumed: bool,
    /// The engine configuration the run used (the result records it).
    pub engine: String,
}

/// The runner's events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromRunner {
    /// Sent once at start: the protocol it speaks and the CPU architecture
    /// its code runs on.
    Ready {
        protocol: u32,
        arch: String,
    },
    /// The runner does not hold the task's module: send the task again
    /// with its bytes.
    NeedModule,
    /// The module is compiled and linked: the task's wall-clock budget
    /// counts from here.
    Started,
    /// The guest asked whether a checkpoint is due (it uses the guest
    /// SDK): on shutdown the daemon waits briefly for its next one. Sent
    /// once per task.
    UsesCheckpoints,
    /// The guest offered a checkpoint.
    Checkpoint {
        state: Vec<u8>,
        fuel_used: u64,
    },
    /// The guest says it is this far done (0..=1).
    Progress(f64),
    Done(RunnerReport),
}

/// The largest frame either side accepts: a task with the largest module
/// and input, or a report with the largest output (checkpoints are bounded
/// by the task's memory, at most [`MAX_FRAME`] in total).
pub const MAX_RUNNER_FRAME: usize = MAX_FRAME;

const _: () = assert!(MAX_MODULE + MAX_INPUT + 4096 <= MAX_RUNNER_FRAME);
const _: () = assert!(MAX_OUTPUT + 4096 <= MAX_RUNNER_FRAME);

/// `msg` as one frame: its length, then its postcard bytes.
pub fn frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let body = codec::encode(msg)?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The body length a frame's 4-byte header announces, refused past
/// [`MAX_RUNNER_FRAME`] before anything is allocated for it.
pub fn frame_len(header: [u8; 4]) -> Result<usize, CodecError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_RUNNER_FRAME {
        return Err(CodecError::TooLarge(len));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_frame_is_its_length_then_one_document() {
        let msg = FromRunner::Progress(0.5);
        let bytes = frame(&msg).unwrap();
        let len = frame_len(bytes[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(codec::decode::<FromRunner>(&bytes[4..]).unwrap(), msg);
    }

    #[test]
    fn a_forged_length_is_refused_before_allocation() {
        let e = frame_len(u32::MAX.to_le_bytes()).unwrap_err();
        assert!(matches!(e, CodecError::TooLarge(_)), "{e}");
    }
}
