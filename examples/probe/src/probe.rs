//! What a module can observe that might differ between runs or between
//! hosts, printed as one JSON line.
//!
//! Inside the peergrid sandbox every field must be a function of the
//! module, its input, its arguments, the task seed and (for the fast NaN
//! mode only) the CPU architecture. Natively, clocks and randomness make
//! every run different, which is the point of comparing.
//!
//! NaN-producing operations take their operands through
//! [`std::hint::black_box`]: otherwise the compiler folds `0.0 / 0.0` into a
//! constant and the module never computes a NaN at run time, which would
//! hide exactly the behaviour being probed.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Most bytes of stdin echoed back as the tag.
const MAX_TAG: usize = 200;
/// Keys in the `HashMap` whose iteration order is reported.
const MAP_KEYS: u32 = 20;

/// The probe's report for this `stdin` (echoed as a lossy UTF-8 tag) and
/// `args` (`argv`, program name first), as one JSON line ending in `\n`.
pub fn run(stdin: &[u8], args: Vec<String>) -> Vec<u8> {
    let tag = String::from_utf8_lossy(&stdin[..stdin.len().min(MAX_TAG)])
        .trim()
        .to_string();
    let report = json!({
        "tag": tag,
        "args": args,
        "f64_nan": f64_nans(),
        "f32_nan": f32_nans(),
        "f64_not_nan": f64_not_nans(),
        "hashmap_order": hashmap_order(),
        "random_bytes": random_bytes(),
        "system_time_ns": system_time_ns(),
        "instant_delta_ns": instant_delta_ns(),
    });
    let mut line = report.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// Bit patterns of NaNs that `f64` arithmetic produces, as `0x…` strings
/// (JSON numbers cannot hold 64 bits exactly). Under NaN canonicalization
/// every one of them is `0x7ff8000000000000`.
fn f64_nans() -> Value {
    // Distinct black boxes, so not even `x / x` is visible to the compiler.
    let zero = black_box(0.0f64);
    let other_zero = black_box(0.0f64);
    let one = black_box(1.0f64);
    let infinity = black_box(f64::INFINITY);
    let other_infinity = black_box(f64::INFINITY);
    let quiet_payload = black_box(f64::from_bits(0x7ff8_0000_0000_0123));
    let other_payload = black_box(f64::from_bits(0xfff8_0000_0000_0456));
    let signaling = black_box(f64::from_bits(0x7ff0_0000_0000_0001));
    let bits = |x: f64| format!("{:#018x}", x.to_bits());
    json!({
        "zero_div_zero": bits(zero / other_zero),
        "inf_minus_inf": bits(infinity - other_infinity),
        "inf_times_zero": bits(infinity * zero),
        "sqrt_minus_one": bits((-one).sqrt()),
        "payload_plus_one": bits(quiet_payload + one),
        "payload_times_one": bits(quiet_payload * one),
        "payload_plus_payload": bits(quiet_payload + other_payload),
        "signaling_plus_one": bits(signaling + one),
    })
}

/// The `f32` counterparts of [`f64_nans`]; canonical is `0x7fc00000`.
fn f32_nans() -> Value {
    // Distinct black boxes, so not even `x / x` is visible to the compiler.
    let zero = black_box(0.0f32);
    let other_zero = black_box(0.0f32);
    let one = black_box(1.0f32);
    let infinity = black_box(f32::INFINITY);
    let other_infinity = black_box(f32::INFINITY);
    let quiet_payload = black_box(f32::from_bits(0x7fc0_0123));
    let other_payload = black_box(f32::from_bits(0xffc0_0456));
    let signaling = black_box(f32::from_bits(0x7f80_0001));
    let bits = |x: f32| format!("{:#010x}", x.to_bits());
    json!({
        "zero_div_zero": bits(zero / other_zero),
        "inf_minus_inf": bits(infinity - other_infinity),
        "inf_times_zero": bits(infinity * zero),
        "sqrt_minus_one": bits((-one).sqrt()),
        "payload_plus_one": bits(quiet_payload + one),
        "payload_times_one": bits(quiet_payload * one),
        "payload_plus_payload": bits(quiet_payload + other_payload),
        "signaling_plus_one": bits(signaling + one),
    })
}

/// Ordinary results, which IEEE 754 rounds the same way everywhere.
fn f64_not_nans() -> Value {
    let tenth = black_box(0.1f64);
    let fifth = black_box(0.2f64);
    let two = black_box(2.0f64);
    let bits = |x: f64| format!("{:#018x}", x.to_bits());
    json!({
        "tenth_plus_fifth": bits(tenth + fifth),
        "sqrt_two": bits(two.sqrt()),
        "one_div_three": bits(black_box(1.0f64) / black_box(3.0f64)),
        "minus_zero_plus_zero": bits(-black_box(0.0f64) + black_box(0.0f64)),
    })
}

/// Keys of a `HashMap` in iteration order: `RandomState` draws its keys
/// from the platform's randomness (WASI `random_get` on wasm32-wasip1).
fn hashmap_order() -> Vec<u32> {
    let map: HashMap<u32, u32> = (0..MAP_KEYS).map(|k| (k, k)).collect();
    map.keys().copied().collect()
}

/// 16 bytes from `getrandom` as hex, or why there are none.
fn random_bytes() -> String {
    let mut bytes = [0u8; 16];
    match getrandom::fill(&mut bytes) {
        Ok(()) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        Err(e) => format!("error: {e}"),
    }
}

/// Nanoseconds since the Unix epoch by the wall clock (0 before 1970).
fn system_time_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Nanoseconds between two consecutive monotonic clock readings.
fn instant_delta_ns() -> u64 {
    let first = Instant::now();
    let second = Instant::now();
    u64::try_from(second.duration_since(first).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_is_one_json_line_with_every_field() {
        let line = run(b"  hello \n", vec!["probe".into(), "x\"y".into()]);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let value: Value = serde_json::from_slice(&line).expect("valid JSON");
        assert_eq!(value["tag"], "hello");
        assert_eq!(value["args"], json!(["probe", "x\"y"]));
        assert_eq!(
            value["hashmap_order"].as_array().map(Vec::len),
            Some(MAP_KEYS as usize)
        );
        assert_eq!(value["f64_not_nan"]["sqrt_two"], "0x3ff6a09e667f3bcd");
        for (name, bits) in value["f64_nan"].as_object().expect("object") {
            let bits = bits.as_str().expect("string");
            let bits = u64::from_str_radix(&bits[2..], 16).expect("hex");
            assert!(f64::from_bits(bits).is_nan(), "{name} is not a NaN");
        }
        for (name, bits) in value["f32_nan"].as_object().expect("object") {
            let bits = bits.as_str().expect("string");
            let bits = u32::from_str_radix(&bits[2..], 16).expect("hex");
            assert!(f32::from_bits(bits).is_nan(), "{name} is not a NaN");
        }
    }
}
