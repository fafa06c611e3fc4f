use super::*;

fn unit(r_start: f64, r_end: f64, steps: u32) -> UnitInput {
    UnitInput {
        r_start,
        r_end,
        steps,
        iterations: 100_000,
        transient: 1_000,
    }
}

#[test]
fn stable_fixed_point_has_the_analytic_exponent() {
    // For 1 < r < 3 the orbit settles on x* = 1 − 1/r, where
    // f'(x*) = 2 − r, so the exponent is ln|2 − r|.
    let out = compute(&unit(2.9, 2.9, 1));
    let p = &out.points[0];
    assert_eq!(p.r, 2.9);
    let expected = (0.9_f64).ln();
    assert!((p.lyapunov - expected).abs() < 1e-3, "{p:?}");
    assert!((p.x_final - (1.0 - 1.0 / 2.9)).abs() < 1e-6, "{p:?}");
}

#[test]
fn fully_chaotic_map_has_exponent_ln_2() {
    let out = compute(&unit(4.0, 4.0, 1));
    let p = &out.points[0];
    assert!((p.lyapunov - std::f64::consts::LN_2).abs() < 0.01, "{p:?}");
}

#[test]
fn period_doubling_and_chaos_show_in_the_sign() {
    // Period 2 at r = 3.2, period 4 at r = 3.5, chaos at r = 3.9.
    for (r, negative) in [(3.2, true), (3.5, true), (3.9, false)] {
        let p = &compute(&unit(r, r, 1)).points[0];
        assert_eq!(p.lyapunov < 0.0, negative, "{p:?}");
    }
}

#[test]
fn zero_derivative_stays_finite() {
    // r = 0 maps everything to 0, where f' = 0 exactly, so every
    // factor is the floor: the exponent is ln(1e-300).
    let p = &compute(&unit(0.0, 0.0, 1)).points[0];
    assert!((p.lyapunov - DERIVATIVE_FLOOR.ln()).abs() < 1e-9, "{p:?}");
    // r = 2 has the superstable fixed point 1/2; the orbit lands one
    // ulp away from it, so the exponent is hugely negative but finite.
    let p = &compute(&unit(2.0, 2.0, 1)).points[0];
    assert!(p.lyapunov.is_finite() && p.lyapunov < -30.0, "{p:?}");
}

#[test]
fn points_sit_at_cell_middles() {
    let out = compute(&UnitInput {
        iterations: 1,
        transient: 0,
        ..unit(3.0, 4.0, 4)
    });
    let rs: Vec<f64> = out.points.iter().map(|p| p.r).collect();
    assert_eq!(rs, [3.125, 3.375, 3.625, 3.875]);
}

#[test]
fn ln_matches_std_closely() {
    use std::f64::consts::SQRT_2;
    let close = |w: f64| {
        let (ours, std) = (ln(w), w.ln());
        assert!(
            (ours - std).abs() <= 4.0 * f64::EPSILON * std.abs().max(1.0),
            "ln({w}) = {ours}, std says {std}"
        );
    };
    let mut v = 1e-300;
    while v < 1e300 {
        close(v);
        v *= 3.7;
    }
    // Mantissas on both sides of the √2 switch, and near 1 and 2.
    for e in [-900, -1, 0, 1, 900] {
        let scale = 2f64.powi(e);
        for m in [
            1.0,
            1.0 + 1e-12,
            SQRT_2.next_down(),
            SQRT_2,
            SQRT_2.next_up(),
            1.999_999_9,
        ] {
            close(m * scale);
        }
    }
    assert_eq!(ln(1.0), 0.0);
}

#[test]
fn split_is_exact() {
    for v in [1e-300, 0.3, 1.0, 1.5, 7.999, 1e300] {
        let (m, e) = split(v);
        assert!((1.0..2.0).contains(&m));
        assert_eq!(m * 2f64.powi(i32::try_from(e).unwrap()), v);
    }
}

#[test]
fn output_is_one_json_line_and_deterministic() {
    let input = br#"{"r_start":2.8,"r_end":4.0,"steps":50,"iterations":2000,"transient":100}"#;
    let a = run(input).unwrap();
    let b = run(input).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.last(), Some(&b'\n'));
    assert_eq!(a.iter().filter(|&&c| c == b'\n').count(), 1);
    let out: UnitOutput = serde_json::from_slice(&a).unwrap();
    assert_eq!(out.points.len(), 50);
    assert!(out.points.iter().all(|p| p.lyapunov.is_finite()));
}

#[test]
fn scale_multiplies_iterations() {
    let one = br#"{"r_start":3.9,"r_end":3.9,"steps":1,"iterations":3000,"transient":0}"#;
    let three = br#"{"r_start":3.9,"r_end":3.9,"steps":1,"iterations":1000,"transient":0}"#;
    assert_eq!(run(one).unwrap(), run_scaled(three, 3).unwrap());
    let e = run_scaled(three, 1_000_000).unwrap_err();
    assert!(e.contains("iterations 1000000000"), "{e}");
}

#[test]
fn invalid_input_is_refused_with_the_field_named() {
    let cases: [(&[u8], &str); 9] = [
        (b"not json", "not a work unit"),
        (
            br#"{"r_start":3,"r_end":4,"steps":1,"iterations":1}"#,
            "transient",
        ),
        (
            br#"{"r_start":3,"r_end":4,"steps":1,"iterations":1,"transient":0,"x":1}"#,
            "unknown field `x`",
        ),
        (
            br#"{"r_start":-1,"r_end":4,"steps":1,"iterations":1,"transient":0}"#,
            "r_start",
        ),
        (
            br#"{"r_start":3,"r_end":4.5,"steps":1,"iterations":1,"transient":0}"#,
            "r_end",
        ),
        (
            br#"{"r_start":3.5,"r_end":3,"steps":1,"iterations":1,"transient":0}"#,
            "must not exceed",
        ),
        (
            br#"{"r_start":3,"r_end":4,"steps":0,"iterations":1,"transient":0}"#,
            "steps 0",
        ),
        (
            br#"{"r_start":3,"r_end":4,"steps":100001,"iterations":1,"transient":0}"#,
            "steps",
        ),
        (
            br#"{"r_start":3,"r_end":4,"steps":1,"iterations":0,"transient":0}"#,
            "iterations 0",
        ),
    ];
    for (input, needle) in cases {
        let e = run(input).unwrap_err();
        assert!(
            e.contains(needle),
            "{}: {e}",
            String::from_utf8_lossy(input)
        );
    }
}
