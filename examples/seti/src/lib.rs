//! A narrowband signal search in the style of SETI@home: complex baseband
//! radio samples go in, candidate drifting tones come out.
//!
//! One work unit is one coarse frequency channel of an observation over one
//! time segment: a one-line JSON [`UnitHeader`] followed by the samples,
//! 1-bit complex like SETI@home's recordings: each sample is the sign of I
//! and the sign of Q, four samples to a byte (see [`decode`]). The search
//! ([`search`])
//!
//! 1. cuts the samples into `steps` blocks of `fft_len` and takes the power
//!    spectrum of each (a waterfall: time × fine frequency bins);
//! 2. estimates the noise power per bin from the median of the waterfall;
//! 3. de-dopplers it: for every total drift `d` in `−max_drift_bins ..=
//!    max_drift_bins` and every start bin, sums the power along the
//!    straight line from `(0, bin)` to `(steps − 1, bin + d)` (brute force,
//!    `(2·max_drift_bins + 1) · fft_len · steps` additions);
//! 4. keeps the lines whose SNR reaches the unit's threshold, strongest
//!    first, dropping every line that comes within [`GUARD_BINS`] of one
//!    already kept (a strong tone lights up a bow tie of neighbouring
//!    drifts and bins).
//!
//! Its result is a [`UnitOutput`], one line of JSON. The same code runs as
//! the `seti` wasm32-wasip1 module on volunteers and natively for checking.
//! [`synth`] builds observations with known injected signals (`seti-gen`)
//! and [`merge`] joins the units' candidates and scores them against the
//! truth (`seti-merge`).
//!
//! # Determinism
//!
//! Hosts reach a quorum by returning the same bytes. The search has no
//! threads, clock or randomness, adds in a fixed order, uses
//! [`rustfft::FftPlannerScalar`] (no CPU-dependent SIMD kernels) and
//! `f32`/`f64` `+ − × ÷ √`, which are correctly rounded everywhere. The one
//! platform-dependent step is rustfft's twiddle factors (`f64` sin/cos from
//! the platform's libm, then rounded to `f32`), which matters only when
//! comparing a native run with the wasm module; every volunteer runs the
//! same module. Reported powers and SNRs are rounded (see [`UnitOutput`])
//! and every candidate carries its exact integer bin and drift.

pub mod merge;
pub mod synth;

use serde::{Deserialize, Serialize};

/// The `format` every unit header carries; a different value is refused.
pub const FORMAT: &str = "peergrid-seti/1";
/// Fewest and most fine channels per spectrum.
pub const FFT_LEN_RANGE: std::ops::RangeInclusive<u32> = 16..=65_536;
/// Fewest and most spectra per unit.
pub const STEPS_RANGE: std::ops::RangeInclusive<u32> = 2..=16_384;
/// Most samples in a unit (`fft_len · steps`): 2 MiB of packed samples,
/// half the grid's input limit, and 32 MiB of `f32` waterfall.
pub const MAX_SAMPLES: u64 = 8 * 1024 * 1024;
/// Lines closer than this many fine bins at any time in the segment count
/// as the same signal; the weaker one is dropped. Covers the spectral
/// leakage of a rectangular window for tones up to SNR ≈ 200.
pub const GUARD_BINS: i64 = 3;
/// Most candidates a unit reports (the strongest); `truncated` says when
/// more passed the threshold.
pub const MAX_CANDIDATES: usize = 256;

/// The JSON line at the head of a unit. Frequencies and times are in the
/// observation's frame: hertz above the observation's lower band edge,
/// seconds since its first sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitHeader {
    /// Always [`FORMAT`].
    pub format: String,
    /// The unit's name, e.g. `ch03-seg01`; echoed in the output.
    pub id: String,
    /// Coarse channel index within the observation.
    pub channel: u32,
    /// Time segment index within the observation.
    pub segment: u32,
    /// Samples per spectrum = fine channels per spectrum; a multiple of 4,
    /// so every spectrum starts on a byte.
    pub fft_len: u32,
    /// Spectra in the unit; the samples are `fft_len · steps` I/Q pairs,
    /// `fft_len · steps / 4` bytes.
    pub steps: u32,
    /// Complex sample rate, Hz: the unit's bandwidth. A fine bin is
    /// `sample_rate_hz / fft_len` wide and a spectrum lasts
    /// `fft_len / sample_rate_hz` seconds.
    pub sample_rate_hz: f64,
    /// Frequency of fine bin 0 (the baseband's 0 Hz): the unit's band is
    /// `[band_start_hz, band_start_hz + sample_rate_hz)`.
    pub band_start_hz: f64,
    /// Time of the unit's first sample.
    pub t_start_s: f64,
    /// Largest total drift searched, in fine bins over the whole unit, in
    /// either direction. Below `fft_len`.
    pub max_drift_bins: u32,
    /// Lines with at least this SNR become candidates.
    pub threshold_snr: f64,
}

/// The result of one unit: one line of JSON on stdout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitOutput {
    pub id: String,
    pub channel: u32,
    pub segment: u32,
    /// Time span of the unit: first sample to the end of the last spectrum.
    pub t_start_s: f64,
    pub t_end_s: f64,
    /// Frequency span of the unit's band.
    pub f_lo_hz: f64,
    pub f_hi_hz: f64,
    /// Width of a fine bin and the drift-rate step of the search.
    pub bin_hz: f64,
    pub drift_step_hz_s: f64,
    pub threshold_snr: f64,
    /// More than [`MAX_CANDIDATES`] lines survived; the weakest were left out.
    pub truncated: bool,
    /// Sorted by `bin`, then `drift_bins`.
    pub candidates: Vec<Candidate>,
}

/// One drifting-tone candidate: the line from fine bin `bin` at
/// `t_start_s` to bin `bin + drift_bins` at the last spectrum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// Start bin within the unit, at its first spectrum.
    pub bin: u32,
    /// Total drift over the unit, in bins.
    pub drift_bins: i32,
    /// Frequency at the unit's start, in the observation's frame (Hz).
    pub freq_hz: f64,
    /// Drift rate, Hz/s.
    pub drift_hz_s: f64,
    /// Mean power along the line in units of the mean noise power (noise
    /// alone gives 1), rounded to 4 decimals.
    pub power: f64,
    /// `(sum − steps·noise) / (√steps · noise)`: how many standard deviations
    /// of pure noise the line's sum stands above its mean, rounded to 2
    /// decimals.
    pub snr: f64,
}

impl UnitHeader {
    /// Checks the header's own ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format {:?} is not {FORMAT:?}; regenerate the unit with this version of seti-gen",
                self.format
            ));
        }
        if !FFT_LEN_RANGE.contains(&self.fft_len) {
            return Err(format!(
                "fft_len {} must be between {} and {}",
                self.fft_len,
                FFT_LEN_RANGE.start(),
                FFT_LEN_RANGE.end()
            ));
        }
        if !self.fft_len.is_multiple_of(4) {
            return Err(format!("fft_len {} must be a multiple of 4", self.fft_len));
        }
        if !STEPS_RANGE.contains(&self.steps) {
            return Err(format!(
                "steps {} must be between {} and {}",
                self.steps,
                STEPS_RANGE.start(),
                STEPS_RANGE.end()
            ));
        }
        if self.samples() > MAX_SAMPLES {
            return Err(format!(
                "fft_len × steps = {} samples; at most {MAX_SAMPLES} fit in a unit",
                self.samples()
            ));
        }
        if !(self.sample_rate_hz.is_finite() && self.sample_rate_hz > 0.0) {
            return Err(format!(
                "sample_rate_hz {} must be a positive number",
                self.sample_rate_hz
            ));
        }
        if !self.band_start_hz.is_finite() {
            return Err("band_start_hz must be a finite number".into());
        }
        if !(self.t_start_s.is_finite() && self.t_start_s >= 0.0) {
            return Err(format!("t_start_s {} must be at least 0", self.t_start_s));
        }
        if self.max_drift_bins >= self.fft_len {
            return Err(format!(
                "max_drift_bins {} must be below fft_len {}",
                self.max_drift_bins, self.fft_len
            ));
        }
        if !(self.threshold_snr.is_finite() && self.threshold_snr > 0.0) {
            return Err(format!(
                "threshold_snr {} must be a positive number",
                self.threshold_snr
            ));
        }
        Ok(())
    }

    /// I/Q pairs in the unit.
    pub fn samples(&self) -> u64 {
        u64::from(self.fft_len) * u64::from(self.steps)
    }

    /// Width of one fine bin, Hz.
    pub fn bin_hz(&self) -> f64 {
        self.sample_rate_hz / f64::from(self.fft_len)
    }

    /// Duration of one spectrum, s.
    pub fn step_s(&self) -> f64 {
        f64::from(self.fft_len) / self.sample_rate_hz
    }

    /// Drift rate of a line that drifts one bin over the unit, Hz/s: the
    /// line spans `steps − 1` spectra, start to start.
    pub fn drift_step_hz_s(&self) -> f64 {
        self.bin_hz() / (f64::from(self.steps - 1) * self.step_s())
    }
}

/// Splits a unit into its header and its samples, checking both.
pub fn decode(bytes: &[u8]) -> Result<(UnitHeader, &[u8]), String> {
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("input has no header line; a unit is one line of JSON, a newline, then packed 1-bit I/Q samples (write units with seti-gen)")?;
    let header: UnitHeader = serde_json::from_slice(&bytes[..newline]).map_err(|e| {
        format!("the header line is not a unit header ({e}); write units with seti-gen")
    })?;
    header.validate()?;
    let body = &bytes[newline + 1..];
    let expected = header.samples() / 4;
    if body.len() as u64 != expected {
        return Err(format!(
            "the unit has {} bytes of samples; fft_len {} × steps {} / 4 samples a byte = {expected}",
            body.len(),
            header.fft_len,
            header.steps
        ));
    }
    Ok((header, body))
}

/// Joins a header and its packed samples into a unit's bytes (the inverse
/// of [`decode`]).
pub fn encode(header: &UnitHeader, packed: &[u8]) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(header).expect("a header always serialises");
    bytes.push(b'\n');
    bytes.extend_from_slice(packed);
    bytes
}

/// Packs 1-bit samples: sample `k` is bits `2·(k mod 4)` (I) and
/// `2·(k mod 4) + 1` (Q) of byte `k / 4`; a set bit is +1, a clear bit −1.
/// `signs` holds `(I > 0, Q > 0)` per sample, a multiple of 4 of them.
pub fn pack(signs: &[(bool, bool)]) -> Vec<u8> {
    signs
        .chunks(4)
        .map(|four| {
            four.iter().enumerate().fold(0u8, |byte, (k, &(i, q))| {
                byte | (u8::from(i) << (2 * k)) | (u8::from(q) << (2 * k + 1))
            })
        })
        .collect()
}

/// The power spectra of a unit, `steps` rows of `fft_len` bins, row-major.
/// Bin `k` is `k · bin_hz` above the band's start (the samples are
/// baseband with the band's lower edge at 0 Hz).
pub fn waterfall(header: &UnitHeader, packed: &[u8]) -> Vec<f32> {
    use rustfft::num_complex::Complex32;
    let n = header.fft_len as usize;
    let fft = rustfft::FftPlannerScalar::<f32>::new().plan_fft_forward(n);
    let mut scratch = vec![Complex32::default(); fft.get_inplace_scratch_len()];
    let mut buffer = vec![Complex32::default(); n];
    let mut power = Vec::with_capacity(n * header.steps as usize);
    let sign = |bit: u8| if bit & 1 == 1 { 1.0 } else { -1.0 };
    for block in packed.chunks_exact(n / 4) {
        for (four, &byte) in buffer.chunks_exact_mut(4).zip(block) {
            for (k, z) in four.iter_mut().enumerate() {
                *z = Complex32::new(sign(byte >> (2 * k)), sign(byte >> (2 * k + 1)));
            }
        }
        fft.process_with_scratch(&mut buffer, &mut scratch);
        power.extend(buffer.iter().map(|z| z.re * z.re + z.im * z.im));
    }
    power
}

/// The mean noise power per bin, estimated robustly: pure noise gives
/// exponentially distributed bin powers, whose median is `mean · ln 2`;
/// a few strong tones barely move the median.
pub fn noise_mean(power: &[f32]) -> f64 {
    if power.is_empty() {
        return 0.0;
    }
    let mut sorted = power.to_vec();
    let mid = sorted.len() / 2;
    let (_, median, _) = sorted.select_nth_unstable_by(mid, f32::total_cmp);
    f64::from(*median) / std::f64::consts::LN_2
}

/// Offset after `t` of `steps − 1` spectra of a line drifting `drift` bins
/// in total: `drift · t / (steps − 1)` rounded half away from zero, in
/// integers so every target agrees.
fn offset(drift: i64, t: i64, span: i64) -> i64 {
    let twice = 2 * drift * t;
    if twice >= 0 {
        (twice + span) / (2 * span)
    } else {
        -((-twice + span) / (2 * span))
    }
}

/// A line that passed the threshold, before duplicates are dropped.
#[derive(Clone, Copy, Debug)]
struct Hit {
    bin: i64,
    drift: i64,
    sum: f32,
    snr: f64,
}

impl Hit {
    /// Whether the two lines come within [`GUARD_BINS`] of each other at
    /// any time in the unit. The distance is linear in time, so it is
    /// enough to look at both ends: a sign change means they cross.
    fn near(&self, other: &Hit) -> bool {
        let start = self.bin - other.bin;
        let end = (self.bin + self.drift) - (other.bin + other.drift);
        start.signum() * end.signum() <= 0 || start.abs().min(end.abs()) <= GUARD_BINS
    }
}

/// Runs the search over a decoded unit. Pure and deterministic.
pub fn search(header: &UnitHeader, samples: &[u8]) -> UnitOutput {
    let n = header.fft_len as usize;
    let steps = header.steps as usize;
    let power = waterfall(header, samples);
    let noise = noise_mean(&power);
    let span = i64::from(header.steps) - 1;
    let max_drift = i64::from(header.max_drift_bins);
    let expected = steps as f64 * noise;
    let sigma = (steps as f64).sqrt() * noise;

    let mut hits = Vec::new();
    let mut sums = vec![0.0_f32; n];
    if noise > 0.0 {
        for drift in -max_drift..=max_drift {
            // Start bins whose whole line stays inside the band.
            let lo = (-drift).max(0) as usize;
            let hi = n - drift.max(0) as usize;
            let width = hi - lo;
            let sums = &mut sums[..width];
            sums.fill(0.0);
            for (t, row) in power.chunks_exact(n).enumerate() {
                let from = (lo as i64 + offset(drift, t as i64, span)) as usize;
                for (sum, p) in sums.iter_mut().zip(&row[from..from + width]) {
                    *sum += p;
                }
            }
            for (k, &sum) in sums.iter().enumerate() {
                let snr = (f64::from(sum) - expected) / sigma;
                if snr >= header.threshold_snr {
                    hits.push(Hit {
                        bin: (lo + k) as i64,
                        drift,
                        sum,
                        snr,
                    });
                }
            }
        }
    }

    // Strongest first; ties broken by position so the order is total.
    hits.sort_by(|a, b| {
        b.snr
            .total_cmp(&a.snr)
            .then(a.bin.cmp(&b.bin))
            .then(a.drift.cmp(&b.drift))
    });
    let mut kept: Vec<Hit> = Vec::new();
    let mut truncated = false;
    for hit in hits {
        if kept.iter().any(|k| k.near(&hit)) {
            continue;
        }
        if kept.len() == MAX_CANDIDATES {
            truncated = true;
            break;
        }
        kept.push(hit);
    }
    kept.sort_by(|a, b| a.bin.cmp(&b.bin).then(a.drift.cmp(&b.drift)));

    let bin_hz = header.bin_hz();
    let drift_step = header.drift_step_hz_s();
    let candidates = kept
        .iter()
        .map(|h| Candidate {
            bin: h.bin as u32,
            drift_bins: h.drift as i32,
            freq_hz: header.band_start_hz + h.bin as f64 * bin_hz,
            drift_hz_s: h.drift as f64 * drift_step,
            power: round(f64::from(h.sum) / expected, 4),
            snr: round(h.snr, 2),
        })
        .collect();
    UnitOutput {
        id: header.id.clone(),
        channel: header.channel,
        segment: header.segment,
        t_start_s: header.t_start_s,
        t_end_s: header.t_start_s + steps as f64 * header.step_s(),
        f_lo_hz: header.band_start_hz,
        f_hi_hz: header.band_start_hz + header.sample_rate_hz,
        bin_hz,
        drift_step_hz_s: drift_step,
        threshold_snr: header.threshold_snr,
        truncated,
        candidates,
    }
}

/// `value` rounded to `decimals` places (for output only).
fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// The module's whole job: one unit's bytes in, one JSON line out.
pub fn run(stdin_bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (header, samples) = decode(stdin_bytes)?;
    let output = search(&header, samples);
    let mut bytes =
        serde_json::to_vec(&output).map_err(|e| format!("cannot serialise the output: {e}"))?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
