//! Credit and trust: pure functions over dataset rows and copy verdicts,
//! with the clock passed in, so the rules are tested without a store.
//!
//! **Unit.** One credit is one unit of wasmtime fuel, roughly one wasm
//! instruction. A validated unit grants its (agreed) fuel to every host in
//! its agreeing set: credit cannot be inflated by one host, because a
//! copy whose fuel differs disagrees and is not validated (see `quorum`).
//! Pages show credit in Gfuel (10⁹ fuel).
//!
//! **Recent average credit** follows BOINC's RAC: credit per day,
//! exponentially weighted with a seven-day half-life, computed at page
//! time from the grants' `validated_ms`. A host that earns `r` credit a
//! day for many weeks has a recent average of about `r`; one that stops
//! sees it halve every week.

use std::collections::HashMap;

use serde::Serialize;

use crate::store::CreditGrant;

/// Half-life of the recent average: seven days.
pub const HALF_LIFE_MS: f64 = 7.0 * DAY_MS;
const DAY_MS: f64 = 86_400_000.0;

/// Credit of one host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Credit {
    /// Total fuel granted, saturating at `u64::MAX`.
    pub total: u64,
    /// Recent average, credit (fuel) per day.
    pub recent: f64,
}

impl Credit {
    /// Adds one grant of `fuel` validated at `at_ms`, seen from `now_ms`.
    /// Grants stamped in the future (clock skew) count as new.
    pub fn grant(&mut self, fuel: u64, at_ms: u64, now_ms: u64) {
        self.total = self.total.saturating_add(fuel);
        let age = now_ms.saturating_sub(at_ms) as f64;
        // Σ fuel·2^(-age/T) is the decayed credit; times ln2/T (per day)
        // it is a rate whose steady-state value is the daily credit.
        let per_day = std::f64::consts::LN_2 / (HALF_LIFE_MS / DAY_MS);
        self.recent += fuel as f64 * (-age / HALF_LIFE_MS).exp2() * per_day;
    }
}

/// Credit by host (hex public key), summed over dataset pages.
#[derive(Debug, Default)]
pub struct Ledger {
    pub by_host: HashMap<String, Credit>,
}

impl Ledger {
    pub fn add(&mut self, grant: &CreditGrant, now_ms: u64) {
        for host in &grant.hosts {
            self.by_host.entry(host.to_lowercase()).or_default().grant(
                grant.fuel,
                grant.validated_ms,
                now_ms,
            );
        }
    }

    pub fn get(&self, host_hex: &str) -> Credit {
        self.by_host.get(host_hex).copied().unwrap_or_default()
    }
}

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

    const DAY: u64 = 86_400_000;

    fn grant(unit: u64, fuel: u64, at: u64, hosts: &[&str]) -> CreditGrant {
        CreditGrant {
            job: 1,
            unit,
            fuel,
            validated_ms: at,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn every_agreeing_host_gets_the_units_fuel_once() {
        let mut l = Ledger::default();
        l.add(&grant(1, 100, 0, &["aa", "bb"]), 0);
        l.add(&grant(2, 50, 0, &["bb", "cc"]), 0);
        assert_eq!(l.get("aa").total, 100);
        assert_eq!(l.get("bb").total, 150);
        assert_eq!(l.get("cc").total, 50);
        assert_eq!(l.get("dd"), Credit::default());
    }

    #[test]
    fn recent_average_halves_every_seven_days() {
        let mut fresh = Credit::default();
        fresh.grant(1_000_000, 10 * DAY, 10 * DAY);
        let mut week_old = Credit::default();
        week_old.grant(1_000_000, 3 * DAY, 10 * DAY);
        assert!((week_old.recent / fresh.recent - 0.5).abs() < 1e-9);
        assert_eq!(fresh.total, week_old.total);
        // A grant from the future (clock skew) counts as fresh, not more.
        let mut future = Credit::default();
        future.grant(1_000_000, 11 * DAY, 10 * DAY);
        assert_eq!(future.recent, fresh.recent);
    }

    #[test]
    fn steady_earning_converges_to_the_daily_rate() {
        // 1000 fuel an hour (24 000 a day) for 20 weeks.
        let now = 140 * DAY;
        let mut c = Credit::default();
        let mut t = 0;
        while t <= now {
            c.grant(1000, t, now);
            t += DAY / 24;
        }
        assert!(
            (c.recent - 24_000.0).abs() / 24_000.0 < 0.01,
            "{}",
            c.recent
        );
    }

    #[test]
    fn total_saturates() {
        let mut c = Credit::default();
        c.grant(u64::MAX, 0, 0);
        c.grant(5, 0, 0);
        assert_eq!(c.total, u64::MAX);
    }

    #[test]
    fn gfuel_formats() {
        assert_eq!(gfuel(0.0), "0");
        assert_eq!(gfuel(2.5e9), "2.50");
        assert_eq!(gfuel(1.234e12), "1234");
        assert_eq!(gfuel(1e6), "1.00e-3");
    }
}
