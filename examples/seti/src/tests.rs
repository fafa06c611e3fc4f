use super::*;
use crate::synth::{Noise, Signal};

fn header(fft_len: u32, steps: u32) -> UnitHeader {
    UnitHeader {
        format: FORMAT.into(),
        id: "test".into(),
        channel: 0,
        segment: 0,
        fft_len,
        steps,
        sample_rate_hz: f64::from(fft_len),
        band_start_hz: 1000.0,
        t_start_s: 0.0,
        max_drift_bins: 32,
        threshold_snr: 8.0,
    }
}

/// A unit of seeded noise plus the given tones (frequencies relative
/// to the band start; the band starts at 1000 Hz).
fn unit(h: &UnitHeader, seed: u64, tones: &[Signal]) -> Vec<u8> {
    let mut noise = Noise::new(seed);
    encode(h, &synth::synthesise(h, tones, &mut noise))
}

fn tone(freq_hz: f64, drift_hz_s: f64, snr: f64) -> Signal {
    Signal {
        id: 0,
        channel: 0,
        freq_hz,
        drift_hz_s,
        start_s: 0.0,
        end_s: 1e9,
        snr,
        phase_rad: 0.0,
    }
}

#[test]
fn finds_a_strong_drifting_tone_at_its_frequency_and_drift() {
    let h = header(256, 128);
    // 1 Hz bins, 1 s spectra; drift 20 bins over 127 spectra.
    let drift = 20.0 / 127.0;
    let bytes = unit(&h, 7, &[tone(1000.0 + 100.0, drift, 40.0)]);
    let out: UnitOutput = serde_json::from_slice(&run(&bytes).unwrap()).unwrap();
    assert_eq!(out.candidates.len(), 1, "{:?}", out.candidates);
    let c = &out.candidates[0];
    assert_eq!((c.bin, c.drift_bins), (100, 20));
    assert_eq!(c.freq_hz, 1100.0);
    assert!((c.drift_hz_s - drift).abs() < 1e-12);
    // A drifting tone spends much of its time between the line's bins
    // (scalloping), so it measures below its injected SNR of 40.
    assert!(c.snr > 15.0 && c.snr < 50.0, "snr {}", c.snr);
}

#[test]
fn finds_tones_drifting_down_and_off_bin() {
    let h = header(256, 128);
    let bytes = unit(
        &h,
        8,
        &[
            tone(1000.0 + 60.3, -11.0 / 127.0, 30.0),
            tone(1000.0 + 180.0, 0.0, 30.0),
        ],
    );
    let out: UnitOutput = serde_json::from_slice(&run(&bytes).unwrap()).unwrap();
    let found: Vec<(u32, i32)> = out
        .candidates
        .iter()
        .map(|c| (c.bin, c.drift_bins))
        .collect();
    assert_eq!(found, vec![(60, -11), (180, 0)]);
}

#[test]
fn pure_noise_gives_no_candidates() {
    let mut h = header(256, 128);
    h.max_drift_bins = 64;
    for seed in 0..4 {
        let bytes = unit(&h, seed, &[]);
        let out: UnitOutput = serde_json::from_slice(&run(&bytes).unwrap()).unwrap();
        assert!(
            out.candidates.is_empty(),
            "seed {seed}: {:?}",
            out.candidates
        );
        // ±1 ± i samples carry power 2 each, so a bin of white noise
        // averages 2 · fft_len.
        let (h, samples) = decode(&bytes).unwrap();
        let noise = noise_mean(&waterfall(&h, samples));
        assert!((noise / 512.0 - 1.0).abs() < 0.02, "{noise}");
    }
}

#[test]
fn output_is_deterministic_and_one_line() {
    let h = header(128, 64);
    let bytes = unit(&h, 3, &[tone(1040.0, 0.1, 20.0)]);
    let a = run(&bytes).unwrap();
    let b = run(&bytes).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.iter().filter(|&&c| c == b'\n').count(), 1);
    assert_eq!(a.last(), Some(&b'\n'));
}

#[test]
fn refuses_bad_units_and_says_why() {
    let h = header(64, 8);
    let good = encode(&h, &[0u8; 64 * 8 / 4]);
    assert!(
        run(&good[..good.len() - 1])
            .unwrap_err()
            .contains("bytes of samples")
    );
    assert!(run(b"no newline").unwrap_err().contains("no header line"));
    assert!(
        run(b"{\"x\":1}\n")
            .unwrap_err()
            .contains("not a unit header")
    );
    let mut bad = h.clone();
    bad.max_drift_bins = 64;
    let refused = run(&encode(&bad, &[0u8; 64 * 8 / 4])).unwrap_err();
    assert!(refused.contains("max_drift_bins"), "{refused}");
    let mut big = h.clone();
    big.fft_len = 65_536;
    big.steps = 256;
    assert!(big.validate().unwrap_err().contains("at most"));
    let mut odd = h;
    odd.fft_len = 66;
    assert!(odd.validate().unwrap_err().contains("multiple of 4"));
    // Constant samples: all power in one bin, a median of 0, no noise
    // to measure, so no candidates and no panic.
    let out: UnitOutput = serde_json::from_slice(&run(&good).unwrap()).unwrap();
    assert!(out.candidates.is_empty());
}

#[test]
fn packs_four_samples_a_byte() {
    let signs = [(true, false), (false, true), (true, true), (false, false)];
    assert_eq!(pack(&signs), vec![0b00_11_10_01]);
}

#[test]
fn line_offsets_round_half_away_from_zero() {
    assert_eq!(offset(10, 0, 100), 0);
    assert_eq!(offset(10, 100, 100), 10);
    assert_eq!(offset(10, 5, 100), 1); // 0.5 rounds up
    assert_eq!(offset(-10, 5, 100), -1);
    assert_eq!(offset(-10, 100, 100), -10);
    assert_eq!(offset(3, 49, 100), 1); // 1.47
}
