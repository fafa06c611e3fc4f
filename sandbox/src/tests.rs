use super::*;
use crate::cache::{COMPILED_MAGIC, CompiledDir, compiled_checksum, write_compiled_file};
use crate::engine::TaskEngine;
use crate::fuel::{GROW_ATTEMPT_FUEL, HOST_CALL_FUEL};
use crate::wasi::{CLOCK_STEP_NANOS, VIRTUAL_EPOCH_SECS};
use peergrid_proto::Hash;
use peergrid_proto::limits::MAX_STDERR;
use peergrid_proto::wire::TaskLimits;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A task of `module` (hashing to `hash`) in the NaN mode `canonical_nan`
/// picks.
fn task<'a>(
    hash: &'a Hash,
    module: &'a [u8],
    input: &'a [u8],
    args: &'a [String],
    seed: u64,
    limits: &'a TaskLimits,
    canonical_nan: bool,
) -> SandboxTask<'a> {
    SandboxTask {
        module: hash,
        module_bytes: module,
        input,
        args,
        seed,
        limits,
        nan: NanMode::from_canonical(canonical_nan),
    }
}

/// One sandbox for all tests, as in the daemon (each reserves address
/// space for its instance pool).
fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new(None).expect("sandbox builds"))
}

fn limits() -> TaskLimits {
    TaskLimits {
        memory_bytes: 16 << 20,
        fuel: 10_000_000,
        max_output_bytes: 1 << 20,
        wall_ms: 10_000,
        metering: peergrid_proto::spec::Metering::Fuel,
    }
}

fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("test module is valid wat")
}

fn run_with(wat: &str, input: &[u8], args: &[String], seed: u64, limits: &TaskLimits) -> RunReport {
    let bytes = wasm(wat);
    sandbox().run(&task(
        &Hash::of(&bytes),
        &bytes,
        input,
        args,
        seed,
        limits,
        false,
    ))
}

fn run(wat: &str, input: &[u8]) -> RunReport {
    run_with(wat, input, &[], 7, &limits())
}

fn stdout(report: &RunReport) -> &[u8] {
    match &report.outcome {
        RunOutcome::Success(out) => out,
        RunOutcome::Error(message) => panic!("expected success, got error: {message}"),
    }
}

fn error(report: &RunReport) -> &str {
    match &report.outcome {
        RunOutcome::Error(message) => message,
        RunOutcome::Success(out) => {
            panic!("expected an error, got success with {} bytes", out.len())
        }
    }
}

/// The WASI imports every test module has.
const IMPORTS: &str = r#"
        (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
    "#;

/// Memory and a `$write` helper every test module has.
const HELPERS: &str = r#"
        (memory (export "memory") 2)
        ;; Writes len bytes at ptr to fd, trapping on a WASI error.
        (func $write (param $fd i32) (param $ptr i32) (param $len i32)
          (i32.store (i32.const 0) (local.get $ptr))
          (i32.store (i32.const 4) (local.get $len))
          (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
            (then unreachable)))
    "#;

fn module(body: &str) -> String {
    module_with("", body)
}

/// A module with extra `imports` (which must precede every function).
fn module_with(imports: &str, body: &str) -> String {
    format!("(module {IMPORTS} {imports} {HELPERS} {body})")
}

fn echo() -> String {
    module(
        r#"(func (export "_start")
                 (loop $again
                   (i32.store (i32.const 16) (i32.const 1024))
                   (i32.store (i32.const 20) (i32.const 4096))
                   (if (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24))
                     (then unreachable))
                   (if (i32.eqz (i32.load (i32.const 24))) (then return))
                   (call $write (i32.const 1) (i32.const 1024) (i32.load (i32.const 24)))
                   (br $again)))"#,
    )
}

/// A counter to 1000 that uses the guest SDK: resumes from its
/// checkpoint (4 bytes at address 64), checkpoints and reports
/// progress every step, prints the final count as 4 bytes.
fn counter() -> String {
    module_with(
        r#"(import "peergrid" "checkpoint" (func $checkpoint (param i32 i32)))
               (import "peergrid" "restore_len" (func $restore_len (result i64)))
               (import "peergrid" "restore" (func $restore (param i32 i32) (result i32)))
               (import "peergrid" "progress" (func $progress (param f64)))"#,
        r#"(func (export "_start")
                 (if (i64.ge_s (call $restore_len) (i64.const 0))
                   (then (drop (call $restore (i32.const 64) (i32.const 4)))))
                 (block $done
                   (loop $step
                     (br_if $done (i32.ge_u (i32.load (i32.const 64)) (i32.const 1000)))
                     (i32.store (i32.const 64) (i32.add (i32.load (i32.const 64)) (i32.const 1)))
                     (call $checkpoint (i32.const 64) (i32.const 4))
                     (call $progress (f64.div (f64.convert_i32_u (i32.load (i32.const 64))) (f64.const 1000)))
                     (br $step)))
                 (call $write (i32.const 1) (i32.const 64) (i32.const 4)))"#,
    )
}

/// Hooks that keep every checkpoint and the last progress, and resume
/// from a given checkpoint.
#[derive(Default)]
struct Recorder {
    resume: Mutex<Option<Checkpoint>>,
    kept: Mutex<Vec<Checkpoint>>,
    progress: Mutex<f64>,
    stop_after_ticks: Option<u32>,
    ticks: AtomicU64,
}

impl TaskHooks for Recorder {
    fn resume_from(&self) -> Option<Checkpoint> {
        self.resume.lock().unwrap().take()
    }
    fn wants_checkpoint(&self) -> bool {
        true
    }
    fn checkpoint(&self, checkpoint: Checkpoint) {
        self.kept.lock().unwrap().push(checkpoint);
    }
    fn progress(&self, fraction: f64) {
        *self.progress.lock().unwrap() = fraction;
    }
    fn pace(&self) -> Pace {
        let ticks = self.ticks.fetch_add(1, Ordering::Relaxed);
        match self.stop_after_ticks {
            Some(n) if ticks >= n as u64 => Pace::Stop("test".into()),
            _ => Pace::Continue,
        }
    }
}

fn run_hooked(wat: &str, hooks: Arc<Recorder>) -> RunReport {
    run_hooked_with(wat, hooks, &limits())
}

fn run_hooked_with(wat: &str, hooks: Arc<Recorder>, limits: &TaskLimits) -> RunReport {
    let bytes = wasm(wat);
    sandbox().run_with_hooks(
        &task(&Hash::of(&bytes), &bytes, b"", &[], 7, limits, false),
        hooks,
    )
}

#[test]
fn guest_sdk_checkpoints_resume_to_the_same_output_and_fuel() {
    let fresh = Arc::new(Recorder::default());
    let whole = run_hooked(&counter(), fresh.clone());
    assert_eq!(stdout(&whole), 1000u32.to_le_bytes());
    assert!(!whole.resumed);
    assert_eq!(*fresh.progress.lock().unwrap(), 1.0);
    let kept = fresh.kept.lock().unwrap().clone();
    assert_eq!(kept.len(), 1000);
    let middle = kept[499].clone();
    assert_eq!(middle.state, 500u32.to_le_bytes());
    assert!(middle.fuel_used > 0 && middle.fuel_used < whole.fuel_used);

    let resumed = Arc::new(Recorder {
        resume: Mutex::new(Some(middle)),
        ..Recorder::default()
    });
    let rest = run_hooked(&counter(), resumed.clone());
    assert_eq!(stdout(&rest), stdout(&whole), "resumed output differs");
    assert!(rest.resumed);
    assert_eq!(resumed.kept.lock().unwrap().len(), 500);
    // Fuel of the checkpoint plus fuel after `restore`: close to the
    // uninterrupted count (the start-up before `restore` is not
    // counted twice), though not replica-exact.
    let diff = rest.fuel_used.abs_diff(whole.fuel_used);
    assert!(
        diff * 100 < whole.fuel_used,
        "{} vs {}",
        rest.fuel_used,
        whole.fuel_used
    );
}

#[test]
fn a_module_without_the_sdk_runs_with_hooks_and_can_be_stopped() {
    let hooks = Arc::new(Recorder::default());
    let report = run_hooked(&echo(), hooks.clone());
    assert!(matches!(report.outcome, RunOutcome::Success(_)));
    assert!(hooks.kept.lock().unwrap().is_empty());

    let stopper = Arc::new(Recorder {
        stop_after_ticks: Some(3),
        ..Recorder::default()
    });
    let forever = module(r#"(func (export "_start") (loop $l (br $l)))"#);
    let endless = TaskLimits {
        fuel: u64::MAX / 2,
        ..limits()
    };
    let report = run_hooked_with(&forever, stopper, &endless);
    assert!(
        error(&report).contains("stopped by the worker"),
        "{}",
        error(&report)
    );
}

#[test]
fn sdk_calls_pointing_outside_memory_trap_cleanly() {
    let bad = module_with(
        r#"(import "peergrid" "checkpoint" (func $checkpoint (param i32 i32)))"#,
        r#"(func (export "_start") (call $checkpoint (i32.const -16) (i32.const 1024)))"#,
    );
    let report = run_hooked(&bad, Arc::new(Recorder::default()));
    assert!(
        error(&report).contains("outside memory"),
        "{}",
        error(&report)
    );
    let huge = module_with(
        r#"(import "peergrid" "checkpoint" (func $checkpoint (param i32 i32)))"#,
        r#"(func (export "_start") (call $checkpoint (i32.const 0) (i32.const -1)))"#,
    );
    let report = run_hooked(&huge, Arc::new(Recorder::default()));
    assert!(
        error(&report).contains("exceeds the limit"),
        "{}",
        error(&report)
    );
}

#[test]
fn echo_copies_stdin_to_stdout() {
    let input: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let report = run(&echo(), &input);
    assert_eq!(stdout(&report), input.as_slice());
    assert!(report.fuel_used > 0);
    assert!(report.stderr.is_empty());
}

#[test]
fn runs_are_repeatable_to_the_fuel_unit() {
    let first = run(&echo(), b"same input");
    let second = run(&echo(), b"same input");
    assert_eq!(stdout(&first), b"same input");
    assert_eq!(first.outcome, second.outcome);
    assert_eq!(first.fuel_used, second.fuel_used);
}

#[test]
fn exit_zero_is_success_and_nonzero_is_an_error() {
    let exit = |status: u32| {
        module(&format!(
            r#"(func (export "_start") (call $proc_exit (i32.const {status})))"#
        ))
    };
    assert_eq!(stdout(&run(&exit(0), b"")), b"");
    assert_eq!(error(&run(&exit(7), b"")), "module exited with status 7");
}

#[test]
fn args_follow_the_program_name() {
    let argc = module_with(
        r#"(import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))"#,
        r#"(func (export "_start")
                 (drop (call $sizes (i32.const 100) (i32.const 104)))
                 (call $proc_exit (i32.load (i32.const 100))))"#,
    );
    let args = vec!["a".to_string(), "b".to_string()];
    assert_eq!(
        error(&run_with(&argc, b"", &args, 7, &limits())),
        "module exited with status 3"
    );
}

const SPIN: &str = r#"(module (func (export "_start") (loop $forever (br $forever))))"#;

#[test]
fn fuel_limit_stops_an_infinite_loop() {
    let limits = TaskLimits {
        fuel: 100_000,
        ..limits()
    };
    let report = run_with(SPIN, b"", &[], 7, &limits);
    assert_eq!(error(&report), "fuel limit of 100000 exhausted");
    assert_eq!(report.fuel_used, 100_000);
}

#[test]
fn wall_clock_limit_stops_an_infinite_loop() {
    let limits = TaskLimits {
        fuel: 1 << 60,
        wall_ms: 200,
        ..limits()
    };
    let started = Instant::now();
    let report = run_with(SPIN, b"", &[], 7, &limits);
    assert_eq!(error(&report), "wall-clock limit of 200 ms exceeded");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(report.elapsed >= Duration::from_millis(200));
}

/// A `fixed` job's sandbox counts no fuel, so its fuel cap means nothing
/// and the wall clock alone stops a runaway; each sandbox refuses tasks
/// metered the other way rather than run them unbounded or miscounted.
#[test]
fn the_fixed_sandbox_counts_no_fuel_and_stops_a_runaway_by_the_clock() {
    use peergrid_proto::spec::Metering;
    let fixed = Sandbox::fixed(None).expect("sandbox builds");
    let bytes = wasm(SPIN);
    let hash = Hash::of(&bytes);
    let limits = TaskLimits {
        fuel: 1,
        wall_ms: 200,
        metering: Metering::Fixed,
        ..limits()
    };
    let started = Instant::now();
    let report = fixed.run(&task(&hash, &bytes, b"", &[], 7, &limits, false));
    assert_eq!(error(&report), "wall-clock limit of 200 ms exceeded");
    assert_eq!(report.fuel_used, 0);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        fixed
            .engine_id(NanMode::Fast)
            .contains("/fixed/epoch-10ms/")
    );

    let echo = wasm(&echo());
    let done = fixed.run(&task(
        &Hash::of(&echo),
        &echo,
        b"hi",
        &[],
        7,
        &limits,
        false,
    ));
    assert_eq!(stdout(&done), b"hi");
    assert_eq!(done.fuel_used, 0);

    let fueled = TaskLimits {
        metering: Metering::Fuel,
        ..limits
    };
    let refused = fixed.run(&task(&hash, &bytes, b"", &[], 7, &fueled, false));
    assert!(
        error(&refused).contains("Fuel-metered task cannot run"),
        "{}",
        error(&refused)
    );
    let refused = sandbox().run(&task(&hash, &bytes, b"", &[], 7, &limits, false));
    assert!(
        error(&refused).contains("Fixed-metered task cannot run"),
        "{}",
        error(&refused)
    );
}

/// A modest fuel budget, and a wall-clock limit far beyond the time
/// that budget takes when fuel bounds CPU time: only fuel should stop
/// these loops.
fn modest_fuel() -> TaskLimits {
    TaskLimits {
        fuel: 2_000_000_000,
        wall_ms: 30_000,
        ..limits()
    }
}

/// A loop whose body is `body`, forever.
fn forever(imports: &str, body: &str) -> String {
    module_with(
        imports,
        &format!(r#"(func (export "_start") (loop $again {body} (br $again)))"#),
    )
}

const CLOCK: &str = r#"(import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))"#;
const RANDOM: &str = r#"(import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))"#;

#[test]
fn a_loop_of_failing_memory_grow_runs_out_of_fuel() {
    // 1024 pages is past the 16 MiB cap; 65536 more is past what a
    // 32-bit memory can address at all.
    for pages in [1024, 65536] {
        let grow = forever("", &format!("(drop (memory.grow (i32.const {pages})))"));
        let first = run_with(&grow, b"", &[], 7, &modest_fuel());
        assert_eq!(error(&first), "fuel limit of 2000000000 exhausted");
        let second = run_with(&grow, b"", &[], 7, &modest_fuel());
        assert_eq!(
            first,
            RunReport {
                elapsed: first.elapsed,
                ..second
            }
        );
    }
}

#[test]
fn a_loop_of_cheap_wasi_calls_runs_out_of_fuel() {
    for (import, call) in [
        (
            CLOCK,
            "(drop (call $now (i32.const 1) (i64.const 1) (i32.const 104)))",
        ),
        (
            RANDOM,
            "(drop (call $random_get (i32.const 100) (i32.const 8)))",
        ),
    ] {
        let calls = forever(import, call);
        let first = run_with(&calls, b"", &[], 7, &modest_fuel());
        assert_eq!(error(&first), "fuel limit of 2000000000 exhausted");
        let second = run_with(&calls, b"", &[], 7, &modest_fuel());
        assert_eq!(
            first,
            RunReport {
                elapsed: first.elapsed,
                ..second
            }
        );
    }
}

/// Host calls and growth attempts are charged, the same on every run
/// and in both NaN modes, so a successful run's fuel still agrees
/// between replicas.
#[test]
fn host_calls_and_growth_are_charged_deterministically() {
    let thousand = |body: &str| {
        module_with(
            &format!("{CLOCK} {RANDOM}"),
            &format!(
                r#"(func (export "_start") (local $i i32)
                         (loop $again {body}
                           (local.set $i (i32.add (local.get $i) (i32.const 1)))
                           (br_if $again (i32.lt_u (local.get $i) (i32.const 1000)))))"#
            ),
        )
    };
    let plain = thousand("(nop)");
    let fuel = |wat: &str, canonical_nan: bool| {
        let bytes = wasm(wat);
        let report = sandbox().run(&task(
            &Hash::of(&bytes),
            &bytes,
            b"",
            &[],
            7,
            &limits(),
            canonical_nan,
        ));
        assert!(
            matches!(report.outcome, RunOutcome::Success(_)),
            "{report:?}"
        );
        report.fuel_used
    };
    let baseline = fuel(&plain, false);
    for body in [
        "(drop (memory.grow (i32.const 1024)))",
        "(drop (call $now (i32.const 1) (i64.const 1) (i32.const 104)))",
        "(drop (call $random_get (i32.const 100) (i32.const 8)))",
    ] {
        let wat = thousand(body);
        let used = fuel(&wat, false);
        let least = 1000 * GROW_ATTEMPT_FUEL.min(HOST_CALL_FUEL);
        assert!(
            used - baseline >= least,
            "{body}: {} more than the plain loop",
            used - baseline
        );
        assert_eq!(used, fuel(&wat, false), "{body}: a second run");
        assert_eq!(used, fuel(&wat, true), "{body}: canonical NaN mode");
    }
}

#[test]
fn deep_recursion_is_a_stack_overflow() {
    let recurse = r#"(module (func $f (export "_start") (call $f)))"#;
    assert_eq!(error(&run(recurse, b"")), "stack overflow");
}

#[test]
fn memory_cannot_grow_past_the_limit() {
    // 2 pages initially; the limit is 16 MiB = 256 pages.
    let grow = module(
        r#"(func (export "_start")
                 (if (i32.eq (memory.grow (i32.const 300)) (i32.const -1))
                   (then (call $proc_exit (i32.const 3))))
                 (call $proc_exit (i32.const 4)))"#,
    );
    assert_eq!(error(&run(&grow, b"")), "module exited with status 3");
    // Growth within the limit still works.
    let small = grow.replace("300", "10");
    assert_eq!(error(&run(&small, b"")), "module exited with status 4");
}

#[test]
fn a_module_declaring_too_much_memory_is_refused() {
    let limits = TaskLimits {
        memory_bytes: 64 * 1024,
        ..limits()
    };
    let report = run_with(&echo(), b"", &[], 7, &limits);
    assert!(
        error(&report).starts_with("module cannot be instantiated"),
        "{report:?}"
    );
}

fn write_n(fd: u32, n: u32) -> String {
    module(&format!(
        r#"(func (export "_start") (call $write (i32.const {fd}) (i32.const 64) (i32.const {n})))"#
    ))
}

#[test]
fn output_over_the_cap_is_an_error() {
    let limits = TaskLimits {
        max_output_bytes: 100,
        ..limits()
    };
    assert_eq!(
        stdout(&run_with(&write_n(1, 100), b"", &[], 7, &limits)).len(),
        100
    );
    let report = run_with(&write_n(1, 101), b"", &[], 7, &limits);
    assert_eq!(error(&report), "output exceeds 100 bytes");
}

#[test]
fn stderr_over_the_cap_is_truncated_not_an_error() {
    let report = run(&write_n(2, (MAX_STDERR + 1000) as u32), b"");
    assert_eq!(stdout(&report), b"");
    assert_eq!(report.stderr.len(), MAX_STDERR);
}

#[test]
fn stderr_over_the_cap_keeps_its_end() {
    // 100 writes of 1000 zeros, then 3000 one-byte writes, then the last
    // words: the last MAX_STDERR bytes are kept, the last words included.
    let report = run(
        &module(
            r#"(data (i32.const 2000) "last words")
               (func (export "_start") (local $i i32)
                 (loop $big
                   (call $write (i32.const 2) (i32.const 64) (i32.const 1000))
                   (local.set $i (i32.add (local.get $i) (i32.const 1)))
                   (br_if $big (i32.lt_u (local.get $i) (i32.const 100))))
                 (local.set $i (i32.const 0))
                 (loop $small
                   (call $write (i32.const 2) (i32.const 64) (i32.const 1))
                   (local.set $i (i32.add (local.get $i) (i32.const 1)))
                   (br_if $small (i32.lt_u (local.get $i) (i32.const 3000))))
                 (call $write (i32.const 2) (i32.const 2000) (i32.const 10)))"#,
        ),
        b"",
    );
    assert_eq!(stdout(&report), b"");
    assert_eq!(report.stderr.len(), MAX_STDERR);
    assert!(report.stderr.ends_with(b"last words"));
}

#[test]
fn bytes_that_are_not_wasm_are_an_error() {
    let bytes = b"definitely not wasm";
    let report = sandbox().run(&task(
        &Hash::of(bytes),
        bytes,
        b"",
        &[],
        7,
        &limits(),
        false,
    ));
    assert!(
        error(&report).starts_with("module is not valid WebAssembly"),
        "{report:?}"
    );
    assert_eq!(report.fuel_used, 0);
    assert!(matches!(
        sandbox().check_module(bytes),
        Err(SandboxError::Compile(_))
    ));
}

#[test]
fn unknown_imports_are_named() {
    let nope = r#"(module (import "env" "nope" (func)) (func (export "_start")))"#;
    let message = error(&run(nope, b"")).to_string();
    assert!(
        message.contains("env") && message.contains("nope"),
        "{message}"
    );
    assert!(matches!(
        sandbox().check_module(&wasm(nope)),
        Err(SandboxError::Link(_))
    ));
}

#[test]
fn a_module_without_start_is_refused() {
    let library = r#"(module (func (export "main")))"#;
    assert!(matches!(
        sandbox().check_module(&wasm(library)),
        Err(SandboxError::NoStart)
    ));
    assert!(sandbox().check_module(&wasm(&echo())).is_ok());
}

#[test]
fn bytes_must_match_the_hash_and_are_not_read_on_a_hit() {
    let bytes = wasm(&write_n(1, 3));
    let wrong = Hash::of(b"something else");
    assert!(
        error(&sandbox().run(&task(&wrong, &bytes, b"", &[], 7, &limits(), false)))
            .contains("corrupt")
    );
    let hash = Hash::of(&bytes);
    assert!(matches!(
        sandbox()
            .run(&task(&hash, &bytes, b"", &[], 7, &limits(), false))
            .outcome,
        RunOutcome::Success(_)
    ));
    let hit = sandbox().run(&task(&hash, b"", b"", &[], 7, &limits(), false));
    assert_eq!(stdout(&hit).len(), 3);
}

#[test]
fn randomness_follows_the_seed() {
    let random = module_with(
        r#"(import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))"#,
        r#"(func (export "_start")
                 (if (call $random_get (i32.const 100) (i32.const 16)) (then unreachable))
                 (if (call $random_get (i32.const 116) (i32.const 16)) (then unreachable))
                 (call $write (i32.const 1) (i32.const 100) (i32.const 32)))"#,
    );
    let draw = |seed| stdout(&run_with(&random, b"", &[], seed, &limits())).to_vec();
    let first = draw(1);
    assert_eq!(first.len(), 32);
    assert_ne!(first[..16], first[16..], "two calls give different bytes");
    assert_eq!(first, draw(1));
    assert_ne!(first, draw(2));
}

#[test]
fn clocks_are_virtual_and_repeatable() {
    let clocks = module_with(
        r#"(import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))"#,
        r#"(func (export "_start")
                 (if (call $now (i32.const 0) (i64.const 1) (i32.const 104)) (then unreachable))
                 (if (call $now (i32.const 0) (i64.const 1) (i32.const 112)) (then unreachable))
                 (if (call $now (i32.const 1) (i64.const 1) (i32.const 120)) (then unreachable))
                 (if (call $now (i32.const 1) (i64.const 1) (i32.const 128)) (then unreachable))
                 (call $write (i32.const 1) (i32.const 104) (i32.const 32)))"#,
    );
    let first = stdout(&run(&clocks, b"")).to_vec();
    let word = |i: usize| {
        let mut le = [0; 8];
        le.copy_from_slice(&first[i * 8..i * 8 + 8]);
        u64::from_le_bytes(le)
    };
    assert_eq!(word(0), VIRTUAL_EPOCH_SECS * 1_000_000_000);
    assert_eq!(word(1), word(0) + CLOCK_STEP_NANOS);
    assert_eq!(word(3), word(2) + CLOCK_STEP_NANOS);
    assert_eq!(first, stdout(&run(&clocks, b"")));
}

#[test]
fn sleeping_is_refused_instead_of_blocking() {
    let sleep = module_with(
        r#"(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))"#,
        r#"(func (export "_start")
                 (call $proc_exit (call $poll (i32.const 100) (i32.const 200) (i32.const 1) (i32.const 300))))"#,
    );
    assert_eq!(error(&run(&sleep, b"")), "module exited with status 58");
}

#[test]
fn engine_id_names_the_configuration() {
    let fast = sandbox().engine_id(NanMode::from_canonical(false));
    let canonical = sandbox().engine_id(NanMode::from_canonical(true));
    assert!(fast.starts_with("wasmtime-48/"));
    assert!(fast.contains("/nocanon/"));
    assert!(fast.ends_with(std::env::consts::ARCH));
    assert!(canonical.starts_with("wasmtime-48/"));
    assert!(canonical.contains("/nancanon/"));
    assert!(!canonical.ends_with(std::env::consts::ARCH));
    assert_eq!(canonical, CANONICAL_ENGINE_ID);
}

#[test]
fn dropping_a_sandbox_stops_its_ticker() {
    let sandbox = Sandbox::new(None).expect("sandbox builds");
    drop(sandbox);
}

/// The determinism probe (`examples/probe`) built for wasm32-wasip1.
fn probe_wasm() -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let path = target.join("wasm32-wasip1/release/probe.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; build it with `rustup target add wasm32-wasip1` and \
                 `cargo build --release -p peergrid-example-probe --target wasm32-wasip1`",
            path.display()
        )
    })
}

fn probe_limits() -> TaskLimits {
    TaskLimits {
        memory_bytes: 64 << 20,
        fuel: 1_000_000_000,
        max_output_bytes: 1 << 20,
        wall_ms: 60_000,
        metering: peergrid_proto::spec::Metering::Fuel,
    }
}

/// The probe's stdout and fuel on `sandbox` with a fixed tag and
/// arguments.
fn run_probe(sandbox: &Sandbox, wasm: &[u8], seed: u64, canonical_nan: bool) -> (Vec<u8>, u64) {
    let args = vec!["--flag".to_string(), "two words".to_string()];
    let report = sandbox.run(&task(
        &Hash::of(wasm),
        wasm,
        b"tag-1\n",
        &args,
        seed,
        &probe_limits(),
        canonical_nan,
    ));
    (stdout(&report).to_vec(), report.fuel_used)
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).expect("the probe prints JSON")
}

/// An engine's folder of compiled modules (the tests' sandboxes have one).
fn disk(engine: &TaskEngine) -> &CompiledDir {
    engine.compiled.as_ref().expect("a disk cache")
}

fn compiles(sandbox: &Sandbox) -> u64 {
    sandbox.compiles.load(Ordering::Relaxed)
}

#[test]
fn probe_output_is_identical_across_runs_caches_and_processes() {
    let wasm = probe_wasm();
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut fuel_by_mode = Vec::new();
    for canonical_nan in [false, true] {
        let fresh = Sandbox::new(Some(dir.path())).expect("sandbox builds");
        let (first, fuel) = run_probe(&fresh, &wasm, 7, canonical_nan);
        assert_eq!(compiles(&fresh), 1, "a fresh sandbox compiles");
        let again = run_probe(&fresh, &wasm, 7, canonical_nan);
        assert_eq!(compiles(&fresh), 1, "the second run is a memory hit");
        drop(fresh);
        let restarted = Sandbox::new(Some(dir.path())).expect("sandbox builds");
        let from_disk = run_probe(&restarted, &wasm, 7, canonical_nan);
        assert_eq!(
            compiles(&restarted),
            0,
            "a restarted sandbox loads from disk"
        );
        let memory_only = run_probe(
            &Sandbox::new(None).expect("sandbox builds"),
            &wasm,
            7,
            canonical_nan,
        );
        let shared = run_probe(sandbox(), &wasm, 7, canonical_nan);
        for (name, other) in [
            ("memory hit", again),
            ("disk hit", from_disk),
            ("no disk cache", memory_only),
            ("shared sandbox", shared),
        ] {
            assert_eq!(
                (&first, fuel),
                (&other.0, other.1),
                "canonical_nan {canonical_nan}: {name} differs:\n{}\n{}",
                String::from_utf8_lossy(&first),
                String::from_utf8_lossy(&other.0)
            );
        }
        let report = json(&first);
        assert_eq!(report["tag"], "tag-1");
        assert_eq!(
            report["args"],
            serde_json::json!(["task", "--flag", "two words"])
        );
        assert_eq!(report["instant_delta_ns"], CLOCK_STEP_NANOS);
        let wall = report["system_time_ns"].as_u64().expect("a number");
        let epoch = VIRTUAL_EPOCH_SECS * 1_000_000_000;
        assert!((epoch..epoch + 1_000_000).contains(&wall), "{wall}");
        fuel_by_mode.push(fuel);
    }
    assert_eq!(
        fuel_by_mode[0], fuel_by_mode[1],
        "fuel is counted per wasm instruction, whatever the NaN mode"
    );
}

#[test]
fn probe_follows_the_seed() {
    let wasm = probe_wasm();
    for canonical_nan in [false, true] {
        let (one, _) = run_probe(sandbox(), &wasm, 1, canonical_nan);
        let (one_again, _) = run_probe(sandbox(), &wasm, 1, canonical_nan);
        let (two, _) = run_probe(sandbox(), &wasm, 2, canonical_nan);
        assert_eq!(one, one_again);
        let (one, two) = (json(&one), json(&two));
        assert_ne!(one["random_bytes"], two["random_bytes"]);
        assert_ne!(one["hashmap_order"], two["hashmap_order"]);
        assert!(
            one["random_bytes"]
                .as_str()
                .is_some_and(|hex| hex.len() == 32 && !hex.starts_with("error")),
            "{}",
            one["random_bytes"]
        );
    }
}

#[test]
fn canonical_mode_canonicalizes_every_nan() {
    let wasm = probe_wasm();
    let fast = json(&run_probe(sandbox(), &wasm, 7, false).0);
    let canonical = json(&run_probe(sandbox(), &wasm, 7, true).0);
    println!(
        "fast NaN mode on {}: f64 {}, f32 {}",
        std::env::consts::ARCH,
        fast["f64_nan"],
        fast["f32_nan"]
    );
    for (field, expected) in [("f64_nan", "0x7ff8000000000000"), ("f32_nan", "0x7fc00000")] {
        let nans = canonical[field].as_object().expect("an object");
        assert!(nans.len() >= 8, "{field}: {nans:?}");
        for (name, bits) in nans {
            assert_eq!(bits, expected, "{field}.{name} in canonical mode");
        }
    }
    // Everything but the NaNs is the same in both modes.
    for field in [
        "f64_not_nan",
        "hashmap_order",
        "random_bytes",
        "system_time_ns",
    ] {
        assert_eq!(fast[field], canonical[field], "{field}");
    }
}

#[test]
fn damaged_or_foreign_compiled_files_are_recompiled_and_rewritten() {
    let bytes = wasm(&write_n(1, 5));
    let hash = Hash::of(&bytes);
    let dir = tempfile::tempdir().expect("temporary folder");
    let run_fresh = |canonical_nan: bool| {
        let sandbox = Sandbox::new(Some(dir.path())).expect("sandbox builds");
        let report = sandbox.run(&task(&hash, &bytes, b"", &[], 7, &limits(), canonical_nan));
        assert_eq!(stdout(&report).len(), 5);
        compiles(&sandbox)
    };
    assert_eq!(run_fresh(false), 1);
    assert_eq!(run_fresh(false), 0);

    let sandbox = Sandbox::new(Some(dir.path())).expect("sandbox builds");
    let fast_path = disk(&sandbox.fast).path(&hash);
    let canonical_path = disk(&sandbox.canonical).path(&hash);
    assert_ne!(fast_path.parent(), canonical_path.parent());
    let folder = fast_path
        .parent()
        .and_then(Path::file_name)
        .expect("a folder");
    assert_eq!(folder.len(), 16);

    // A flipped bit in the code fails the checksum.
    let mut file = std::fs::read(&fast_path).expect("the compiled file exists");
    let middle = file.len() / 2;
    file[middle] ^= 1;
    std::fs::write(&fast_path, &file).expect("overwrite");
    assert_eq!(run_fresh(false), 1, "a corrupt file is a miss");
    assert_eq!(run_fresh(false), 0, "and was rewritten");

    // A torn file, and one that is not ours at all.
    for junk in [&file[..10], b"" as &[u8], b"pgcwasm1 but nothing else"] {
        std::fs::write(&fast_path, junk).expect("overwrite");
        assert_eq!(run_fresh(false), 1, "a junk file is a miss");
    }

    // The fast engine's file copied into the canonical engine's folder:
    // the checksum names the engine id, so it is a miss.
    assert_eq!(run_fresh(false), 0);
    std::fs::create_dir_all(canonical_path.parent().expect("a folder")).expect("mkdir");
    std::fs::copy(&fast_path, &canonical_path).expect("copy");
    assert_eq!(run_fresh(true), 1, "another engine's file is a miss");
    assert_eq!(run_fresh(true), 0, "and was rewritten");

    // A valid file does not verify under another module's name.
    let valid = std::fs::read(&canonical_path).expect("reads");
    assert!(
        disk(&sandbox.canonical)
            .deserialize_verified(&Hash::of(b"other"), &valid)
            .is_err()
    );
}

/// Code from an engine without fuel, under the fuel engine's name with a
/// forged checksum: wasmtime's own compatibility check still refuses it.
#[test]
fn wasmtime_refuses_code_compiled_for_another_configuration() {
    let bytes = wasm(&write_n(1, 5));
    let hash = Hash::of(&bytes);
    let dir = tempfile::tempdir().expect("temporary folder");
    let fueled = Sandbox::new(Some(dir.path())).expect("sandbox builds");
    let unfueled = Sandbox::fixed(Some(dir.path())).expect("sandbox builds");
    assert_ne!(
        fueled.engine_id(NanMode::from_canonical(false)),
        unfueled.engine_id(NanMode::from_canonical(false))
    );
    let serialized = unfueled
        .fast
        .compile(&bytes)
        .and_then(|m| {
            m.serialize()
                .map_err(|e| SandboxError::Compile(e.to_string()))
        })
        .expect("compiles");
    let path = disk(&fueled.fast).path(&hash);
    let dir = &disk(&fueled.fast).dir;
    write_compiled_file(dir, &path, &fueled.fast.id, &hash, &serialized).expect("writes");
    let forged = std::fs::read(&path).expect("reads");
    let refusal = disk(&fueled.fast)
        .deserialize_verified(&hash, &forged)
        .expect_err("wasmtime checks the engine configuration");
    assert!(refusal.contains("fuel"), "{refusal}");
    let report = fueled.run(&task(&hash, &bytes, b"", &[], 7, &limits(), false));
    assert_eq!(stdout(&report).len(), 5);
    assert_eq!(compiles(&fueled), 1, "the refused file is a miss");
}

/// Why compiled files are bound to the engine id: wasmtime's own check
/// treats NaN canonicalization as not affecting a module (true for
/// safety, not for determinism) and accepts fast-mode code in the
/// canonical engine. If this starts failing, wasmtime checks it itself
/// now and the comment in `deserialize_verified` can say so.
#[test]
fn wasmtime_alone_does_not_tell_nan_modes_apart() {
    let bytes = wasm(&write_n(1, 5));
    let fast_code = sandbox()
        .fast
        .compile(&bytes)
        .and_then(|m| {
            m.serialize()
                .map_err(|e| SandboxError::Compile(e.to_string()))
        })
        .expect("compiles");
    // A well-formed file of wasmtime's own code; only the NaN mode is
    // wrong.
    let hash = Hash::of(&bytes);
    let mut file = COMPILED_MAGIC.to_vec();
    file.extend_from_slice(compiled_checksum(CANONICAL_ENGINE_ID, &hash, &fast_code).as_bytes());
    file.extend_from_slice(&fast_code);
    // Only the checksum and wasmtime's check run: no folder is touched.
    let canonical = &sandbox().canonical;
    let folder = CompiledDir::new(Path::new("unused"), &canonical.engine, &canonical.id);
    assert!(
        folder.deserialize_verified(&hash, &file).is_ok(),
        "wasmtime now refuses fast-mode code in the canonical engine"
    );
}
