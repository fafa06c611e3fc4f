//! Lyapunov exponents of the logistic map `x ↦ r·x·(1 − x)` over a range
//! of the parameter `r`: the data behind the classic bifurcation and chaos
//! diagram, cut into work units that peergrid hands to volunteers.
//!
//! One work unit is a [`UnitInput`] (a JSON object on stdin); its result is
//! a [`UnitOutput`] (one line of JSON on stdout). The same code runs as the
//! `lyapunov` wasm32-wasip1 module on volunteers and natively for checking.
//!
//! # Determinism
//!
//! Results from different hosts are compared byte for byte to reach a
//! quorum, so the computation uses only IEEE 754 `+ − × ÷`, which are
//! correctly rounded on every target, and never `f64::ln`: that calls the
//! platform's libm (glibc natively, musl inside wasi-libc), and libms may
//! differ in the last bit. Instead the product of the derivatives is
//! carried as an exact binary exponent plus a mantissa in `[1, 2)`, and one
//! logarithm per point is taken with [`ln`], a fixed-term series written
//! here. The output goes through `serde_json`, whose float formatting
//! (shortest round-trip, `ryu`) is the same everywhere.

use serde::{Deserialize, Serialize};

/// Most points per unit: bounds the output size (about 80 bytes a point).
pub const MAX_STEPS: u32 = 100_000;
/// Most iterations per point (after `--scale`), so a unit stays a unit.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Most discarded iterations per point.
pub const MAX_TRANSIENT: u32 = 10_000_000;
/// Where every orbit starts. Not 0.5: at `r = 4` that orbit hits the fixed
/// point 0 after two steps and reports an exponent of −690.
pub const X0: f64 = 0.3;
/// Stand-in for a derivative of exactly zero (superstable orbits, `r = 0`),
/// so the exponent stays finite instead of becoming −∞.
pub const DERIVATIVE_FLOOR: f64 = 1e-300;

/// One work unit: `steps` values of `r` spread over `[r_start, r_end]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitInput {
    /// Lower end of the slice of `r`, within `[0, 4]`.
    pub r_start: f64,
    /// Upper end of the slice, at least `r_start`, at most 4.
    pub r_end: f64,
    /// Points in the slice; each sits at the middle of one of `steps` equal
    /// cells, so contiguous slices never share a point.
    pub steps: u32,
    /// Iterations averaged into each exponent.
    pub iterations: u32,
    /// Iterations run and discarded first, to let the orbit settle onto
    /// its attractor.
    pub transient: u32,
}

/// The result of one unit, in order of increasing `r`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitOutput {
    pub points: Vec<Point>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    pub r: f64,
    /// Mean of `ln |r·(1 − 2x)|` along the orbit: negative for periodic
    /// behaviour, positive for chaos.
    pub lyapunov: f64,
    /// The last `x` of the orbit; a scatter of these over `r` draws the
    /// bifurcation diagram.
    pub x_final: f64,
}

impl UnitInput {
    /// Checks the ranges a unit must respect; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.r_start.is_finite() && (0.0..=4.0).contains(&self.r_start)) {
            return Err(format!("r_start {} must be within [0, 4]", self.r_start));
        }
        if !(self.r_end.is_finite() && (0.0..=4.0).contains(&self.r_end)) {
            return Err(format!("r_end {} must be within [0, 4]", self.r_end));
        }
        if self.r_start > self.r_end {
            return Err(format!(
                "r_start {} must not exceed r_end {}",
                self.r_start, self.r_end
            ));
        }
        if !(1..=MAX_STEPS).contains(&self.steps) {
            return Err(format!(
                "steps {} must be between 1 and {MAX_STEPS}",
                self.steps
            ));
        }
        if !(1..=MAX_ITERATIONS).contains(&self.iterations) {
            return Err(format!(
                "iterations {} must be between 1 and {MAX_ITERATIONS}",
                self.iterations
            ));
        }
        if self.transient > MAX_TRANSIENT {
            return Err(format!(
                "transient {} must be at most {MAX_TRANSIENT}",
                self.transient
            ));
        }
        Ok(())
    }
}

/// Computes every point of a unit. Pure and deterministic; expects a
/// validated input (out-of-range values give meaningless but finite
/// numbers, never a panic).
pub fn compute(input: &UnitInput) -> UnitOutput {
    let width = input.r_end - input.r_start;
    let steps = f64::from(input.steps);
    let points = (0..input.steps)
        .map(|i| {
            let r = input.r_start + width * (f64::from(i) + 0.5) / steps;
            point(r, input.iterations, input.transient)
        })
        .collect();
    UnitOutput { points }
}

/// One orbit at `r`.
fn point(r: f64, iterations: u32, transient: u32) -> Point {
    let mut x = X0;
    for _ in 0..transient {
        x = r * x * (1.0 - x);
    }
    // The product of |f'(x)| along the orbit is `mantissa · 2^exponent`,
    // renormalised after every step so it neither overflows nor
    // underflows. The renormalisation only moves bits, so it is exact.
    let mut mantissa = 1.0_f64;
    let mut exponent: i64 = 0;
    for _ in 0..iterations {
        x = r * x * (1.0 - x);
        let derivative = (r * (1.0 - 2.0 * x)).abs().max(DERIVATIVE_FLOOR);
        // mantissa ∈ [1, 2) and derivative ∈ [1e-300, 4]: the product is a
        // normal number, which `split` requires.
        let (m, e) = split(mantissa * derivative);
        mantissa = m;
        exponent += e;
    }
    // |exponent| ≤ 1e7 · 1000 < 2^53, so the conversion is exact.
    let log_product = ln(mantissa) + exponent as f64 * std::f64::consts::LN_2;
    Point {
        r,
        lyapunov: log_product / f64::from(iterations),
        x_final: x,
    }
}

const MANTISSA_BITS: u64 = (1 << 52) - 1;
const EXPONENT_BIAS: i64 = 1023;

/// Splits a positive normal `v` into `(m, e)` with `v = m · 2^e` and
/// `m ∈ [1, 2)`, exactly, by reading the IEEE 754 fields.
fn split(v: f64) -> (f64, i64) {
    let bits = v.to_bits();
    // The 11-bit biased exponent field always fits in i64.
    let e = ((bits >> 52) & 0x7ff) as i64 - EXPONENT_BIAS;
    let m = f64::from_bits((bits & MANTISSA_BITS) | ((EXPONENT_BIAS as u64) << 52));
    (m, e)
}

/// Natural logarithm of a positive normal `v`, from `+ − × ÷` only, so it
/// rounds the same on every target (see the crate docs). Accurate to a few
/// units in the last place.
///
/// `v = m · 2^e` with `m ∈ [√½, √2)`, and `ln m = 2·atanh(s)` with
/// `s = (m − 1)/(m + 1)`, `|s| < 0.172`: twelve odd terms of the series
/// take the remainder below 2^-60.
pub fn ln(v: f64) -> f64 {
    let (mut m, mut e) = split(v);
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    // Horner form of 1 + s²/3 + s⁴/5 + … + s²²/23.
    let mut series = 0.0;
    for k in (0..12).rev() {
        series = series * s2 + 1.0 / f64::from(2 * k + 1);
    }
    let e = e as f64;
    e * std::f64::consts::LN_2 + 2.0 * s * series
}

/// The whole job: parses a unit from `stdin_bytes`, checks it, computes it
/// and returns its output as one line of JSON ending in `\n`.
pub fn run(stdin_bytes: &[u8]) -> Result<Vec<u8>, String> {
    run_scaled(stdin_bytes, 1)
}

/// Like [`run`], with the unit's `iterations` multiplied by `scale` first:
/// the `--scale K` argument, for making units heavier in demos without
/// regenerating inputs.
pub fn run_scaled(stdin_bytes: &[u8], scale: u32) -> Result<Vec<u8>, String> {
    let mut input: UnitInput = serde_json::from_slice(stdin_bytes).map_err(|e| {
        format!(
            "input is not a work unit ({e}); expected JSON like \
             {{\"r_start\":2.8,\"r_end\":4.0,\"steps\":200,\"iterations\":40000,\"transient\":1000}}"
        )
    })?;
    input.iterations = input.iterations.checked_mul(scale).ok_or_else(|| {
        format!(
            "iterations {} times --scale {scale} overflows; lower --scale",
            input.iterations
        )
    })?;
    input.validate()?;
    let output = compute(&input);
    let mut bytes =
        serde_json::to_vec(&output).map_err(|e| format!("cannot serialise the output: {e}"))?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
