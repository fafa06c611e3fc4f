use super::*;

const MIB: u64 = 1024 * 1024;
const SEC: Duration = Duration::from_secs(1);

fn tick() -> Tick {
    Tick {
        aborted: false,
        stopping_for: None,
        uses_sdk: false,
        saved_for_stop: false,
        suspended: false,
        ran: Duration::ZERO,
    }
}

fn full_speed() -> DutyCycle {
    DutyCycle { percent: 100 }
}

#[test]
fn a_held_task_is_given_back_only_when_it_cannot_start_in_time() {
    let wall = 60_000;
    let due = deadline::copy_deadline_ms(1_000, wall);
    assert!(!must_give_back(1_000, due, wall, false));
    assert!(must_give_back(due, due, wall, false));
    // A running task is never given back: its report is on the way.
    assert!(!must_give_back(due, due, wall, true));
    // A wall-clock budget past the longest deadline counts as the longest.
    let now = 1_000;
    let due = now + MAX_WALL_MS + 3_600_000;
    assert!(!must_give_back(now, due, u64::MAX, false));
}

#[test]
fn task_memory_is_the_smallest_of_job_cap_bound_and_budget() {
    assert_eq!(task_memory(64 * MIB, None, u64::MAX), 64 * MIB);
    assert_eq!(task_memory(64 * MIB, Some(32), u64::MAX), 32 * MIB);
    assert_eq!(task_memory(64 * MIB, Some(128), 16 * MIB), 16 * MIB);
    assert_eq!(task_memory(u64::MAX, None, u64::MAX), MAX_TASK_MEMORY);
    // A huge cap does not overflow.
    assert_eq!(task_memory(8 * MIB, Some(u64::MAX), u64::MAX), 8 * MIB);
}

#[test]
fn a_task_fits_the_budget_next_to_the_running_ones_or_alone() {
    assert!(memory_fits(0, 10 * MIB, 100 * MIB));
    assert!(memory_fits(60 * MIB, 40 * MIB, 100 * MIB));
    assert!(!memory_fits(60 * MIB, 41 * MIB, 100 * MIB));
    // Alone it always runs (its memory is capped by the budget anyway).
    assert!(memory_fits(0, u64::MAX, 1));
    // Sums saturate rather than wrap round to a small number.
    assert!(!memory_fits(1, u64::MAX, u64::MAX - 1));
}

#[test]
fn limits_are_bounded_by_the_protocol() {
    let limits = TaskLimits {
        memory_bytes: u64::MAX,
        fuel: 12_345,
        max_output_bytes: u64::MAX,
        wall_ms: u64::MAX,
        metering: peergrid_proto::spec::Metering::Fuel,
    };
    let bounded = bounded_limits(limits, 32 * MIB);
    assert_eq!(
        bounded,
        TaskLimits {
            memory_bytes: 32 * MIB,
            fuel: 12_345,
            max_output_bytes: MAX_OUTPUT as u64,
            wall_ms: MAX_WALL_MS,
            metering: peergrid_proto::spec::Metering::Fuel,
        }
    );
    let small = TaskLimits {
        memory_bytes: MIB,
        fuel: 1,
        max_output_bytes: 10,
        wall_ms: 1_000,
        metering: peergrid_proto::spec::Metering::Fuel,
    };
    assert_eq!(bounded_limits(small, MIB), small);
}

#[test]
fn a_task_without_the_sdk_stops_at_once_on_shutdown() {
    let t = Tick {
        stopping_for: Some(Duration::ZERO),
        // Shutdown wins over a suspension and the duty cycle.
        suspended: true,
        ran: 10 * SEC,
        ..tick()
    };
    assert_eq!(step(t, DutyCycle { percent: 50 }), Step::Stop);
}

#[test]
fn an_sdk_task_runs_on_to_its_checkpoint_within_the_grace() {
    let t = Tick {
        stopping_for: Some(Duration::ZERO),
        uses_sdk: true,
        suspended: true,
        ran: 10 * SEC,
        ..tick()
    };
    // No suspension, no nap: it is to reach its checkpoint quickly.
    assert_eq!(step(t, DutyCycle { percent: 10 }), Step::Run);
    let late = Tick {
        stopping_for: Some(STOP_GRACE - Duration::from_millis(1)),
        ..t
    };
    assert_eq!(step(late, full_speed()), Step::Run);
    let past = Tick {
        stopping_for: Some(STOP_GRACE),
        ..t
    };
    assert_eq!(step(past, full_speed()), Step::Stop);
    let saved = Tick {
        saved_for_stop: true,
        ..t
    };
    assert_eq!(step(saved, full_speed()), Step::Stop);
}

#[test]
fn a_suspension_holds_the_task_and_the_duty_cycle_naps_it() {
    let suspended = Tick {
        suspended: true,
        ..tick()
    };
    assert_eq!(step(suspended, full_speed()), Step::AwaitResume);
    let half = DutyCycle { percent: 50 };
    assert_eq!(step(tick(), half), Step::Run);
    let ran = Tick {
        ran: SEC / 2,
        ..tick()
    };
    assert_eq!(step(ran, half), Step::Nap(SEC / 2));
    let ran_long = Tick { ran: SEC, ..tick() };
    assert_eq!(step(ran_long, full_speed()), Step::Run);
}

#[test]
fn checkpoints_are_due_per_interval_and_always_on_shutdown() {
    let interval = 60 * SEC;
    assert!(!checkpoint_due(false, 59 * SEC, interval));
    assert!(checkpoint_due(false, 60 * SEC, interval));
    assert!(checkpoint_due(true, Duration::ZERO, interval));
}

#[test]
fn only_suspending_or_resuming_is_a_change() {
    let busy = |p| {
        Some(Suspension::MachineBusy {
            non_grid_cpu_percent: p,
        })
    };
    assert!(suspension_changed(&None, &busy(50.0)));
    assert!(suspension_changed(&Some(Suspension::OnBattery), &None));
    assert!(!suspension_changed(&None, &None));
    assert!(!suspension_changed(&busy(50.0), &busy(80.0)));
    assert!(!suspension_changed(
        &Some(Suspension::OnBattery),
        &Some(Suspension::OutsideTimeWindows)
    ));
}

#[test]
fn an_aborted_task_stops_at_once_whatever_else_holds() {
    let aborted = Tick {
        aborted: true,
        ..tick()
    };
    assert_eq!(step(aborted, DutyCycle { percent: 100 }), Step::Stop);
    // Not held by a suspension, a nap, or a checkpoint to wait for.
    let t = Tick {
        suspended: true,
        uses_sdk: true,
        stopping_for: Some(Duration::ZERO),
        ran: 10 * SEC,
        ..aborted
    };
    assert_eq!(step(t, DutyCycle { percent: 10 }), Step::Stop);
}

#[test]
fn a_pause_for_a_while_ends_by_itself_and_only_then() {
    assert!(!pause_over(true, Some(1_000), 999));
    assert!(pause_over(true, Some(1_000), 1_000));
    assert!(pause_over(true, Some(1_000), 5_000), "also after a restart");
    assert!(!pause_over(true, None, u64::MAX), "pause: until resume");
    assert!(!pause_over(false, Some(1_000), 5_000), "resumed already");
}

#[test]
fn eta_from_progress_and_time_run() {
    assert_eq!(eta_secs(0.0, Some(0.25), 60 * SEC), Some(180));
    assert_eq!(eta_secs(0.0, Some(0.5), 60 * SEC), Some(60));
    assert_eq!(
        eta_secs(0.0, Some(0.001), Duration::from_millis(300)),
        Some(300)
    );
    assert_eq!(eta_secs(0.0, Some(1.0), 60 * SEC), Some(0));
    assert_eq!(
        eta_secs(0.0, Some(2.0), 60 * SEC),
        Some(0),
        "a module overshooting 1"
    );
    assert_eq!(eta_secs(0.0, Some(0.0), 60 * SEC), None, "no pace yet");
    assert_eq!(
        eta_secs(0.0, Some(0.5), Duration::ZERO),
        None,
        "no time yet"
    );
    assert_eq!(eta_secs(0.0, None, 60 * SEC), None, "no SDK");
    assert_eq!(eta_secs(0.0, Some(f64::NAN), 60 * SEC), None);
    assert_eq!(eta_secs(0.0, Some(-0.5), 60 * SEC), None);
}

/// A task resumed at half done that then did a tenth in 10 s has 40 s
/// left, not the 6.7 s that counting the first half as this run's pace
/// would give.
#[test]
fn a_resumed_task_is_paced_from_its_first_report_after_the_restart() {
    assert_eq!(eta_secs(0.5, Some(0.6), 10 * SEC), Some(40));
    assert_eq!(eta_secs(0.5, Some(0.5), 10 * SEC), None, "no pace yet");
}
