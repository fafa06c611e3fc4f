//! The float benchmark kernel: the Computer Language Benchmarks Game's
//! n-body simulation (the Sun and four Jovian planets, symplectic Euler
//! steps of 0.01 days), in plain `f64` with `+ − × ÷` and `sqrt`. All five
//! are correctly rounded in IEEE 754, so native and wasm runs print the same
//! bytes.
//!
//! Stdin: the number of steps. Stdout: the system's energy before and after,
//! as decimals and as bit patterns.

use std::f64::consts::PI;

/// Most steps one run may take, so a typo cannot make a run endless.
pub const MAX_STEPS: u64 = 1_000_000_000;

const SOLAR_MASS: f64 = 4.0 * PI * PI;
const DAYS_PER_YEAR: f64 = 365.24;
const STEP: f64 = 0.01;

#[derive(Clone, Copy)]
struct Body {
    position: [f64; 3],
    velocity: [f64; 3],
    mass: f64,
}

/// Runs the simulation for the number of steps on stdin.
pub fn run(stdin: &[u8]) -> Result<Vec<u8>, String> {
    let [steps] =
        crate::parse_numbers(stdin, "stdin must hold the number of steps, e.g. `1000000`")?;
    if steps > MAX_STEPS {
        return Err(format!(
            "{steps} steps is more than the {MAX_STEPS} allowed"
        ));
    }
    let mut bodies = initial_bodies();
    let before = energy(&bodies);
    for _ in 0..steps {
        advance(&mut bodies);
    }
    let after = energy(&bodies);
    Ok(format!(
        "{before:.9} {:#018x}\n{after:.9} {:#018x}\n",
        before.to_bits(),
        after.to_bits()
    )
    .into_bytes())
}

fn initial_bodies() -> [Body; 5] {
    let planet = |position: [f64; 3], velocity: [f64; 3], mass: f64| Body {
        position,
        velocity: velocity.map(|v| v * DAYS_PER_YEAR),
        mass: mass * SOLAR_MASS,
    };
    let mut bodies = [
        planet([0.0; 3], [0.0; 3], 1.0),
        planet(
            [
                4.841_431_442_464_72,
                -1.160_320_044_027_428_4,
                -0.103_622_044_471_123_1,
            ],
            [
                1.660_076_642_744_036_8e-3,
                7.699_011_184_197_404e-3,
                -6.904_600_169_720_63e-5,
            ],
            9.547_919_384_243_266e-4,
        ),
        planet(
            [
                8.343_366_718_244_58,
                4.124_798_564_124_305,
                -4.035_234_171_143_214e-1,
            ],
            [
                -2.767_425_107_268_624e-3,
                4.998_528_012_349_172e-3,
                2.304_172_975_737_639_3e-5,
            ],
            2.858_859_806_661_308e-4,
        ),
        planet(
            [
                1.289_436_956_213_913_1e1,
                -1.511_115_140_169_863_1e1,
                -2.233_075_788_926_557_3e-1,
            ],
            [
                2.964_601_375_647_616e-3,
                2.378_471_739_594_809_5e-3,
                -2.965_895_685_402_375_6e-5,
            ],
            4.366_244_043_351_563e-5,
        ),
        planet(
            [
                1.537_969_711_485_091_1e1,
                -2.591_931_460_998_796_4e1,
                1.792_587_729_503_711_8e-1,
            ],
            [
                2.680_677_724_903_893_2e-3,
                1.628_241_700_382_423e-3,
                -9.515_922_545_197_159e-5,
            ],
            5.151_389_020_466_114_5e-5,
        ),
    ];
    // Give the Sun the momentum that makes the system's total zero.
    let mut momentum = [0.0; 3];
    for body in &bodies {
        for (p, v) in momentum.iter_mut().zip(body.velocity) {
            *p += v * body.mass;
        }
    }
    for (v, p) in bodies[0].velocity.iter_mut().zip(momentum) {
        *v = -p / SOLAR_MASS;
    }
    bodies
}

fn advance(bodies: &mut [Body; 5]) {
    for i in 0..bodies.len() {
        let (left, right) = bodies.split_at_mut(i + 1);
        let a = &mut left[i];
        for b in right {
            let d = [
                a.position[0] - b.position[0],
                a.position[1] - b.position[1],
                a.position[2] - b.position[2],
            ];
            let distance_squared = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
            let magnitude = STEP / (distance_squared * distance_squared.sqrt());
            for (k, d) in d.into_iter().enumerate() {
                a.velocity[k] -= d * b.mass * magnitude;
                b.velocity[k] += d * a.mass * magnitude;
            }
        }
    }
    for body in bodies {
        for (x, v) in body.position.iter_mut().zip(body.velocity) {
            *x += STEP * v;
        }
    }
}

fn energy(bodies: &[Body; 5]) -> f64 {
    let mut e = 0.0;
    for (i, a) in bodies.iter().enumerate() {
        let speed_squared: f64 = a.velocity.iter().map(|v| v * v).sum();
        e += 0.5 * a.mass * speed_squared;
        for b in &bodies[i + 1..] {
            let d: f64 = (0..3)
                .map(|k| {
                    let delta = a.position[k] - b.position[k];
                    delta * delta
                })
                .sum();
            e -= a.mass * b.mass / d.sqrt();
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_matches_the_benchmarks_game() {
        // The reference output for 1000 steps: -0.169075164, -0.169087605.
        let out = String::from_utf8(run(b"1000").expect("runs")).expect("utf-8");
        let decimals: Vec<&str> = out.lines().filter_map(|l| l.split(' ').next()).collect();
        assert_eq!(decimals, ["-0.169075164", "-0.169087605"]);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(run(b"many").is_err());
        assert!(run(b"").is_err());
        assert!(run(b"1 2").is_err());
        assert!(run(b"99999999999").is_err());
    }
}
