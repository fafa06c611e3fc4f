//! What the coordinator thinks of each host: its trust streak for
//! adaptive replication and its daily task quota. Pure rules, no I/O and
//! no clock (times come in as arguments); the [`crate::scheduler`] keeps
//! one [`Standing`] per host and reports changes as store operations.
//!
//! Both follow BOINC. Trust is the count of consecutive valid results
//! (BOINC's `consecutive_valid`): a host below [`TRUST_THRESHOLD`] is
//! untrusted; above it, a unit it receives runs as a single copy with
//! probability `1 - 1/consecutive_valid`, so spot checks keep re-verifying
//! it. Any invalid result, error or timeout sets the streak back to zero.
//! Only results checked against a replica extend the streak: a host cannot
//! vouch for itself with its own single copies.
//!
//! The quota bounds the tasks a host is sent per day (UTC days of the
//! coordinator's clock): it halves on every failure, down to one, and
//! doubles on every valid result, up to the coordinator's maximum, like
//! BOINC's `max_results_day`. A broken or cheating host is throttled to a
//! trickle within a few failures and recovers as soon as it behaves.

/// Valid results in a row before a host is trusted.
pub const TRUST_THRESHOLD: u64 = 10;

const DAY_MS: u64 = 86_400_000;

/// The coordinator's quota policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaPolicy {
    /// Most tasks one core may be sent per day; a host's quota starts at
    /// (and never exceeds) this times its cores.
    pub per_core_per_day: u32,
}

impl Default for QuotaPolicy {
    fn default() -> Self {
        // Generous: tasks may take milliseconds, and an honest host should
        // never meet the cap. What matters is how fast a failing host's
        // quota falls (halving: 1 million to 1 in 20 failures).
        QuotaPolicy {
            per_core_per_day: 1_000_000,
        }
    }
}

impl QuotaPolicy {
    pub fn max_for(&self, cores: u32) -> u32 {
        self.per_core_per_day.saturating_mul(cores.max(1))
    }
}

/// The quota's day (UTC, days since the Unix epoch) `now_ms` falls in.
fn day_of(now_ms: u64) -> u64 {
    now_ms / DAY_MS
}

/// When the quota's day (UTC) that `now_ms` falls in began.
pub fn day_start_ms(now_ms: u64) -> u64 {
    day_of(now_ms) * DAY_MS
}

/// One host as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    /// The volunteer account ('' = anonymous: the host is its own
    /// volunteer).
    pub account: String,
    pub cores: u32,
    pub consecutive_valid: u64,
    /// Tasks the host may be sent per day.
    pub quota: u32,
    /// The day `sent_today` counts (days since the Unix epoch).
    pub day: u64,
    pub sent_today: u32,
    pub banned: bool,
}

impl Standing {
    /// A host never seen before: untrusted, full quota.
    pub fn new(account: String, cores: u32, policy: &QuotaPolicy) -> Standing {
        Standing {
            account,
            cores,
            consecutive_valid: 0,
            quota: policy.max_for(cores),
            day: 0,
            sent_today: 0,
            banned: false,
        }
    }

    /// A host the scheduler knows nothing of: anonymous, one core.
    pub fn anonymous(policy: &QuotaPolicy) -> Standing {
        Standing::new(String::new(), 1, policy)
    }

    /// How many of `want` tasks the host may still be sent today.
    pub fn allowance(&mut self, want: u32, now_ms: u64) -> u32 {
        if self.banned {
            return 0;
        }
        let day = day_of(now_ms);
        if day != self.day {
            self.day = day;
            self.sent_today = 0;
        }
        want.min(self.quota.saturating_sub(self.sent_today))
    }

    /// Whether `sent_today` counts the day `now_ms` falls in.
    pub fn counts_today(&self, now_ms: u64) -> bool {
        self.day == day_of(now_ms)
    }

    /// Sets today's count, as the store counted the tasks sent since
    /// [`day_start_ms`]`(now_ms)`: a restarted coordinator does not start
    /// a host's day afresh.
    pub fn sent_today_from_store(&mut self, sent: u32, now_ms: u64) {
        self.day = day_of(now_ms);
        self.sent_today = sent;
    }

    pub fn sent(&mut self, n: u32) {
        self.sent_today = self.sent_today.saturating_add(n);
    }

    pub fn trusted(&self) -> bool {
        self.consecutive_valid >= TRUST_THRESHOLD
    }

    /// Whether a fresh unit sent to this host may run as a single copy;
    /// `draw` is uniform in `[0, 1)`.
    pub fn single_copy(&self, draw: f64) -> bool {
        self.trusted() && draw < 1.0 - 1.0 / self.consecutive_valid as f64
    }

    /// The host's result agreed with a validated unit's canonical output.
    /// `replicated`: other hosts' results agreed too (not a single copy).
    pub fn valid(&mut self, replicated: bool, policy: &QuotaPolicy) {
        if replicated {
            self.consecutive_valid += 1;
        }
        self.quota = self
            .quota
            .saturating_mul(2)
            .clamp(1, policy.max_for(self.cores));
    }

    /// An invalid result, an error or a timeout.
    pub fn failed(&mut self) {
        self.consecutive_valid = 0;
        self.quota = (self.quota / 2).max(1);
    }
}

/// splitmix64: the small seeded generator behind adaptive replication's
/// draws (and the simulation's), so runs are reproducible from a seed.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> QuotaPolicy {
        QuotaPolicy {
            per_core_per_day: 100,
        }
    }

    #[test]
    fn trust_comes_after_ten_checked_results_and_one_failure_takes_it() {
        let p = policy();
        let mut h = Standing::anonymous(&p);
        for _ in 0..9 {
            h.valid(true, &p);
        }
        assert!(!h.trusted());
        h.valid(false, &p);
        assert!(!h.trusted(), "single copies do not extend the streak");
        h.valid(true, &p);
        assert!(h.trusted());
        assert!(h.single_copy(0.5) && !h.single_copy(0.95));
        h.failed();
        assert!(!h.trusted() && !h.single_copy(0.0));
    }

    #[test]
    fn todays_count_from_the_store_holds_until_the_day_ends() {
        let mut h = Standing::new(String::new(), 1, &policy());
        assert_eq!(h.quota, 100);
        assert!(
            !h.counts_today(3 * DAY_MS + 5),
            "a blank standing counts no day"
        );
        h.sent_today_from_store(99, 3 * DAY_MS + 5);
        assert!(h.counts_today(3 * DAY_MS + 9) && !h.counts_today(4 * DAY_MS));
        assert_eq!(day_start_ms(3 * DAY_MS + 5), 3 * DAY_MS);
        assert_eq!(h.allowance(5, 3 * DAY_MS + 10), 1);
        assert_eq!(h.allowance(5, 4 * DAY_MS), 5, "a new day");
    }

    #[test]
    fn quota_halves_on_failure_doubles_on_success_and_resets_daily() {
        let p = policy();
        let mut h = Standing::new(String::new(), 2, &p);
        assert_eq!(h.quota, 200);
        for _ in 0..10 {
            h.failed();
        }
        assert_eq!(h.quota, 1);
        assert_eq!(h.allowance(5, 0), 1);
        h.sent(1);
        assert_eq!(h.allowance(5, 1000), 0);
        assert_eq!(h.allowance(5, DAY_MS), 1, "a new day");
        h.valid(true, &p);
        h.valid(true, &p);
        assert_eq!(h.quota, 4);
        for _ in 0..20 {
            h.valid(true, &p);
        }
        assert_eq!(h.quota, 200, "capped at the policy's maximum");
        h.banned = true;
        assert_eq!(h.allowance(5, DAY_MS), 0);
    }
}
