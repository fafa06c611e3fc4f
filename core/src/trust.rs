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
//!
//! Identities are free, so a new one starts *young*: its claimed core count
//! is clamped ([`HostPolicy::young_cores`]), its quota starts small
//! ([`HostPolicy::young_per_core_per_day`]) and grows only with valid
//! results. A host is *established* once it is old enough and trusted (see
//! [`Standing::established`]): only established hosts run single copies,
//! and a quorum of young hosts is completed by an established one.

/// Valid results in a row before a host is trusted.
pub const TRUST_THRESHOLD: u64 = 10;

const DAY_MS: u64 = 86_400_000;

/// Most cores any host is taken to have, whatever it claims.
pub const MAX_CORES: u32 = 1024;

/// The coordinator's rules for hosts: quotas and what a new identity may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPolicy {
    /// Most tasks one core may be sent per day; a host's quota never
    /// exceeds this times its cores.
    pub per_core_per_day: u32,
    /// Tasks per core per day a new host starts with; its quota doubles
    /// with every valid result up to `per_core_per_day`.
    pub young_per_core_per_day: u32,
    /// Most cores a young host is taken to have: claiming more gains it
    /// nothing (the hoarding attack claimed `u32::MAX`).
    pub young_cores: u32,
    /// Copies a host may hold unreported, per (clamped) core.
    pub in_flight_per_core: u32,
    /// How old an identity must be (since its first Hello) before it can
    /// be established.
    pub established_age_ms: u64,
    /// When no established host has asked for work for this long, young
    /// hosts may complete each other's quorums (a new grid has no
    /// established hosts at all); audits and repairs catch what slips in.
    pub established_idle_ms: u64,
    /// Validated units re-run on an established host, in parts per
    /// million: a disagreement disputes the row and catches whoever lied.
    pub audit_ppm: u32,
    /// Bytes of output a host may have stored for units not yet validated,
    /// with the largest output reserved for each copy it holds: past it,
    /// it gets no fresh units (see `Scheduler::assign`).
    pub max_stored_bytes: u64,
}

impl Default for HostPolicy {
    fn default() -> Self {
        HostPolicy {
            // Generous: tasks may take milliseconds, and an honest host
            // should never meet the cap. What matters is how fast a failing
            // host's quota falls (halving: 1 million to 1 in 20 failures).
            per_core_per_day: 1_000_000,
            // An honest new host reaches the full quota after about a dozen
            // valid results; a fresh identity alone gets a few hundred tasks.
            young_per_core_per_day: 64,
            young_cores: 4,
            // Enough for a worker's running slots and its work buffer.
            in_flight_per_core: 4,
            established_age_ms: DAY_MS,
            established_idle_ms: 10 * 60 * 1000,
            // 2 %: an honest population pays 0.02 tasks per unit.
            audit_ppm: 20_000,
            // 256 of the largest outputs a task may return (4 MiB).
            max_stored_bytes: 1 << 30,
        }
    }
}

impl HostPolicy {
    pub fn max_for(&self, cores: u32) -> u32 {
        self.per_core_per_day.saturating_mul(cores.max(1))
    }

    /// The quota a host new to this coordinator starts with.
    pub fn start_for(&self, cores: u32) -> u32 {
        self.young_per_core_per_day
            .saturating_mul(cores.max(1))
            .clamp(1, self.max_for(cores))
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
    /// Cores the host claims, clamped to [`MAX_CORES`].
    pub cores: u32,
    /// When the coordinator first heard of this identity (ms since the
    /// Unix epoch); its age decides when it can be established.
    pub first_seen_ms: u64,
    /// The address of its latest connection: later copies of a unit go to
    /// other networks than earlier copies' hosts (see `netgroup`).
    pub addr: Option<std::net::IpAddr>,
    pub consecutive_valid: u64,
    /// Tasks the host may be sent per day.
    pub quota: u32,
    /// The day `sent_today` counts (days since the Unix epoch).
    pub day: u64,
    pub sent_today: u32,
    pub banned: bool,
    /// Some of its single copies' credit waits for a spot check or an
    /// audit of the host to pass.
    pub pending_credit: bool,
    /// Read from the store when the host connected; `false` for the blank
    /// standing the scheduler makes for a host it meets in a unit first
    /// (after a restart), which may hide waiting credit.
    pub loaded: bool,
}

impl Standing {
    /// A host never seen before: untrusted, young, with a new host's quota.
    pub fn new(account: String, cores: u32, policy: &HostPolicy) -> Standing {
        let cores = cores.clamp(1, MAX_CORES);
        Standing {
            account,
            cores,
            first_seen_ms: 0,
            addr: None,
            consecutive_valid: 0,
            quota: policy.start_for(cores.min(policy.young_cores)),
            day: 0,
            sent_today: 0,
            banned: false,
            pending_credit: false,
            loaded: false,
        }
    }

    /// A host the scheduler knows nothing of: anonymous, one core.
    pub fn anonymous(policy: &HostPolicy) -> Standing {
        Standing::new(String::new(), 1, policy)
    }

    /// Old enough and trusted: may run single copies and complete a quorum
    /// of young hosts.
    pub fn established(&self, now_ms: u64, policy: &HostPolicy) -> bool {
        self.trusted() && now_ms.saturating_sub(self.first_seen_ms) >= policy.established_age_ms
    }

    /// The cores the scheduler counts: a young host's claim is clamped.
    pub fn counted_cores(&self, now_ms: u64, policy: &HostPolicy) -> u32 {
        match self.established(now_ms, policy) {
            true => self.cores,
            false => self.cores.min(policy.young_cores),
        }
    }

    /// Most copies the host may hold unreported.
    pub fn in_flight_cap(&self, now_ms: u64, policy: &HostPolicy) -> u32 {
        policy
            .in_flight_per_core
            .saturating_mul(self.counted_cores(now_ms, policy))
            .max(1)
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
    pub fn valid(&mut self, replicated: bool, policy: &HostPolicy) {
        if replicated {
            self.consecutive_valid = self.consecutive_valid.saturating_add(1);
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

    fn policy() -> HostPolicy {
        HostPolicy {
            per_core_per_day: 100,
            young_per_core_per_day: 100,
            ..HostPolicy::default()
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
