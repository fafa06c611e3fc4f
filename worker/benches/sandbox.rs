//! What the sandbox costs, measured against the same Rust code run natively.
//!
//! For each kernel (n-body: floats; Lyapunov: floats with bit tricks; sieve:
//! integers and memory; SETI: FFTs and a de-doppler search, the demo's job;
//! Collatz: the C example, integers) it prints native time, wasm time on the
//! production engine (fuel, epoch deadline and memory cap all on) in fast
//! and in canonical NaN mode, and their ratios to native, then the geometric
//! means; the cost of fuel (the same runs on a bench-only engine with the
//! epoch alone: the in-process engine of `fixed` jobs) and of metering at
//! all (an engine with neither: a task runner's `fixed` mode), and a task
//! runner's `fuel` mode (fuel alone); the same kernels in Node's V8 (with
//! Node's WASI, `benches/v8-kernel.mjs`) where `node` is installed, to
//! place peergrid among engines; the per-task start time of a cached module; and what the disk cache saves
//! a restarted worker. Every wasm output is checked against the native one,
//! so a kernel that silently did less work cannot look fast.
//!
//! It measures and prints; it asserts nothing about time. Figures and the
//! command that produced them live in `docs/sandbox-performance.md`:
//!
//! ```text
//! cargo build --release --target wasm32-wasip1 -p peergrid-example-probe
//! cargo build --release --target wasm32-wasip1 -p peergrid-example-lyapunov --bin lyapunov
//! cargo build --release --target wasm32-wasip1 -p peergrid-example-seti --bin seti
//! make -C examples/collatz-c wasm native
//! cargo bench -p peergrid-worker --bench sandbox
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use peergrid_proto::Hash;
use peergrid_proto::wire::TaskLimits;
use peergrid_worker::sandbox::{NanMode, RunOutcome, RunReport, Sandbox, SandboxTask};

/// Timed repetitions of every kernel measurement; the median is reported.
const REPETITIONS: usize = 5;
/// Runs of the trivial module whose mean is the per-task start time.
const START_RUNS: u32 = 2000;
/// Runs of the probe (a real Rust program that does almost nothing).
const PROBE_RUNS: u32 = 200;

/// A task of `module` (hashing to `hash`) with no arguments and [`LIMITS`],
/// in the NaN mode `canonical_nan` picks.
fn task<'a>(
    hash: &'a Hash,
    module: &'a [u8],
    input: &'a [u8],
    seed: u64,
    canonical_nan: bool,
) -> SandboxTask<'a> {
    SandboxTask {
        module: hash,
        module_bytes: module,
        input,
        args: &[],
        seed,
        limits: &LIMITS,
        nan: NanMode::from_canonical(canonical_nan),
    }
}

const LIMITS: TaskLimits = TaskLimits {
    memory_bytes: 256 << 20,
    fuel: 1 << 50,
    max_output_bytes: 1 << 20,
    wall_ms: 600_000,
    metering: peergrid_proto::spec::Metering::Fuel,
};

/// [`LIMITS`] for the sandboxes that count no fuel (a sandbox refuses a
/// task metered otherwise than it meters).
const FIXED_LIMITS: TaskLimits = TaskLimits {
    metering: peergrid_proto::spec::Metering::Fixed,
    ..LIMITS
};

/// One benchmark kernel: the same Rust function as a wasm module and natively.
struct Kernel {
    name: &'static str,
    /// File name under `target/wasm32-wasip1/release/`, or a path from the
    /// workspace root.
    wasm_file: &'static str,
    input: fn() -> Vec<u8>,
    native: fn(&[u8]) -> Result<Vec<u8>, String>,
}

/// One unit of a one-channel, one-segment SETI observation (2 MiB).
fn seti_unit() -> Vec<u8> {
    let plan = peergrid_example_seti::synth::Plan {
        channels: 1,
        segments: 1,
        signals: 2,
        ..peergrid_example_seti::synth::Plan::demo(1)
    };
    peergrid_example_seti::synth::generate(&plan)
        .map(|(_, units)| {
            units
                .into_iter()
                .next()
                .map(|(_, bytes)| bytes)
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// The C example's native build, run as a process.
fn collatz_native(input: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let binary = target_dir().join("../examples/collatz-c/build/collatz");
    let mut child = std::process::Command::new(&binary)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "{}: {e}; run `make -C examples/collatz-c native`",
                binary.display()
            )
        })?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(input)
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    Ok(out.stdout)
}

const KERNELS: [Kernel; 5] = [
    Kernel {
        name: "n-body (f64)",
        wasm_file: "nbody.wasm",
        input: || b"5000000".to_vec(),
        native: peergrid_example_probe::nbody::run,
    },
    Kernel {
        name: "lyapunov (f64)",
        wasm_file: "lyapunov.wasm",
        input: || {
            br#"{"r_start":2.8,"r_end":4.0,"steps":400,"iterations":100000,"transient":1000}"#
                .to_vec()
        },
        native: peergrid_example_lyapunov::run,
    },
    Kernel {
        name: "sieve (int)",
        wasm_file: "sieve.wasm",
        input: || b"10000000 8".to_vec(),
        native: peergrid_example_probe::sieve::run,
    },
    Kernel {
        name: "seti (fft, f32)",
        wasm_file: "seti.wasm",
        input: seti_unit,
        native: peergrid_example_seti::run,
    },
    Kernel {
        name: "collatz (C, int)",
        wasm_file: "../../../examples/collatz-c/build/collatz.wasm",
        input: || b"1 3000000".to_vec(),
        native: collatz_native,
    },
];

/// Times of one kernel, medians in seconds.
struct Timing {
    native: f64,
    fast: f64,
    canonical: f64,
    epoch_only: f64,
    unmetered: f64,
    /// A task runner's `fuel` mode: fuel, no epoch checks.
    fuel_only: f64,
    /// Node's V8 with Node's WASI (`v8-kernel.mjs`); `None` without `node`
    /// or when node failed on it (said on stderr).
    v8: Option<f64>,
}

/// The kernel's median time in Node's V8, its output checked against
/// `expected`; `None` (said once on stderr) when `node` is not installed.
fn v8_time(wasm: &Path, input: &[u8], expected: &[u8]) -> Result<Option<f64>> {
    let dir = tempfile::tempdir()?;
    let (input_file, output_file) = (dir.path().join("input"), dir.path().join("output"));
    std::fs::write(&input_file, input)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/v8-kernel.mjs");
    let ran = std::process::Command::new("node")
        .args(["--expose-gc", "--no-warnings"])
        .arg(&script)
        .args([wasm, &input_file, &output_file])
        .arg(REPETITIONS.to_string())
        .output();
    let out = match ran {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                eprintln!("no `node` on PATH: the V8 column is empty (install Node 20)")
            });
            return Ok(None);
        }
        ran => ran.context("running node")?,
    };
    if !out.status.success() {
        // Said and left out of the column, not fatal: V8 is a comparison.
        eprintln!(
            "node failed on {} ({}): {}",
            wasm.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(None);
    }
    ensure!(
        std::fs::read(&output_file)? == expected,
        "{} printed something else in V8",
        wasm.display()
    );
    let seconds = String::from_utf8_lossy(&out.stdout).trim().parse::<f64>()?;
    Ok(Some(seconds))
}

fn main() -> Result<()> {
    let sandbox = Sandbox::new(None).context("building the production sandbox")?;
    let epoch_only = Sandbox::fixed(None).context("building the fixed-metering sandbox")?;
    let unmetered =
        Sandbox::new_unmetered_for_benchmarks(None).context("building the bench-only sandbox")?;
    // A task runner's engines: its `fixed` mode generates the same code as
    // `unmetered` (neither fuel nor epoch), its `fuel` mode this one.
    let fuel_only = Sandbox::for_runner(None, false).context("building the runner's sandbox")?;
    println!(
        "peergrid sandbox benchmark on {} ({} logical CPUs), median of {REPETITIONS} runs",
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "fast engine:      {}",
        sandbox.engine_id(NanMode::from_canonical(false))
    );
    println!(
        "canonical engine: {}",
        sandbox.engine_id(NanMode::from_canonical(true))
    );
    println!();

    let mut timings = Vec::new();
    for kernel in &KERNELS {
        timings.push(time_kernel(
            kernel,
            &sandbox,
            &epoch_only,
            &unmetered,
            &fuel_only,
        )?);
    }
    print_kernel_table(&timings);
    println!();
    time_start(&sandbox)?;
    println!();
    time_disk_cache()?;
    Ok(())
}

fn time_kernel(
    kernel: &Kernel,
    sandbox: &Sandbox,
    epoch_only: &Sandbox,
    unmetered: &Sandbox,
    fuel_only: &Sandbox,
) -> Result<Timing> {
    let wasm = read_wasm(kernel.wasm_file)?;
    let hash = Hash::of(&wasm);
    let input = (kernel.input)();
    let input = input.as_slice();
    let expected = (kernel.native)(input)
        .map_err(|e| anyhow::anyhow!("{} fails natively: {e}", kernel.name))?;
    let native = median(|| {
        let started = Instant::now();
        let out = (kernel.native)(std::hint::black_box(input));
        let elapsed = started.elapsed();
        std::hint::black_box(out)
            .map(|_| elapsed)
            .map_err(anyhow::Error::msg)
    })?;
    let wasm_time = |sandbox: &Sandbox, canonical_nan: bool, limits| -> Result<f64> {
        // The first run compiles and checks the output; the timed ones hit
        // the module cache, as every unit but a job's first does.
        let task = |hash, wasm, input, seed, canonical_nan| SandboxTask {
            limits,
            ..task(hash, wasm, input, seed, canonical_nan)
        };
        let first = sandbox.run(&task(&hash, &wasm, input, 1, canonical_nan));
        ensure!(
            success(&first)? == expected,
            "{} printed something else in wasm (canonical_nan {canonical_nan})",
            kernel.name
        );
        median(|| {
            let report = sandbox.run(&task(&hash, &wasm, input, 1, canonical_nan));
            success(&report)?;
            Ok(report.elapsed)
        })
    };
    Ok(Timing {
        native,
        fast: wasm_time(sandbox, false, &LIMITS)?,
        canonical: wasm_time(sandbox, true, &LIMITS)?,
        epoch_only: wasm_time(epoch_only, false, &FIXED_LIMITS)?,
        unmetered: wasm_time(unmetered, false, &FIXED_LIMITS)?,
        fuel_only: wasm_time(fuel_only, false, &LIMITS)?,
        v8: v8_time(&wasm_path(kernel.wasm_file), input, &expected)?,
    })
}

/// A column of the metering table: an engine's name and its time.
type EngineColumn = (&'static str, fn(&Timing) -> f64);

fn print_kernel_table(timings: &[Timing]) {
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "kernel",
        "native s",
        "fast s",
        "canon s",
        "fast/nat",
        "canon/nat",
        "canon/fast",
        "fuel cost"
    );
    for (kernel, t) in KERNELS.iter().zip(timings) {
        println!(
            "{:<16} {:>9.3} {:>9.3} {:>9.3} {:>8.2}x {:>8.2}x {:>9.2}x {:>+8.1}%",
            kernel.name,
            t.native,
            t.fast,
            t.canonical,
            t.fast / t.native,
            t.canonical / t.native,
            t.canonical / t.fast,
            (t.fast / t.epoch_only - 1.0) * 100.0
        );
    }
    let geomean = |ratio: fn(&Timing) -> f64| {
        let logs: f64 = timings.iter().map(|t| ratio(t).ln()).sum();
        (logs / timings.len() as f64).exp()
    };
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>8.2}x {:>8.2}x {:>9.2}x {:>+8.1}%",
        "geometric mean",
        "",
        "",
        "",
        geomean(|t| t.fast / t.native),
        geomean(|t| t.canonical / t.native),
        geomean(|t| t.canonical / t.fast),
        (geomean(|t| t.fast / t.epoch_only) - 1.0) * 100.0
    );
    println!(
        "fast and canon: production engine (fuel + epoch deadline + memory cap); \
         fuel cost: fast vs the same engine with the epoch deadline alone"
    );
    println!();
    println!(
        "what metering costs (fast NaN mode): fixed = neither fuel nor epoch (a runner's \
         `fixed` mode), fuel = fuel alone (a runner's `fuel` mode), epoch = epoch alone \
         (in process, a `fixed` job), both = in process, a `fuel` job:"
    );
    // Seconds of each engine, then each engine's ratio to native.
    let engines: [EngineColumn; 4] = [
        ("fixed", |t| t.unmetered),
        ("fuel", |t| t.fuel_only),
        ("epoch", |t| t.epoch_only),
        ("both", |t| t.fast),
    ];
    let mut header = format!("{:<16}", "kernel");
    for (name, _) in engines {
        header += &format!(" {:>9}", format!("{name} s"));
    }
    for (name, _) in engines {
        header += &format!(" {:>9}", format!("{name}/nat"));
    }
    println!("{header}");
    for (kernel, t) in KERNELS.iter().zip(timings) {
        let mut row = format!("{:<16}", kernel.name);
        for (_, time) in engines {
            row += &format!(" {:>9.3}", time(t));
        }
        for (_, time) in engines {
            row += &format!(" {:>8.2}x", time(t) / t.native);
        }
        println!("{row}");
    }
    let mut row = format!("{:<16}{}", "geometric mean", " ".repeat(10 * engines.len()));
    for (_, time) in engines {
        let logs: f64 = timings.iter().map(|t| (time(t) / t.native).ln()).sum();
        row += &format!(" {:>8.2}x", (logs / timings.len() as f64).exp());
    }
    println!("{row}");
    println!();
    println!(
        "among engines: Node's V8 (node {}, its WASI; compiled once, warmed up by one run, a fresh instance per run) beside peergrid's runner `fixed` and in-process engines:",
        node_version()
    );
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9}",
        "kernel", "v8 s", "v8/nat", "fixed/nat", "both/nat"
    );
    for (kernel, t) in KERNELS.iter().zip(timings) {
        let (v8, v8_ratio) = match t.v8 {
            Some(v8) => (format!("{v8:.3}"), format!("{:.2}x", v8 / t.native)),
            None => ("failed".into(), "n/a".into()),
        };
        println!(
            "{:<16} {:>9} {:>9} {:>8.2}x {:>8.2}x",
            kernel.name,
            v8,
            v8_ratio,
            t.unmetered / t.native,
            t.fast / t.native
        );
    }
    if timings.iter().all(|t| t.v8.is_some()) {
        let logs: f64 = timings
            .iter()
            .map(|t| (t.v8.unwrap_or(t.native) / t.native).ln())
            .sum();
        println!(
            "{:<16} {:>9} {:>8.2}x",
            "geometric mean",
            "",
            (logs / timings.len() as f64).exp()
        );
    }
}

/// `node --version`, or why it is unknown.
fn node_version() -> String {
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("not installed".into(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        })
}

/// Per-task start time with the module already cached: a fresh store and
/// WASI context, instantiation and a call of a `_start` that returns at once.
fn time_start(sandbox: &Sandbox) -> Result<()> {
    let trivial =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
            .context("the trivial module is valid wat")?;
    let probe = read_wasm("probe.wasm")?;
    for (name, wasm, runs) in [
        ("trivial module", trivial, START_RUNS),
        ("probe.wasm (Rust std, prints JSON)", probe, PROBE_RUNS),
    ] {
        let hash = Hash::of(&wasm);
        for canonical_nan in [false, true] {
            // Warm up: compile, then touch the pool slots and caches.
            for seed in 0..u64::from(runs / 10) {
                success(&sandbox.run(&task(&hash, &wasm, b"", seed, canonical_nan)))?;
            }
            let started = Instant::now();
            for seed in 0..u64::from(runs) {
                success(&sandbox.run(&task(&hash, &wasm, b"", seed, canonical_nan)))?;
            }
            let mean = started.elapsed() / runs;
            println!(
                "per-task start, {name}, {} NaN mode: {:.1} µs (mean of {runs} runs, module cached)",
                if canonical_nan { "canonical" } else { "fast" },
                mean.as_secs_f64() * 1e6
            );
        }
    }
    Ok(())
}

/// What the on-disk compiled-module cache saves: the first run of the
/// probe in a new process (compile), in a restarted one (load from disk),
/// and with the module in memory.
fn time_disk_cache() -> Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary cache folder")?;
    for (name, file) in [
        ("probe.wasm", "probe.wasm"),
        ("lyapunov.wasm", "lyapunov.wasm"),
    ] {
        let wasm = read_wasm(file)?;
        let hash = Hash::of(&wasm);
        let input: &[u8] = if file == "lyapunov.wasm" {
            br#"{"r_start":3.0,"r_end":3.1,"steps":1,"iterations":1,"transient":0}"#
        } else {
            b""
        };
        let first_run = |label: &str| -> Result<RunReport> {
            let sandbox = Sandbox::new(Some(dir.path()))
                .with_context(|| format!("building a sandbox ({label})"))?;
            let cold = sandbox.run(&task(&hash, &wasm, input, 1, false));
            success(&cold)?;
            let warm = sandbox.run(&task(&hash, &wasm, input, 1, false));
            success(&warm)?;
            println!(
                "{name} ({} KiB), {label}: first run {:.1} ms, next run {:.2} ms",
                wasm.len() / 1024,
                ms(cold.elapsed),
                ms(warm.elapsed)
            );
            Ok(cold)
        };
        first_run("new worker, compiles")?;
        first_run("restarted worker, loads from disk")?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median, in seconds, of [`REPETITIONS`] timings.
fn median(mut time: impl FnMut() -> Result<Duration>) -> Result<f64> {
    let mut times = (0..REPETITIONS)
        .map(|_| time().map(|d| d.as_secs_f64()))
        .collect::<Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[REPETITIONS / 2])
}

fn success(report: &RunReport) -> Result<Vec<u8>> {
    match &report.outcome {
        RunOutcome::Success(out) => Ok(out.clone()),
        RunOutcome::Error(e) => bail!(
            "the module failed: {e}; stderr: {}",
            String::from_utf8_lossy(&report.stderr)
        ),
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

fn wasm_path(file: &str) -> PathBuf {
    target_dir().join("wasm32-wasip1/release").join(file)
}

fn read_wasm(file: &str) -> Result<Vec<u8>> {
    let path = wasm_path(file);
    std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {}; build the kernels first: \
             `cargo build --release --target wasm32-wasip1 -p peergrid-example-probe` and \
             `cargo build --release --target wasm32-wasip1 -p peergrid-example-lyapunov --bin lyapunov`",
            path.display()
        )
    })
}
