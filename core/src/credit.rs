//! Credit: pure arithmetic with the clock passed in, tested without a store.
//!
//! **Unit.** One credit is one unit of wasmtime fuel, roughly one wasm
//! instruction. A validated unit grants its (agreed) fuel to every host in
//! its agreeing set: credit cannot be inflated by one host, because a
//! copy whose fuel differs disagrees and is not validated (see `quorum`).
//!
//! **Recent average credit** follows BOINC's RAC: credit per day,
//! exponentially weighted with a seven-day half-life. A host that earns `r`
//! credit a day for many weeks has a recent average of about `r`; one that
//! stops sees it halve every week. As a formula, seen at `now`:
//! `ln2/7 · Σ fuel · 2^(−age/7 days)` over the host's grants, where a
//! grant stamped after `now` (clock skew) has age 0.
//!
//! The store keeps one [`CreditTally`] per host, updated in the transaction
//! that writes each dataset row, so pages read credit in O(hosts) however
//! large the dataset grows. [`Credit::grant`] is the same sum computed grant
//! by grant, the reference the tally is tested against.

use serde::Serialize;

/// Half-life of the recent average: seven days.
pub const HALF_LIFE_MS: f64 = 7.0 * DAY_MS;
const DAY_MS: f64 = 86_400_000.0;
/// Converts decayed fuel into a per-day rate whose steady state is the daily
/// credit: ln2 / (half-life in days).
const PER_DAY: f64 = std::f64::consts::LN_2 / (HALF_LIFE_MS / DAY_MS);

/// The weight, `2^(−age/half-life)`, of a grant `age_ms` old.
fn decay(age_ms: u64) -> f64 {
    (-(age_ms as f64) / HALF_LIFE_MS).exp2()
}

/// Credit of one host (or volunteer), as pages show it.
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
        self.recent += fuel as f64 * decay(now_ms.saturating_sub(at_ms)) * PER_DAY;
    }

    /// Adds another host's credit (a volunteer's hosts).
    pub fn add(&mut self, other: Credit) {
        self.total = self.total.saturating_add(other.total);
        self.recent += other.recent;
    }
}

/// A host's credit as the store keeps it: the total, and the recent average
/// as of the newest grant (`at_ms`), decayed to the moment it is read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CreditTally {
    pub total: u64,
    /// Recent average (fuel per day) as of `at_ms`.
    pub recent: f64,
    /// When the newest grant was made (0: never).
    pub at_ms: u64,
}

impl CreditTally {
    /// Adds a grant of `fuel` validated at `at_ms`, in any order.
    pub fn grant(&mut self, fuel: u64, at_ms: u64) {
        self.total = self.total.saturating_add(fuel);
        let weight = fuel as f64 * PER_DAY;
        if at_ms >= self.at_ms {
            self.recent = self.recent * decay(at_ms - self.at_ms) + weight;
            self.at_ms = at_ms;
        } else {
            self.recent += weight * decay(self.at_ms - at_ms);
        }
    }

    /// Takes back a grant made with [`CreditTally::grant`] (a dataset row
    /// replaced by another).
    pub fn revoke(&mut self, fuel: u64, at_ms: u64) {
        self.total = self.total.saturating_sub(fuel);
        let weight = fuel as f64 * PER_DAY * decay(self.at_ms.saturating_sub(at_ms));
        // Rounding must not leave a host with a negative average.
        self.recent = (self.recent - weight).max(0.0);
    }

    /// The credit seen at `now_ms`. Equal, up to rounding, to
    /// [`Credit::grant`] over the same grants when none is stamped after
    /// `now_ms`; later ones count as new.
    pub fn at(&self, now_ms: u64) -> Credit {
        Credit {
            total: self.total,
            recent: self.recent * decay(now_ms.saturating_sub(self.at_ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DAY: u64 = 86_400_000;

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
        let mut tally = CreditTally::default();
        let mut t = 0;
        while t <= now {
            c.grant(1000, t, now);
            tally.grant(1000, t);
            t += DAY / 24;
        }
        assert!(
            (c.recent - 24_000.0).abs() / 24_000.0 < 0.01,
            "{}",
            c.recent
        );
        assert!((tally.at(now).recent - c.recent).abs() / c.recent < 1e-9);
    }

    #[test]
    fn totals_saturate() {
        let mut c = Credit::default();
        c.grant(u64::MAX, 0, 0);
        c.grant(5, 0, 0);
        assert_eq!(c.total, u64::MAX);
        let mut t = CreditTally::default();
        t.grant(u64::MAX, 0);
        t.grant(5, 0);
        assert_eq!(t.total, u64::MAX);
    }

    proptest! {
        /// The tally, updated grant by grant in any order of time, equals
        /// the sum over all grants made at reading time; revoking a grant
        /// leaves what the other grants give.
        #[test]
        fn tally_equals_the_sum_over_grants(
            grants in prop::collection::vec((0u64..10_000_000_000, 0u64..60 * DAY), 1..60),
            later in 0u64..30 * DAY,
            revoked in any::<prop::sample::Index>(),
        ) {
            let now = grants.iter().map(|g| g.1).max().unwrap_or(0) + later;
            let mut tally = CreditTally::default();
            let mut sum = Credit::default();
            for &(fuel, at) in &grants {
                tally.grant(fuel, at);
                sum.grant(fuel, at, now);
            }
            let seen = tally.at(now);
            prop_assert_eq!(seen.total, sum.total);
            prop_assert!((seen.recent - sum.recent).abs() <= 1e-9 * sum.recent.max(1.0));

            let (fuel, at) = grants[revoked.index(grants.len())];
            tally.revoke(fuel, at);
            let mut rest = Credit::default();
            let mut skipped = false;
            for &(f, a) in &grants {
                if !skipped && (f, a) == (fuel, at) {
                    skipped = true;
                    continue;
                }
                rest.grant(f, a, now);
            }
            let seen = tally.at(now);
            prop_assert_eq!(seen.total, rest.total);
            prop_assert!((seen.recent - rest.recent).abs() <= 1e-6 * sum.recent.max(1.0));
        }
    }
}
