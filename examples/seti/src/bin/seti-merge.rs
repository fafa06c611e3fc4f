//! `seti-merge`: joins the units' candidates into detections and scores
//! them against the ground truth `seti-gen` wrote: recall and false
//! positives per SNR band (see `peergrid_example_seti::merge`).
//!
//! ```text
//! seti-merge (--dataset DATASET.jsonl | --native DIR) --truth TRUTH.json [--out REPORT.json]
//! ```
//!
//! `--dataset` reads a job's exported results (`peergrid results export ID
//! --format jsonl`: one row a line, the module's stdout in `output`);
//! `--native` runs the search here over every `*.bin` unit in DIR instead,
//! without the grid. The summary goes to stdout, the full report (JSON) to
//! `--out`.

use std::path::PathBuf;
use std::process::ExitCode;

use peergrid_example_seti::merge::{parse_dataset, report, run_native};
use peergrid_example_seti::synth::{TRUTH_FORMAT, Truth};

const USAGE: &str = "usage: seti-merge (--dataset DATASET.jsonl | --native DIR) --truth TRUTH.json \
                     [--out REPORT.json]";

enum Source {
    Dataset(PathBuf),
    Native(PathBuf),
}

fn main() -> ExitCode {
    match merge(std::env::args().skip(1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("seti-merge: {message}\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn merge(mut args: impl Iterator<Item = String>) -> Result<(), String> {
    let mut source = None;
    let mut truth = None;
    let mut out = None;
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = PathBuf::from(args.next().ok_or_else(|| format!("{flag} needs a value"))?);
        match flag.as_str() {
            "--dataset" if source.is_none() => source = Some(Source::Dataset(value)),
            "--native" if source.is_none() => source = Some(Source::Native(value)),
            "--dataset" | "--native" => return Err("give one of --dataset and --native".into()),
            "--truth" => truth = Some(value),
            "--out" => out = Some(value),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    let source = source.ok_or("give --dataset DATASET.jsonl or --native DIR")?;
    let truth_path = truth.ok_or("--truth is required")?;
    let text = std::fs::read_to_string(&truth_path)
        .map_err(|e| format!("cannot read {}: {e}", truth_path.display()))?;
    let truth: Truth = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a seti-gen truth file: {e}", truth_path.display()))?;
    if truth.format != TRUTH_FORMAT {
        return Err(format!(
            "{} has format {:?}, not {TRUTH_FORMAT:?}",
            truth_path.display(),
            truth.format
        ));
    }
    let outputs = match source {
        Source::Dataset(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            parse_dataset(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        Source::Native(dir) => {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "bin"))
                .collect();
            paths.sort();
            let units = paths
                .iter()
                .map(|p| {
                    std::fs::read(p)
                        .map(|bytes| (p.display().to_string(), bytes))
                        .map_err(|e| format!("cannot read {}: {e}", p.display()))
                })
                .collect::<Result<Vec<_>, String>>()?;
            run_native(&units)?
        }
    };
    if outputs.is_empty() {
        return Err("no unit results to merge".into());
    }
    let report = report(&outputs, &truth);
    print!("{}", report.summary);
    if let Some(path) = out {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| format!("cannot serialise the report: {e}"))?;
        std::fs::write(&path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote the report to {}", path.display());
    }
    Ok(())
}
