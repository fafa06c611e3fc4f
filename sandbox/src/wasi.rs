//! What WASI shows a module: its work unit on stdin, capped stdout and
//! stderr, virtual clocks and seeded randomness, and nothing else (no
//! environment, filesystem or network).
//!
//! Each of these is built so that every replica of a task sees the same
//! thing: clocks advance a fixed step per read from a fixed start, and
//! every random generator is seeded from the work unit ([`unit_seed`]).
//! Bytes written and random draws are charged as host work (`fuel.rs`).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

use crate::fuel::{HostCharges, OUTPUT_BYTES_PER_FUEL, RANDOM_DRAW_FUEL};

/// Program name the module sees as `argv[0]`.
const PROGRAM_NAME: &str = "task";
/// Unix time of the virtual wall clock's first reading: 2000-01-01T00:00:00Z.
pub(crate) const VIRTUAL_EPOCH_SECS: u64 = 946_684_800;
/// How far both virtual clocks advance on every read. A fixed step keeps
/// readings deterministic while still letting a module see time move.
pub(crate) const CLOCK_STEP_NANOS: u64 = 1_000;

/// The WASI context of one run: `input` on stdin, `stdout` and `stderr`
/// capturing what the module writes, the program name `task` then `args`,
/// every random generator seeded from `seed` and charging `charges`, and
/// virtual clocks.
pub(crate) fn task_wasi(
    input: &[u8],
    args: &[String],
    seed: u64,
    stdout: &CappedOutput,
    stderr: &CappedOutput,
    charges: &HostCharges,
) -> WasiP1Ctx {
    WasiCtxBuilder::new()
        .stdin(MemoryInputPipe::new(input.to_vec()))
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .arg(PROGRAM_NAME)
        .args(args)
        .secure_random(SeededRng::new(seed, 0).charging(charges.clone()))
        .insecure_random(SeededRng::new(seed, 1).charging(charges.clone()))
        .insecure_random_seed(SeededRng::new(seed, 2).next_u128())
        .wall_clock(VirtualWallClock::default())
        .monotonic_clock(VirtualMonotonicClock::default())
        .build_p1()
}

/// What a [`CappedOutput`] does with bytes beyond its cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WhenFull {
    /// Trap the module: stdout is the result, and a truncated result is wrong.
    Fail,
    /// Keep the last bytes and drop the earlier ones: stderr is only
    /// diagnostics, and a panic message comes last.
    KeepEnd,
}

/// An in-memory stdout or stderr with a hard cap, shared between the WASI
/// context and the host (clones see the same buffer).
///
/// wasmtime-wasi's `MemoryOutputPipe` reports a full pipe to the guest as a
/// write error, which a guest may ignore (losing output silently) or turn into
/// a panic (failing on too much logging); this type does what each stream
/// needs instead.
#[derive(Clone)]
pub(crate) struct CappedOutput {
    captured: Arc<Mutex<Captured>>,
    cap: usize,
    when_full: WhenFull,
    /// Every byte offered is charged, kept or not: the host copied it.
    charges: HostCharges,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl CappedOutput {
    pub(crate) fn new(cap: usize, when_full: WhenFull, charges: HostCharges) -> CappedOutput {
        CappedOutput {
            captured: Arc::default(),
            cap,
            when_full,
            charges,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Captured> {
        peergrid_os::lock(&self.captured)
    }

    /// Appends what fits; false when bytes had to be refused.
    fn append(&self, bytes: &[u8]) -> bool {
        self.charges
            .charge((bytes.len() as u64).div_ceil(OUTPUT_BYTES_PER_FUEL));
        let mut captured = self.lock();
        let room = self.cap.saturating_sub(captured.bytes.len());
        if bytes.len() <= room {
            captured.bytes.extend_from_slice(bytes);
            return true;
        }
        captured.overflowed = true;
        if self.when_full == WhenFull::KeepEnd {
            // Keep at most the last `cap` bytes of this write, and let the
            // buffer grow to twice the cap before dropping its start:
            // each byte is moved a bounded number of times, however small
            // the writes.
            let bytes = &bytes[bytes.len().saturating_sub(self.cap)..];
            captured.bytes.extend_from_slice(bytes);
            let len = captured.bytes.len();
            if len > self.cap.saturating_mul(2) {
                captured.bytes.drain(..len - self.cap);
            }
            return true;
        }
        false
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// What was kept: at most the cap's worth (for
    /// [`WhenFull::KeepEnd`], the last bytes).
    pub(crate) fn take(&self) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.lock().bytes);
        let len = bytes.len();
        if len > self.cap {
            bytes.drain(..len - self.cap);
        }
        bytes
    }

    fn overflow_message(&self) -> String {
        format!("output exceeds {} bytes", self.cap)
    }
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        if self.append(&bytes) {
            Ok(())
        } else {
            Err(StreamError::trap(&self.overflow_message()))
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: overflow is judged in `write`, where the bytes are.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(if self.append(buf) {
            Ok(buf.len())
        } else {
            Err(std::io::Error::other(self.overflow_message()))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// A wall clock that starts at 2000-01-01T00:00:00Z and advances
/// [`CLOCK_STEP_NANOS`] per reading, so every run sees the same times.
#[derive(Default)]
struct VirtualWallClock {
    readings: std::cell::Cell<u64>,
}

impl HostWallClock for VirtualWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(CLOCK_STEP_NANOS)
    }

    fn now(&self) -> Duration {
        let n = self.readings.get();
        self.readings.set(n.saturating_add(1));
        Duration::from_secs(VIRTUAL_EPOCH_SECS)
            .saturating_add(Duration::from_nanos(n.saturating_mul(CLOCK_STEP_NANOS)))
    }
}

/// A monotonic clock that starts at zero and advances [`CLOCK_STEP_NANOS`]
/// per reading.
#[derive(Default)]
struct VirtualMonotonicClock {
    readings: std::cell::Cell<u64>,
}

impl HostMonotonicClock for VirtualMonotonicClock {
    fn resolution(&self) -> u64 {
        CLOCK_STEP_NANOS
    }

    fn now(&self) -> u64 {
        let n = self.readings.get();
        self.readings.set(n.saturating_add(1));
        n.saturating_mul(CLOCK_STEP_NANOS)
    }
}

/// xoshiro256** (Blackman and Vigna), seeded through splitmix64: a small,
/// well-studied generator whose output is fully determined by the seed. Not
/// cryptographic, on purpose: a task's "secure" randomness must be
/// reproducible by every replica.
struct SeededRng {
    state: [u64; 4],
    /// Charged for every draw, when this is one of the module's generators
    /// (see [`SeededRng::charging`]).
    charges: Option<HostCharges>,
}

impl SeededRng {
    /// A generator for `seed`; `stream` separates the generators of one task.
    fn new(seed: u64, stream: u64) -> SeededRng {
        let mut mix = seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F);
        let mut state = [0; 4];
        for word in &mut state {
            *word = splitmix64(&mut mix);
        }
        SeededRng {
            state,
            charges: None,
        }
    }

    /// This generator, charging `charges` for every draw.
    fn charging(self, charges: HostCharges) -> SeededRng {
        SeededRng {
            charges: Some(charges),
            ..self
        }
    }

    fn next(&mut self) -> u64 {
        if let Some(charges) = &self.charges {
            charges.charge(RANDOM_DRAW_FUEL);
        }
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    fn next_u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl rand_core::TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        Ok(())
    }
}

/// The randomness seed of the unit numbered `unit` (from 1, within its
/// job) of job `job`: every replica of a unit draws the same random
/// numbers, and `peergrid run --job J --unit U` draws them too.
pub fn unit_seed(job: u64, unit: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"peergrid-seed-v1");
    h.update(&job.to_le_bytes());
    h.update(&unit.to_le_bytes());
    let out = h.finalize();
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&out.as_bytes()[..8]);
    u64::from_le_bytes(seed)
}
