//! The "write your first job" tutorial (`docs/first-job.md`), followed as a
//! reader would: its files written, its commands run, its outputs checked,
//! on a real coordinator with two workers. Then what the tutorial promises
//! is checked from outside: the prime counts against a sieve and the native
//! build, every unit validated, pi within its statistical bound and each
//! unit's output reproducible from its seed.
//!
//! The page marks what the test uses with HTML comments (invisible when
//! rendered) on the line right before a fenced block:
//!
//! - `<!-- file: PATH -->`: the block is the file PATH, relative to the
//!   tutorial's folder (the reader's `work/`, holding `peergrid/`,
//!   `primes/` and `pi/`).
//! - `<!-- run -->` or `<!-- run in DIR -->`: the block is run with
//!   `bash -euo pipefail` in that folder (or DIR in it) and must succeed.
//! - `<!-- output -->`: each non-blank line of the block must appear, in
//!   order, among the lines the last run block printed (stdout and stderr
//!   together), where `…` matches any text.
//!
//! Unmarked blocks (installing tools, `peergrid login`, the `git =`
//! alternative) are for the reader only. The tutorial's folder holds
//! `peergrid` as a symbolic link to this repository, so the page's
//! `path = "../peergrid/sdk/guest"` is this repository's guest SDK, used as
//! written. Commands see the coordinator through `PEERGRID_SERVER`,
//! `PEERGRID_TOKEN`, `PEERGRID_KEY` and `PEERGRID_ENDORSEMENT` (what
//! `peergrid login` saves), `peergrid` first on `PATH`, and cargo offline
//! (the SDK has no dependencies) with its target folder inside the crate.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peergrid_tests::{Coordinator, Worker, bin};
use serde_json::Value;

/// The longest one run block may take (a cold build of the Rust crate and
/// the SDK, a job's wait): a hung command fails the test instead of
/// hanging it.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// What a marked block is for.
#[derive(Debug, PartialEq)]
enum Mark {
    File(PathBuf),
    Run(PathBuf),
    Output,
}

/// A marked fenced block of the page.
#[derive(Debug)]
struct Block {
    mark: Mark,
    text: String,
    /// Line of the page where the block's fence opens (from 1).
    line: usize,
}

/// The mark a `<!-- … -->` line gives the block after it, if any.
fn mark(comment: &str) -> Option<Mark> {
    let inner = comment
        .trim()
        .strip_prefix("<!--")?
        .strip_suffix("-->")?
        .trim();
    if let Some(path) = inner.strip_prefix("file:") {
        return Some(Mark::File(PathBuf::from(path.trim())));
    }
    if inner == "run" {
        return Some(Mark::Run(PathBuf::new()));
    }
    if let Some(dir) = inner.strip_prefix("run in ") {
        return Some(Mark::Run(PathBuf::from(dir.trim())));
    }
    (inner == "output").then_some(Mark::Output)
}

/// The page's marked blocks, in order. Panics on a mark that no block
/// follows, so a typo cannot silently drop a step.
fn marked_blocks(page: &str) -> Vec<Block> {
    let lines: Vec<&str> = page.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    let mut pending: Option<(Mark, usize)> = None;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(m) = mark(line) {
            assert!(
                pending.is_none(),
                "docs/first-job.md line {}: two marks in a row",
                i + 1
            );
            pending = Some((m, i + 1));
            i += 1;
            continue;
        }
        if trimmed.starts_with("```") {
            let indent = line.len() - trimmed.len();
            let open = i + 1;
            let mut text = String::new();
            i += 1;
            while i < lines.len() && lines[i].trim() != "```" {
                let l = lines[i];
                text.push_str(l.get(indent.min(l.len() - l.trim_start().len())..).unwrap());
                text.push('\n');
                i += 1;
            }
            assert!(
                i < lines.len(),
                "docs/first-job.md line {open}: unclosed block"
            );
            if let Some((mark, at)) = pending.take() {
                assert_eq!(
                    at + 1,
                    open,
                    "docs/first-job.md line {at}: a mark must be right before its block"
                );
                blocks.push(Block {
                    mark,
                    text,
                    line: open,
                });
            }
            i += 1;
            continue;
        }
        if let Some((_, at)) = &pending {
            panic!("docs/first-job.md line {at}: a mark not followed by a block");
        }
        i += 1;
    }
    assert!(pending.is_none(), "docs/first-job.md ends with a mark");
    blocks
}

/// Whether `line` matches `pattern`, where `…` stands for any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let (pattern, line) = (pattern.trim_end(), line.trim_end());
    let parts: Vec<&str> = pattern.split('…').collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || line.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &line[first.len()..];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Fails unless every line of `expected` matches a line of `got`, in order.
fn check_output(expected: &str, got: &str, line: usize) {
    let mut got_lines = got.lines();
    for want in expected.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            got_lines.any(|l| line_matches(want, l)),
            "docs/first-job.md line {line}: the output shown has\n  {want}\n\
             which is not in what the commands printed (in order):\n{got}"
        );
    }
}

/// Fails, saying how to install them, unless the tools the page uses are
/// there: Rust's wasm32-wasip1 target, and clang with wasi-libc.
fn require_tools(dir: &Path) {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc is missing: install Rust with rustup (https://rustup.rs)");
    let sysroot = String::from_utf8(sysroot.stdout).unwrap();
    assert!(
        Path::new(sysroot.trim())
            .join("lib/rustlib/wasm32-wasip1")
            .exists(),
        "Rust's wasm32-wasip1 target is missing: run `rustup target add wasm32-wasip1` \
         (scripts/setup does)"
    );
    let c = dir.join("probe.c");
    std::fs::write(
        &c,
        "#include <stdio.h>\nint main(void) { puts(\"ok\"); return 0; }\n",
    )
    .unwrap();
    let built = Command::new("clang")
        .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-o"])
        .arg(dir.join("probe.wasm"))
        .arg(&c)
        .output();
    let how = "run scripts/setup as root, or \
               `apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32`";
    match built {
        Err(e) => panic!("clang is missing ({e}): {how}"),
        Ok(out) => assert!(
            out.status.success(),
            "clang cannot build for wasm32-wasi with the sysroot /usr ({}): {how}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// Runs a `run` block in `dir` with `env`; returns what it printed
/// (stdout and stderr interleaved as written). Fails with that output on a
/// non-zero exit or after [`BLOCK_TIMEOUT`].
fn run_block(script: &str, dir: &Path, env: &[(&str, String)], line: usize) -> String {
    let log_path = dir.join(format!(".block-{line}.log"));
    let log = File::create(&log_path).unwrap();
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        // Its own process group, so a timeout ends every command in it.
        .process_group(0);
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > BLOCK_TIMEOUT {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!(
                "docs/first-job.md line {line}: still running after {BLOCK_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let printed = std::fs::read_to_string(&log_path).unwrap();
    std::fs::remove_file(&log_path).unwrap();
    assert!(
        status.success(),
        "docs/first-job.md line {line}: the block failed ({status}) in {}:\n{script}\nit printed:\n{printed}",
        dir.display()
    );
    printed
}

/// The primes below `end` by the sieve of Eratosthenes.
fn sieve(end: usize) -> Vec<bool> {
    let mut prime = vec![true; end];
    for p in prime.iter_mut().take(2) {
        *p = false;
    }
    let mut i = 2;
    while i * i < end {
        if prime[i] {
            for m in (i * i..end).step_by(i) {
                prime[m] = false;
            }
        }
        i += 1;
    }
    prime
}

/// The id of the job named `name`.
fn job_named(coordinator: &Coordinator, name: &str) -> u64 {
    let out = coordinator.cli(&["job", "list", "--json"]);
    assert!(out.status.success());
    let jobs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<u64> = jobs
        .iter()
        .filter(|j| j["name"] == name)
        .map(|j| j["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "jobs named {name:?}: {jobs:?}");
    ids[0]
}

/// The output of `program` (a native binary) on `input`.
fn native(program: &Path, input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", program.display());
    out.stdout
}

#[test]
fn the_first_job_tutorial_runs_as_written() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap();
    let page = std::fs::read_to_string(repo.join("docs/first-job.md"))
        .expect("docs/first-job.md, the tutorial this test follows");
    let blocks = marked_blocks(&page);
    assert!(
        blocks
            .iter()
            .filter(|b| matches!(b.mark, Mark::Run(_)))
            .count()
            >= 8
            && blocks.iter().any(|b| b.mark == Mark::Output),
        "docs/first-job.md has lost its marked blocks: {blocks:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    require_tools(dir.path());
    std::os::unix::fs::symlink(&repo, work.join("peergrid")).unwrap();

    let coordinator = Coordinator::start(dir.path()).unwrap();
    let workers: Vec<Worker> = coordinator.workers(dir.path(), "w", 2).unwrap();
    let bin_dir = bin("peergrid").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("PATH", path),
        ("PEERGRID_SERVER", coordinator.http.clone()),
        ("PEERGRID_TOKEN", coordinator.token.clone()),
        (
            "PEERGRID_KEY",
            coordinator.researcher_key.display().to_string(),
        ),
        (
            "PEERGRID_ENDORSEMENT",
            coordinator.researcher_endorsement.display().to_string(),
        ),
        // No profile of the machine's user: only the variables above.
        (
            "XDG_CONFIG_HOME",
            dir.path().join("config").display().to_string(),
        ),
        ("CARGO_NET_OFFLINE", "true".to_string()),
    ];

    let mut printed: Option<(String, usize)> = None;
    for block in &blocks {
        match &block.mark {
            Mark::File(rel) => {
                let path = work.join(rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &block.text).unwrap();
            }
            Mark::Run(rel) => {
                let out = run_block(&block.text, &work.join(rel), &env, block.line);
                printed = Some((out, block.line));
            }
            Mark::Output => {
                let (got, _) = printed.as_ref().unwrap_or_else(|| {
                    panic!(
                        "docs/first-job.md line {}: output before any run",
                        block.line
                    )
                });
                check_output(&block.text, got, block.line);
            }
        }
    }

    // primes: ten units covering 0..1 000 000, each validated with the
    // count a sieve gives and the output the native build prints.
    let job = job_named(&coordinator, "primes below one million");
    let status = coordinator.status(job).unwrap();
    assert_eq!(status["validated"], 10, "{status}");
    assert_eq!(status["failed"], 0, "{status}");
    let prime = sieve(1_000_000);
    let inputs = work.join("primes/inputs");
    let rows = coordinator.dataset(job).unwrap();
    assert_eq!(rows.len(), 10);
    let mut total = 0;
    for row in &rows {
        let input = std::fs::read(inputs.join(row["name"].as_str().unwrap())).unwrap();
        let text = String::from_utf8(input.clone()).unwrap();
        let (start, end) = text.trim().split_once(' ').unwrap();
        let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse().unwrap());
        let count = (start..end).filter(|&n| prime[n]).count();
        let largest = (start..end).rev().find(|&n| prime[n]).unwrap_or(0);
        total += count;
        let output = row["output"].as_str().unwrap();
        assert_eq!(
            output,
            format!(
                "{{\"start\":{start},\"end\":{end},\"primes\":{count},\"largest\":{largest}}}\n"
            ),
            "{row}"
        );
        assert_eq!(
            native(&work.join("primes/target/release/primes"), &input),
            output.as_bytes(),
            "the native build disagrees on {row}"
        );
        assert_eq!(row["hosts"].as_array().map(Vec::len), Some(2), "{row}");
    }
    assert_eq!(total, 78_498, "the primes below a million");
    let csv = std::fs::read_to_string(work.join("primes/primes.csv")).unwrap();
    assert_eq!(csv.lines().count(), 11, "a header and ten rows:\n{csv}");

    // pi: eight units, validated under the tolerance validator, each
    // estimate within six standard deviations (0.0098) of pi, not all the
    // same (each unit its own seed), and each the output a local run with
    // that unit's seed prints.
    let job = job_named(&coordinator, "pi by Monte Carlo");
    let out = coordinator.cli(&["job", "status", &job.to_string(), "--json"]);
    let detail: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(detail["validated"], 8, "{detail}");
    assert_eq!(detail["validator"]["kind"], "tolerance", "{detail}");
    let rows = coordinator.dataset(job).unwrap();
    assert_eq!(rows.len(), 8);
    let (mut inside, mut samples) = (0u64, 0u64);
    let mut outputs = HashSet::new();
    let spec = work.join("pi/job.toml");
    for row in &rows {
        let output = row["output"].as_str().unwrap();
        let v: Value = serde_json::from_str(output).unwrap();
        let (n, k) = (
            v["samples"].as_u64().unwrap(),
            v["inside"].as_u64().unwrap(),
        );
        let pi = v["pi"].as_f64().unwrap();
        assert_eq!(n, 1_000_000, "{row}");
        assert!((pi - 4.0 * k as f64 / n as f64).abs() < 1e-9, "{row}");
        assert!((pi - std::f64::consts::PI).abs() < 0.0098, "{row}");
        inside += k;
        samples += n;
        outputs.insert(output.to_string());
        let input = work.join("pi/inputs").join(row["name"].as_str().unwrap());
        let local = Command::new(bin("peergrid"))
            .arg("run")
            .arg("--spec")
            .arg(&spec)
            .arg("--input")
            .arg(&input)
            .args(["--job", &job.to_string(), "--unit"])
            .arg(row["unit"].as_u64().unwrap().to_string())
            .output()
            .unwrap();
        assert!(local.status.success(), "{local:?}");
        assert_eq!(String::from_utf8(local.stdout).unwrap(), output, "{row}");
    }
    assert!(
        outputs.len() > 1,
        "every unit drew the same numbers: {outputs:?}"
    );
    let pooled = 4.0 * inside as f64 / samples as f64;
    assert!(
        (pooled - std::f64::consts::PI).abs() < 0.0035,
        "the pooled estimate {pooled}"
    );
    drop(workers);
}

/// The conventions above on a small page: a mark binds to the block right
/// after it, unmarked blocks are skipped, and `…` matches any text but
/// never a line that differs elsewhere.
#[test]
fn the_tutorial_marks_and_wildcards_read_as_documented() {
    let page = "text\n<!-- file: a/b.txt -->\n```toml\nx = 1\n```\n\n```sh\nnot marked\n```\n\
                <!-- run in a -->\n```sh\necho hi\n```\n<!-- output -->\n```text\nhi\n```\n";
    let blocks = marked_blocks(page);
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    assert_eq!(blocks[0].mark, Mark::File(PathBuf::from("a/b.txt")));
    assert_eq!(blocks[0].text, "x = 1\n");
    assert_eq!(blocks[1].mark, Mark::Run(PathBuf::from("a")));
    assert_eq!(blocks[1].text, "echo hi\n");
    assert_eq!(blocks[2].mark, Mark::Output);
    assert!(line_matches("ok: fuel …, seed 0", "ok: fuel 12, seed 0"));
    assert!(!line_matches("ok: fuel …, seed 0", "ok: fuel 12, seed 7"));
    assert!(line_matches("a…b…c", "a1b2c"));
    assert!(!line_matches("a…b…c", "acb"));
    assert!(!line_matches("ab…ba", "aba"));
}
