//! `lyapunov-summary DATASET.jsonl`: reads a job's exported dataset
//! (`peergrid results export ID --format jsonl`) and prints what the grid
//! found: how much of the scanned range of r is chaotic, where chaos
//! first sets in, and the largest exponent.

use std::io::BufRead;

use peergrid_example_lyapunov::UnitOutput;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: lyapunov-summary DATASET.jsonl");
        std::process::exit(2);
    };
    if let Err(e) = summarize(&path) {
        eprintln!("lyapunov-summary: {e}");
        std::process::exit(1);
    }
}

fn summarize(path: &str) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut points = Vec::new();
    let mut rows = 0;
    let mut hosts = std::collections::BTreeSet::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        let row: serde_json::Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        let output = row["output"]
            .as_str()
            .ok_or("a dataset row has no text output")?;
        let unit: UnitOutput = serde_json::from_str(output).map_err(|e| e.to_string())?;
        for h in row["hosts"].as_array().into_iter().flatten() {
            hosts.insert(h.as_str().unwrap_or("").to_string());
        }
        points.extend(unit.points);
        rows += 1;
    }
    if points.is_empty() {
        return Err("the dataset is empty".into());
    }
    points.sort_by(|a, b| a.r.total_cmp(&b.r));
    let chaotic = points.iter().filter(|p| p.lyapunov > 0.0).count();
    let onset = points.iter().find(|p| p.lyapunov > 1e-3).map(|p| p.r);
    let max = points
        .iter()
        .max_by(|a, b| a.lyapunov.total_cmp(&b.lyapunov))
        .ok_or("no points")?;
    let first = points.first().map_or(0.0, |p| p.r);
    let last = points.last().map_or(0.0, |p| p.r);
    println!(
        "dataset: {rows} validated units, {} values of r in [{first:.4}, {last:.4}], computed by {} hosts",
        points.len(),
        hosts.len()
    );
    println!(
        "chaotic (exponent > 0): {:.1} % of the scanned r values",
        100.0 * chaotic as f64 / points.len() as f64
    );
    if let Some(r) = onset {
        println!("first chaotic r: {r:.4} (Feigenbaum's accumulation point is 3.5699)");
    }
    println!(
        "largest exponent: {:.4} at r = {:.4} (ln 2 = 0.6931 at r = 4)",
        max.lyapunov, max.r
    );
    Ok(())
}
