//! How pages show credit. The arithmetic is in `crate::credit`; the store
//! keeps each host's tally (`store::HostSummary::credit`).

/// Fuel as Gfuel for display.
pub fn gfuel(fuel: f64) -> String {
    let g = fuel / 1e9;
    if g == 0.0 {
        "0".into()
    } else if g >= 100.0 {
        format!("{g:.0}")
    } else if g >= 0.01 {
        format!("{g:.2}")
    } else {
        format!("{g:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gfuel_formats() {
        assert_eq!(gfuel(0.0), "0");
        assert_eq!(gfuel(2.5e9), "2.50");
        assert_eq!(gfuel(1.234e12), "1234");
        assert_eq!(gfuel(1e6), "1.00e-3");
    }
}
