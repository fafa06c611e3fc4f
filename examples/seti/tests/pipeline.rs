//! The whole science pipeline without the grid: generate a small
//! observation from a fixed seed, run the module's `run` natively over
//! every unit (as volunteers would, one unit at a time), merge the
//! candidates and score them against the truth.

use peergrid_example_seti::merge::{report, run_native};
use peergrid_example_seti::synth::{Plan, generate};

/// A miniature of the demo plan: 3 channels × 2 segments of 256 bins ×
/// 256 spectra, so the test runs in well under a second.
fn small_plan(seed: u64) -> Plan {
    Plan {
        seed,
        channels: 3,
        segments: 2,
        fft_len: 256,
        steps: 256,
        overlap_steps: 32,
        margin_bins: 32,
        bin_hz: 1.0,
        threshold_snr: 6.0,
        signals: 8,
    }
}

#[test]
fn finds_every_strong_signal_across_overlapping_units() {
    let (truth, units) = generate(&small_plan(2024)).expect("the plan is valid");
    assert_eq!(units.len(), 6);
    assert!(
        units
            .iter()
            .all(|(_, bytes)| bytes.len() <= 4 * 1024 * 1024)
    );
    let outputs = run_native(&units).expect("every generated unit is valid");
    let report = report(&outputs, &truth);
    println!("{}", report.summary);

    for band in report.bands.iter().filter(|b| b.snr_min >= 12.0) {
        assert_eq!(
            band.found, band.injected,
            "recall below 100 % in band {}: {}",
            band.label, report.summary
        );
        assert!(band.injected > 0, "band {} is empty", band.label);
    }
    assert!(report.false_positives <= 1, "{}", report.summary);
    // Overlap makes duplicates, and merging removes them: never more
    // detections than candidates, and each found signal is one detection.
    assert!(report.detections < report.candidates, "{}", report.summary);
    for s in report.signals.iter().filter(|s| s.found) {
        let matching = report
            .detection_list
            .iter()
            .filter(|d| d.signal == Some(s.id))
            .count();
        assert_eq!(
            matching, 1,
            "signal {} split into {matching} detections",
            s.id
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_units_and_results() {
    let (truth_a, units_a) = generate(&small_plan(7)).expect("the plan is valid");
    let (truth_b, units_b) = generate(&small_plan(7)).expect("the plan is valid");
    assert_eq!(truth_a, truth_b);
    assert_eq!(units_a, units_b);
    let (_, units_c) = generate(&small_plan(8)).expect("the plan is valid");
    assert_ne!(units_a, units_c);
    let first = peergrid_example_seti::run(&units_a[0].1).expect("valid unit");
    assert_eq!(
        first,
        peergrid_example_seti::run(&units_b[0].1).expect("valid unit")
    );
}
