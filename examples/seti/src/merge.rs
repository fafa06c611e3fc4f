//! After the grid: join the units' candidates into detections and score
//! them against the ground truth (`seti-merge`).
//!
//! Overlapping units see the same tone more than once (a neighbouring
//! channel's margin, the next segment's overlap, and every segment a
//! persistent tone lasts), so candidates are clustered first: two are the
//! same signal when their drift rates agree within [`DRIFT_TOL_STEPS`]
//! drift steps and, extrapolated to the time halfway between their units'
//! starts, their frequencies agree within [`FREQ_TOL_BINS`] fine bins. A
//! cluster is one detection. A detection finds an injected signal when one
//! of its candidates lies on the signal's track by the same tolerances, in
//! a unit during which the signal was on; a detection that finds none is a
//! false positive.

use serde::{Deserialize, Serialize};

use crate::UnitOutput;
use crate::synth::{SNR_BANDS, Signal, Truth};

/// Frequency tolerance, fine bins: a tone between bins, quantised drift
/// lines and extrapolation over a few segments stay well within it.
pub const FREQ_TOL_BINS: f64 = 4.0;
/// Drift-rate tolerance, in drift steps (one bin per unit).
pub const DRIFT_TOL_STEPS: f64 = 3.0;
/// The `format` of a report.
pub const REPORT_FORMAT: &str = "peergrid-seti-report/1";

/// One signal as the grid saw it: a cluster of candidates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Frequency at `t_start_s` (Hz, observation frame), drift rate and SNR
    /// of the cluster's strongest candidate, whose unit starts at `t_start_s`.
    pub freq_hz: f64,
    pub drift_hz_s: f64,
    pub t_start_s: f64,
    pub snr: f64,
    /// Units that reported it, in name order.
    pub units: Vec<String>,
    /// The injected signal it matches, if any.
    pub signal: Option<u32>,
}

/// How one injected signal fared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalResult {
    pub id: u32,
    pub snr: f64,
    pub freq_hz: f64,
    pub drift_hz_s: f64,
    pub found: bool,
    /// Best SNR among the candidates on its track.
    pub detected_snr: Option<f64>,
    /// Units with a candidate on its track.
    pub units: Vec<String>,
}

/// Recall and false positives for one SNR band.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Band {
    /// E.g. `"8-12"`; injected signals are banded by their injected SNR,
    /// false positives by their detected SNR (the first band reaches down
    /// to 0 and the last up to infinity for those).
    pub label: String,
    pub snr_min: f64,
    pub snr_max: f64,
    pub injected: usize,
    pub found: usize,
    /// `found / injected`, absent when nothing was injected in the band.
    pub recall: Option<f64>,
    pub false_positives: usize,
}

/// What `seti-merge` prints and writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`REPORT_FORMAT`].
    pub format: String,
    pub units: usize,
    pub candidates: usize,
    pub detections: usize,
    pub injected: usize,
    pub found: usize,
    pub false_positives: usize,
    pub threshold_snr: f64,
    pub bands: Vec<Band>,
    pub signals: Vec<SignalResult>,
    pub detection_list: Vec<Detection>,
    /// The same in a few lines of prose.
    pub summary: String,
}

/// A candidate with the unit it came from.
#[derive(Clone, Copy, Debug)]
struct Member<'a> {
    unit: &'a UnitOutput,
    candidate: &'a crate::Candidate,
}

impl Member<'_> {
    fn freq_at(&self, t: f64) -> f64 {
        self.candidate.freq_hz + self.candidate.drift_hz_s * (t - self.unit.t_start_s)
    }

    fn same_signal(&self, other: &Member<'_>) -> bool {
        let drift_tol = DRIFT_TOL_STEPS * self.unit.drift_step_hz_s.max(other.unit.drift_step_hz_s);
        let freq_tol = FREQ_TOL_BINS * self.unit.bin_hz.max(other.unit.bin_hz);
        let mid = 0.5 * (self.unit.t_start_s + other.unit.t_start_s);
        (self.candidate.drift_hz_s - other.candidate.drift_hz_s).abs() <= drift_tol
            && (self.freq_at(mid) - other.freq_at(mid)).abs() <= freq_tol
    }

    fn on_track(&self, signal: &Signal) -> bool {
        let unit = self.unit;
        signal.start_s < unit.t_end_s
            && signal.end_s > unit.t_start_s
            && (self.candidate.drift_hz_s - signal.drift_hz_s).abs()
                <= DRIFT_TOL_STEPS * unit.drift_step_hz_s
            && (self.candidate.freq_hz - signal.freq_at(unit.t_start_s)).abs()
                <= FREQ_TOL_BINS * unit.bin_hz
    }
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Clusters every unit's candidates into detections, strongest candidate
/// first within each, and sorts them by frequency at the observation's
/// start. `truth` only labels each detection with the signal it finds.
pub fn detections(outputs: &[UnitOutput], truth: &[Signal]) -> Vec<Detection> {
    let members: Vec<Member<'_>> = outputs
        .iter()
        .flat_map(|unit| {
            unit.candidates
                .iter()
                .map(move |candidate| Member { unit, candidate })
        })
        .collect();
    let mut parent: Vec<usize> = (0..members.len()).collect();
    for i in 0..members.len() {
        for j in i + 1..members.len() {
            if members[i].same_signal(&members[j]) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut clusters: std::collections::BTreeMap<usize, Vec<Member<'_>>> = Default::default();
    for (i, m) in members.iter().enumerate() {
        let root = find(&mut parent, i);
        clusters.entry(root).or_default().push(*m);
    }
    let mut found: Vec<Detection> = clusters
        .into_values()
        .map(|cluster| {
            let best = cluster
                .iter()
                .max_by(|a, b| a.candidate.snr.total_cmp(&b.candidate.snr))
                .copied()
                .expect("a cluster has a member");
            let mut units: Vec<String> = cluster.iter().map(|m| m.unit.id.clone()).collect();
            units.sort();
            units.dedup();
            let signal = truth
                .iter()
                .find(|s| cluster.iter().any(|m| m.on_track(s)))
                .map(|s| s.id);
            Detection {
                freq_hz: best.candidate.freq_hz,
                drift_hz_s: best.candidate.drift_hz_s,
                t_start_s: best.unit.t_start_s,
                snr: best.candidate.snr,
                units,
                signal,
            }
        })
        .collect();
    found.sort_by(|a, b| {
        let fa = a.freq_hz - a.drift_hz_s * a.t_start_s;
        let fb = b.freq_hz - b.drift_hz_s * b.t_start_s;
        fa.total_cmp(&fb)
            .then(a.drift_hz_s.total_cmp(&b.drift_hz_s))
    });
    found
}

fn band_of(snr: f64) -> usize {
    SNR_BANDS
        .iter()
        .position(|&(_, hi)| snr < hi)
        .unwrap_or(SNR_BANDS.len() - 1)
}

/// Merges the units' results and scores them against the truth.
pub fn report(outputs: &[UnitOutput], truth: &Truth) -> Report {
    let detection_list = detections(outputs, &truth.signals);
    let signals: Vec<SignalResult> = truth
        .signals
        .iter()
        .map(|s| {
            let on_track: Vec<(&UnitOutput, f64)> = outputs
                .iter()
                .flat_map(|unit| {
                    unit.candidates
                        .iter()
                        .filter(move |candidate| Member { unit, candidate }.on_track(s))
                        .map(move |c| (unit, c.snr))
                })
                .collect();
            let mut units: Vec<String> = on_track.iter().map(|(u, _)| u.id.clone()).collect();
            units.sort();
            units.dedup();
            SignalResult {
                id: s.id,
                snr: s.snr,
                freq_hz: s.freq_hz,
                drift_hz_s: s.drift_hz_s,
                found: !on_track.is_empty(),
                detected_snr: on_track.iter().map(|&(_, snr)| snr).reduce(f64::max),
                units,
            }
        })
        .collect();
    let mut bands: Vec<Band> = SNR_BANDS
        .iter()
        .map(|&(lo, hi)| Band {
            label: format!("{lo}-{hi}"),
            snr_min: lo,
            snr_max: hi,
            injected: 0,
            found: 0,
            recall: None,
            false_positives: 0,
        })
        .collect();
    for s in &signals {
        let band = &mut bands[band_of(s.snr)];
        band.injected += 1;
        band.found += usize::from(s.found);
    }
    for d in detection_list.iter().filter(|d| d.signal.is_none()) {
        bands[band_of(d.snr)].false_positives += 1;
    }
    for band in &mut bands {
        band.recall = (band.injected > 0).then(|| band.found as f64 / band.injected as f64);
    }
    let found = signals.iter().filter(|s| s.found).count();
    let false_positives = detection_list.iter().filter(|d| d.signal.is_none()).count();
    let candidates = outputs.iter().map(|o| o.candidates.len()).sum();
    let mut summary = format!(
        "{} units, {candidates} candidates above SNR {} merged into {} detections: \
         {found} of {} injected signals found, {false_positives} false positives.\n",
        outputs.len(),
        truth.plan.threshold_snr,
        detection_list.len(),
        signals.len(),
    );
    for band in &bands {
        summary.push_str(&format!(
            "  SNR {:>5}: found {:>2} of {:>2}{}, {} false positives\n",
            band.label,
            band.found,
            band.injected,
            band.recall
                .map(|r| format!(" ({:.0} %)", 100.0 * r))
                .unwrap_or_default(),
            band.false_positives,
        ));
    }
    for s in signals.iter().filter(|s| !s.found) {
        summary.push_str(&format!(
            "  missed signal {} (SNR {:.1}) at {:.1} Hz drifting {:.4} Hz/s\n",
            s.id, s.snr, s.freq_hz, s.drift_hz_s
        ));
    }
    Report {
        format: REPORT_FORMAT.into(),
        units: outputs.len(),
        candidates,
        detections: detection_list.len(),
        injected: signals.len(),
        found,
        false_positives,
        threshold_snr: truth.plan.threshold_snr,
        bands,
        signals,
        detection_list,
        summary,
    }
}

/// One row of an exported dataset (`peergrid results export ID --format
/// jsonl`); only the module's stdout matters here.
#[derive(Deserialize)]
struct DatasetRow {
    output: String,
}

/// Every unit's result from an exported dataset, one JSON object a line.
pub fn parse_dataset(text: &str) -> Result<Vec<UnitOutput>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let row: DatasetRow = serde_json::from_str(line).map_err(|e| {
                format!(
                    "line {}: not a dataset row with an `output` field ({e})",
                    i + 1
                )
            })?;
            serde_json::from_str(row.output.trim())
                .map_err(|e| format!("line {}: the output is not a seti unit result ({e})", i + 1))
        })
        .collect()
}

/// Runs the search natively over units, as the grid would, in order.
pub fn run_native(units: &[crate::synth::Unit]) -> Result<Vec<UnitOutput>, String> {
    units
        .iter()
        .map(|(name, bytes)| {
            let out = crate::run(bytes).map_err(|e| format!("{name}: {e}"))?;
            serde_json::from_slice(&out).map_err(|e| format!("{name}: {e}"))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Candidate;

    fn unit(id: &str, t_start_s: f64, candidates: Vec<Candidate>) -> UnitOutput {
        UnitOutput {
            id: id.into(),
            channel: 0,
            segment: 0,
            t_start_s,
            t_end_s: t_start_s + 100.0,
            f_lo_hz: 0.0,
            f_hi_hz: 1000.0,
            bin_hz: 1.0,
            drift_step_hz_s: 0.01,
            threshold_snr: 7.0,
            truncated: false,
            candidates,
        }
    }

    fn cand(freq_hz: f64, drift_hz_s: f64, snr: f64) -> Candidate {
        Candidate {
            bin: 0,
            drift_bins: 0,
            freq_hz,
            drift_hz_s,
            power: 1.0,
            snr,
        }
    }

    #[test]
    fn clusters_one_drifting_signal_across_segments_and_keeps_others_apart() {
        let outputs = vec![
            unit(
                "a",
                0.0,
                vec![cand(500.0, 0.1, 20.0), cand(700.0, 0.0, 9.0)],
            ),
            // The same tone 80 s later, 8 Hz higher; and an unrelated one.
            unit(
                "b",
                80.0,
                vec![cand(508.5, 0.1, 25.0), cand(520.0, 0.1, 8.0)],
            ),
        ];
        let found = detections(&outputs, &[]);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0].units, vec!["a", "b"]);
        assert_eq!((found[0].freq_hz, found[0].snr), (508.5, 25.0));
    }

    #[test]
    fn parses_dataset_rows() {
        let output = serde_json::to_string(&unit("a", 0.0, vec![])).unwrap();
        let row = serde_json::json!({"job": 1, "unit": 0, "output": output + "\n"});
        let parsed = parse_dataset(&format!("{row}\n\n")).unwrap();
        assert_eq!(parsed[0].id, "a");
        assert!(parse_dataset("{}").unwrap_err().contains("line 1"));
    }
}
