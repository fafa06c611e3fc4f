//! Synthetic observations for the search: Gaussian noise with injected
//! narrowband tones, some drifting, cut into overlapping work units, plus
//! the ground truth that says what was injected (`seti-gen`).
//!
//! # The observation
//!
//! `channels` coarse channels side by side, each `core_bins` fine bins
//! (`bin_hz` wide) of the band, observed for `segments` overlapping time
//! segments. A work unit is one coarse channel over one segment, widened by
//! `margin_bins` fine bins of each neighbour's band and overlapping the
//! next segment by `overlap_steps` spectra. The margin equals the largest
//! drift searched, so a tone that starts inside a channel's own bins stays
//! inside that unit's band for the whole segment, even if it drifts
//! across the channel edge; a signal switching on or off near a segment
//! boundary is whole in at least one segment if it lasts at least
//! `2·steps − overlap_steps` spectra.
//!
//! Each unit's samples are synthesised directly at its own band, as if a
//! digital down-converter had tuned to it: the lower band edge sits at
//! 0 Hz, so fine bin `k` of the unit is `band_start_hz + k·bin_hz`. The
//! tones are the same functions of time in every unit that sees them; the
//! noise is drawn independently for each unit, so the overlaps repeat the
//! signals but not the noise (a real filterbank would repeat both).
//!
//! # The signal model
//!
//! Before quantisation a sample is complex Gaussian noise, unit variance per
//! component, plus every tone that is on and inside the unit's band. A tone
//! of frequency `f(t) = freq_hz + drift_hz_s·(t − start_s)` while
//! `start_s ≤ t < end_s` has amplitude `a`. Then each component is reduced
//! to its sign, as SETI@home's recorder did. For weak tones the sign keeps
//! `2/π` of the signal-to-noise power ratio, so with
//!
//! ```text
//! snr = (2/π) · √steps · fft_len · a² / 2
//! ```
//!
//! a tone that sits on a bin centre and drifts a whole number of bins per
//! segment reaches about that SNR in the search's de-doppler sum. Tones
//! between bins lose up to 3.9 dB to scalloping and fast drifts smear a
//! little, so measured SNRs scatter below the injected ones.

use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use crate::{FORMAT, UnitHeader};

/// The `format` of a truth file.
pub const TRUTH_FORMAT: &str = "peergrid-seti-truth/1";
/// Injected SNRs are drawn from these bands in turn (lower bound
/// inclusive). Measured SNRs come out about a quarter lower (see the
/// module doc), so against the default threshold of 6 the first band is
/// mostly lost, the second near the limit and the others well above it.
pub const SNR_BANDS: [(f64, f64); 4] = [(6.0, 8.0), (8.0, 12.0), (12.0, 20.0), (20.0, 50.0)];
/// Injected tones keep at least this many fine bins from each other and
/// from the observation's band edges, so the search's duplicate
/// suppression never has to separate two real signals.
pub const SEPARATION_BINS: f64 = 16.0;

/// Everything that shapes an observation; `seti-gen`'s flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Seeds the noise, the signals' parameters and their phases.
    pub seed: u64,
    /// Coarse channels across the band.
    pub channels: u32,
    /// Time segments.
    pub segments: u32,
    /// Samples per spectrum (fine bins per unit band).
    pub fft_len: u32,
    /// Spectra per unit.
    pub steps: u32,
    /// Spectra shared by consecutive segments.
    pub overlap_steps: u32,
    /// Fine bins each unit borrows from each neighbouring channel; also the
    /// largest drift searched, in bins per segment.
    pub margin_bins: u32,
    /// Width of a fine bin, Hz (the sample rate is `fft_len · bin_hz`).
    pub bin_hz: f64,
    /// The search's SNR threshold, written into every unit.
    pub threshold_snr: f64,
    /// Tones to inject.
    pub signals: u32,
}

impl Plan {
    /// The demo observation: 8 channels × 4 segments = 32 units of
    /// 2048 bins × 4096 spectra (2 MiB each), 1 Hz bins, 1 s spectra.
    pub fn demo(seed: u64) -> Plan {
        Plan {
            seed,
            channels: 8,
            segments: 4,
            fft_len: 2048,
            steps: 4096,
            overlap_steps: 512,
            margin_bins: 256,
            bin_hz: 1.0,
            // Pure noise peaks near SNR 5.3 over a dozen units (about a
            // million lines each); 6 leaves few false alarms per job.
            threshold_snr: 6.0,
            signals: 24,
        }
    }

    /// Fine bins of the band that belong to each channel alone.
    pub fn core_bins(&self) -> u32 {
        self.fft_len.saturating_sub(2 * self.margin_bins)
    }

    pub fn sample_rate_hz(&self) -> f64 {
        f64::from(self.fft_len) * self.bin_hz
    }

    pub fn step_s(&self) -> f64 {
        1.0 / self.bin_hz
    }

    /// Spectra between the starts of consecutive segments.
    pub fn stride_steps(&self) -> u32 {
        self.steps - self.overlap_steps
    }

    /// The observed band, Hz: `[0, band_hz)` in the observation's frame.
    pub fn band_hz(&self) -> f64 {
        f64::from(self.channels) * f64::from(self.core_bins()) * self.bin_hz
    }

    pub fn duration_s(&self) -> f64 {
        let steps = self.segments * self.stride_steps() + self.overlap_steps;
        f64::from(steps) * self.step_s()
    }

    /// Largest drift rate the search covers, Hz/s.
    pub fn max_drift_hz_s(&self) -> f64 {
        f64::from(self.margin_bins) * self.bin_hz / (f64::from(self.steps - 1) * self.step_s())
    }

    pub fn check(&self) -> Result<(), String> {
        if self.channels == 0 || self.segments == 0 {
            return Err("channels and segments must be at least 1".into());
        }
        if self.overlap_steps >= self.steps {
            return Err(format!(
                "overlap {} must be below steps {}",
                self.overlap_steps, self.steps
            ));
        }
        if self.core_bins() < 4 * SEPARATION_BINS as u32 {
            return Err(format!(
                "fft_len {} leaves too few bins once {} margin bins are taken from each side",
                self.fft_len, self.margin_bins
            ));
        }
        if !(self.bin_hz.is_finite() && self.bin_hz > 0.0) {
            return Err("bin_hz must be a positive number".into());
        }
        self.header(0, 0).validate()
    }

    /// The header of the unit for `channel` over `segment`.
    pub fn header(&self, channel: u32, segment: u32) -> UnitHeader {
        let first_bin =
            i64::from(channel) * i64::from(self.core_bins()) - i64::from(self.margin_bins);
        UnitHeader {
            format: FORMAT.into(),
            id: unit_id(channel, segment),
            channel,
            segment,
            fft_len: self.fft_len,
            steps: self.steps,
            sample_rate_hz: self.sample_rate_hz(),
            band_start_hz: first_bin as f64 * self.bin_hz,
            t_start_s: f64::from(segment * self.stride_steps()) * self.step_s(),
            max_drift_bins: self.margin_bins,
            threshold_snr: self.threshold_snr,
        }
    }
}

/// A unit's name and, with `.bin`, its file name: `ch03-seg01`.
pub fn unit_id(channel: u32, segment: u32) -> String {
    format!("ch{channel:02}-seg{segment:02}")
}

/// One injected tone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    pub id: u32,
    /// The coarse channel that holds `freq_hz`.
    pub channel: u32,
    /// Frequency at `start_s`, Hz in the observation's frame.
    pub freq_hz: f64,
    /// Hz/s; the frequency at time t is `freq_hz + drift_hz_s·(t − start_s)`.
    pub drift_hz_s: f64,
    /// The tone is on for `start_s ≤ t < end_s`.
    pub start_s: f64,
    pub end_s: f64,
    /// De-doppler SNR over one whole unit (see the module doc).
    pub snr: f64,
    /// Phase at `start_s`, radians.
    pub phase_rad: f64,
}

impl Signal {
    /// Frequency at time `t` (extrapolated outside the on-window).
    pub fn freq_at(&self, t: f64) -> f64 {
        self.freq_hz + self.drift_hz_s * (t - self.start_s)
    }
}

/// What `seti-gen` injected: written next to the inputs for `seti-merge`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    /// Always [`TRUTH_FORMAT`].
    pub format: String,
    pub plan: Plan,
    pub band_hz: f64,
    pub duration_s: f64,
    pub signals: Vec<Signal>,
}

/// Gaussian noise from a seeded PCG generator, by Box–Muller.
pub struct Noise {
    rng: Pcg64Mcg,
    /// Box–Muller makes two deviates at a time; this holds the second.
    spare: Option<f64>,
}

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise {
            rng: Pcg64Mcg::seed_from_u64(seed),
            spare: None,
        }
    }

    /// Uniform in `(0, 1]` (never 0, so its logarithm is finite).
    pub fn uniform(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal.
    pub fn gaussian(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let r = (-2.0 * self.uniform().ln()).sqrt();
        let theta = std::f64::consts::TAU * self.uniform();
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}

/// The packed 1-bit samples of one unit (see [`crate::pack`]): unit
/// Gaussian noise per component plus every tone that is on and inside the
/// unit's band, reduced to signs.
pub fn synthesise(header: &UnitHeader, signals: &[Signal], noise: &mut Noise) -> Vec<u8> {
    use std::f64::consts::{PI, TAU};
    let n = header.fft_len as usize;
    let fs = header.sample_rate_hz;
    let t_end = header.t_start_s + header.samples() as f64 / fs;
    let active: Vec<(&Signal, f64)> = signals
        .iter()
        .filter(|s| s.start_s < t_end && s.end_s > header.t_start_s)
        .map(|s| {
            let a2 = PI * s.snr / (f64::from(header.fft_len) * f64::from(header.steps).sqrt());
            (s, a2.sqrt())
        })
        .collect();
    let mut block = vec![(0.0f64, 0.0f64); n];
    let mut signs = Vec::with_capacity(header.samples() as usize);
    for b in 0..header.steps as usize {
        for z in block.iter_mut() {
            *z = (noise.gaussian(), noise.gaussian());
        }
        let t0 = header.t_start_s + (b * n) as f64 / fs;
        for &(s, amplitude) in &active {
            // Exact phase at the block's start, then a rotation per sample
            // whose step itself turns with the drift: (z, w) ← (z·w, w·c).
            let offset = s.freq_hz - header.band_start_hz;
            let tau = t0 - s.start_s;
            let cycles = offset * tau + 0.5 * s.drift_hz_s * tau * tau;
            let phase = TAU * (cycles - cycles.floor()) + s.phase_rad;
            let mut z = (amplitude * phase.cos(), amplitude * phase.sin());
            let step = TAU * (offset + s.drift_hz_s * (tau + 0.5 / fs)) / fs;
            let mut w = (step.cos(), step.sin());
            let turn = TAU * s.drift_hz_s / (fs * fs);
            let c = (turn.cos(), turn.sin());
            for (k, sample) in block.iter_mut().enumerate() {
                let t = t0 + k as f64 / fs;
                // The band-pass: a tone is seen only while on and in band.
                let baseband = offset + s.drift_hz_s * (t - s.start_s);
                if t >= s.start_s && t < s.end_s && (0.0..fs).contains(&baseband) {
                    sample.0 += z.0;
                    sample.1 += z.1;
                }
                z = (z.0 * w.0 - z.1 * w.1, z.0 * w.1 + z.1 * w.0);
                w = (w.0 * c.0 - w.1 * c.1, w.0 * c.1 + w.1 * c.0);
            }
        }
        signs.extend(block.iter().map(|&(i, q)| (i > 0.0, q > 0.0)));
    }
    crate::pack(&signs)
}

/// Draws the tones of an observation (see [`SNR_BANDS`] and the module
/// doc): every fourth is stationary, every third switches on and off
/// within the observation, the rest last throughout.
pub fn plan_signals(plan: &Plan) -> Result<Vec<Signal>, String> {
    let mut rng = Noise::new(plan.seed ^ 0x5E71_0B5E_0000_0001);
    let duration = plan.duration_s();
    let band = plan.band_hz();
    let guard = SEPARATION_BINS * plan.bin_hz;
    let min_window = f64::from(2 * plan.steps - plan.overlap_steps) * plan.step_s();
    let max_drift = 0.9 * plan.max_drift_hz_s();
    let mut signals: Vec<Signal> = Vec::new();
    for id in 0..plan.signals {
        let (lo, hi) = SNR_BANDS[id as usize % SNR_BANDS.len()];
        let snr = lo + (hi - lo) * (1.0 - rng.uniform());
        let mut placed = None;
        for _ in 0..10_000 {
            let drift = if id % 4 == 3 {
                0.0
            } else {
                max_drift * (2.0 * rng.uniform() - 1.0)
            };
            let (start, end) = if id % 3 == 2 && duration > min_window {
                let length = min_window + (duration - min_window) * rng.uniform();
                let start = (duration - length) * rng.uniform();
                (start, start + length)
            } else {
                (0.0, duration)
            };
            let freq = band * rng.uniform();
            let end_freq = freq + drift * (end - start);
            if freq.min(end_freq) < guard || freq.max(end_freq) > band - guard {
                continue;
            }
            let candidate = Signal {
                id,
                channel: (freq / (f64::from(plan.core_bins()) * plan.bin_hz)) as u32,
                freq_hz: freq,
                drift_hz_s: drift,
                start_s: start,
                end_s: end,
                snr,
                phase_rad: std::f64::consts::TAU * rng.uniform(),
            };
            if signals.iter().all(|s| apart(s, &candidate, guard)) {
                placed = Some(candidate);
                break;
            }
        }
        signals.push(placed.ok_or_else(|| {
            format!(
                "cannot place {} separated signals in {band} Hz; ask for fewer --signals",
                plan.signals
            )
        })?);
    }
    Ok(signals)
}

/// Whether two tones stay at least `guard` Hz apart whenever both are on.
fn apart(a: &Signal, b: &Signal, guard: f64) -> bool {
    let from = a.start_s.max(b.start_s);
    let to = a.end_s.min(b.end_s);
    if from >= to {
        return true;
    }
    let d0 = a.freq_at(from) - b.freq_at(from);
    let d1 = a.freq_at(to) - b.freq_at(to);
    d0.signum() == d1.signum() && d0.abs().min(d1.abs()) >= guard
}

/// The noise seed of one unit: the observation's seed mixed with the
/// unit's place, so units are independent and each is reproducible alone.
fn unit_seed(seed: u64, channel: u32, segment: u32) -> u64 {
    let place = (u64::from(channel) << 32) | u64::from(segment);
    seed ^ place.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A unit's id and its bytes, as a file or as the grid's input.
pub type Unit = (String, Vec<u8>);

/// A whole observation: the truth and every unit, in channel-major order.
pub fn generate(plan: &Plan) -> Result<(Truth, Vec<Unit>), String> {
    plan.check()?;
    let signals = plan_signals(plan)?;
    let places: Vec<(u32, u32)> = (0..plan.channels)
        .flat_map(|c| (0..plan.segments).map(move |s| (c, s)))
        .collect();
    // Units are independent (each has its own seed), so they are made in
    // parallel; the result does not depend on the number of threads.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = places.len().div_ceil(threads).max(1);
    let units = std::thread::scope(|scope| {
        let workers: Vec<_> = places
            .chunks(chunk)
            .map(|part| {
                let signals = &signals;
                scope.spawn(move || {
                    part.iter()
                        .map(|&(channel, segment)| {
                            let header = plan.header(channel, segment);
                            let mut noise = Noise::new(unit_seed(plan.seed, channel, segment));
                            let packed = synthesise(&header, signals, &mut noise);
                            (header.id.clone(), crate::encode(&header, &packed))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a unit synthesiser panicked"))
            .collect::<Vec<_>>()
    });
    let truth = Truth {
        format: TRUTH_FORMAT.into(),
        plan: plan.clone(),
        band_hz: plan.band_hz(),
        duration_s: plan.duration_s(),
        signals,
    };
    Ok((truth, units))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn units_tile_the_band_with_margins_and_overlap() {
        let plan = Plan::demo(1);
        let core = f64::from(plan.core_bins());
        let a = plan.header(2, 1);
        let b = plan.header(3, 1);
        assert_eq!(a.band_start_hz, 2.0 * core - 256.0);
        assert_eq!(b.band_start_hz - a.band_start_hz, core);
        assert_eq!(plan.header(0, 2).t_start_s, 2.0 * 3584.0);
        assert_eq!(plan.duration_s(), 4.0 * 3584.0 + 512.0);
        assert!(a.samples() / 4 + 512 <= 4 * 1024 * 1024);
    }

    #[test]
    fn signals_are_reproducible_separated_and_inside_the_band() {
        let plan = Plan::demo(42);
        let a = plan_signals(&plan).unwrap();
        assert_eq!(a, plan_signals(&plan).unwrap());
        assert_ne!(a, plan_signals(&Plan::demo(43)).unwrap());
        for s in &a {
            for t in [s.start_s, s.end_s] {
                let f = s.freq_at(t);
                assert!(f >= 0.0 && f <= plan.band_hz(), "{s:?}");
            }
            assert!(s.drift_hz_s.abs() <= plan.max_drift_hz_s());
        }
    }

    #[test]
    fn gaussian_noise_has_unit_variance() {
        let mut noise = Noise::new(5);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| noise.gaussian()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.02,
            "{mean} {var}"
        );
    }
}
