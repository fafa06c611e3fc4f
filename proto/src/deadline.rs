//! When a copy is due, and whether a worker can still start it in time.
//!
//! The coordinator and the worker share one rule so that an honest host is
//! never charged a timeout the grid's own scheduling caused: a copy's
//! deadline covers one wall-clock limit of waiting in the worker's buffer
//! (behind a task that runs to its own limit), one of running, and a margin
//! for the report; a worker starts a task only while its whole wall-clock
//! limit and the margin still fit before the deadline, and gives back the
//! tasks that no longer do.

/// Time allowed between a task's end and its report reaching the
/// coordinator.
pub const REPORT_MARGIN_MS: u64 = 5_000;

/// The deadline of a copy sent at `sent_ms` whose run may take `wall_ms`:
/// two runs and two margins, one for the task ahead of it in the buffer
/// (stopped a little after its limit) and one for its own report.
pub fn copy_deadline_ms(sent_ms: u64, wall_ms: u64) -> u64 {
    sent_ms
        .saturating_add(wall_ms.saturating_mul(2))
        .saturating_add(2 * REPORT_MARGIN_MS)
}

/// Whether a task due at `deadline_ms` whose run may take `wall_ms` can
/// still start at `now_ms` and report in time.
pub fn can_start(now_ms: u64, deadline_ms: u64, wall_ms: u64) -> bool {
    now_ms
        .saturating_add(wall_ms)
        .saturating_add(REPORT_MARGIN_MS)
        <= deadline_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_held_behind_one_full_run_still_starts_in_time() {
        let wall = 60_000;
        let deadline = copy_deadline_ms(1_000, wall);
        // Waited behind a task that ran to its limit: starts, and its own
        // full run plus the report fits.
        assert!(can_start(1_000 + wall, deadline, wall));
        assert!(can_start(1_000 + wall + REPORT_MARGIN_MS, deadline, wall));
        // Behind two such tasks it cannot: it is given back.
        assert!(!can_start(1_000 + 2 * wall, deadline, wall));
    }

    #[test]
    fn huge_values_saturate() {
        assert_eq!(copy_deadline_ms(u64::MAX - 1, u64::MAX), u64::MAX);
        assert!(!can_start(u64::MAX - 1, u64::MAX - 1, 1));
    }
}
