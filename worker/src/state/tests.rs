//! Tests of the worker's durable state.

use super::*;
use peergrid_proto::Hash;
use peergrid_proto::signing::{Endorsement, ModuleSignature};
use peergrid_proto::wire::TaskLimits;

fn task(unit: u64) -> Task {
    Task {
        unit,
        job: 1,
        number: unit,
        module: Hash::of(b"module"),
        input: b"input".to_vec(),
        input_ref: None,
        args: vec![],
        limits: TaskLimits {
            memory_bytes: 1 << 20,
            fuel: 1000,
            max_output_bytes: 100,
            wall_ms: 1000,
            metering: peergrid_proto::spec::Metering::Fuel,
        },
        deadline_ms: 99,
        signature: ModuleSignature {
            endorsement: Endorsement {
                researcher_key: String::new(),
                name: String::new(),
                project_signature: String::new(),
            },
            signature: String::new(),
        },
        canonical_nan: false,
    }
}

fn report(unit: u64) -> TaskReport {
    TaskReport {
        unit,
        outcome: Outcome::Success(b"out".to_vec()),
        fuel_used: 7,
        elapsed_ms: 1,
        engine: "e".into(),
        resumed: false,
    }
}

#[test]
fn the_volunteers_pause_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let state = LocalState::open(dir.path()).unwrap();
    assert!(!state.paused().unwrap(), "a new worker is not paused");
    state.set_paused(true).unwrap();
    drop(state);
    let state = LocalState::open(dir.path()).unwrap();
    assert!(state.paused().unwrap());
    state.set_paused(false).unwrap();
    assert!(!LocalState::open(dir.path()).unwrap().paused().unwrap());
    // A pause for a while keeps its end; resume forgets it.
    state.set_pause(true, Some(1234)).unwrap();
    let reopened = LocalState::open(dir.path()).unwrap();
    assert!(reopened.paused().unwrap());
    assert_eq!(reopened.paused_until().unwrap(), Some(1234));
    reopened.set_paused(false).unwrap();
    assert_eq!(reopened.paused_until().unwrap(), None);
}

#[test]
fn tasks_checkpoints_and_reports_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let state = LocalState::open(dir.path()).unwrap();
    state.add_tasks(&[task(1), task(2)], 10).unwrap();
    let cp = Checkpoint {
        state: b"half".to_vec(),
        fuel_used: 500,
    };
    state.save_checkpoint(2, &cp, 11).unwrap();
    state.finish(&report(1), 12).unwrap();
    drop(state);

    let state = LocalState::open(dir.path()).unwrap();
    let tasks = state.tasks().unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(state.task_count().unwrap(), 1);
    assert_eq!(tasks[0].task, task(2));
    assert_eq!(tasks[0].checkpoint, Some(cp));
    assert_eq!(state.pending_reports(10).unwrap(), vec![report(1)]);
    assert_eq!(state.totals(0).unwrap().pending_reports, 1);
    assert_eq!(state.totals(0).unwrap().claimed_fuel, 0);
    state.settle(&[1], &[]).unwrap();
    assert!(state.pending_reports(10).unwrap().is_empty());
    let totals = state.totals(0).unwrap();
    assert_eq!((totals.finished_since, totals.claimed_fuel), (1, 7));
    assert_eq!(state.totals(13).unwrap().finished_since, 0);
    state.give_back(2, 14).unwrap();
    assert!(!state.has_task(2).unwrap());
}

#[test]
fn a_task_given_back_is_told_once_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let state = LocalState::open(dir.path()).unwrap();
    state.add_tasks(&[task(1), task(2), task(3)], 10).unwrap();
    state.give_back(3, 20).unwrap();
    state.give_back(1, 21).unwrap();
    drop(state);

    let state = LocalState::open(dir.path()).unwrap();
    assert_eq!(state.task_count().unwrap(), 1, "given back: no longer held");
    assert_eq!(state.held_units(3).unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(state.held_units(2).unwrap(), None, "more than told");
    assert_eq!(state.pending_returns(10).unwrap(), vec![3, 1]);
    assert_eq!(state.pending_returns(1).unwrap(), vec![3]);
    state.returns_told(&[3]).unwrap();
    assert_eq!(state.pending_returns(10).unwrap(), vec![1]);
}

#[test]
fn the_reason_for_a_fatal_stop_is_kept_until_cleared() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(stopped_for(dir.path()), None, "no state: nothing");
    assert!(!dir.path().join(STATE_FILE).exists(), "and nothing made");
    let state = LocalState::open(dir.path()).unwrap();
    assert_eq!(stopped_for(dir.path()), None);
    state.set_stopped_for(Some("banned")).unwrap();
    drop(state);
    assert_eq!(stopped_for(dir.path()).as_deref(), Some("banned"));
    let state = LocalState::open(dir.path()).unwrap();
    state.set_stopped_for(None).unwrap();
    assert_eq!(stopped_for(dir.path()), None);
}

/// A finished task's report and fetched tasks are kept with their lines
/// in the event log, in order and at their times, across reopening; the
/// uplink's count of pending reports counts reports, not the history.
#[test]
fn a_change_and_its_event_are_kept_together() {
    let dir = tempfile::tempdir().unwrap();
    let state = LocalState::open(dir.path()).unwrap();
    state
        .add_tasks_noting(&[task(1), task(2)], 10, Some(("fetched", "2 task(s)")))
        .unwrap();
    state
        .finish_noting(&report(1), 12, Some(("finished", "unit 1")))
        .unwrap();
    assert_eq!(state.pending_report_count().unwrap(), 1);
    drop(state);
    let events = events::read_events(dir.path(), 10).unwrap();
    let said: Vec<(&str, &str, u64)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.message.as_str(), e.at_ms))
        .collect();
    assert_eq!(
        said,
        [("fetched", "2 task(s)", 10), ("finished", "unit 1", 12)]
    );
    let state = LocalState::open(dir.path()).unwrap();
    assert_eq!(state.task_count().unwrap(), 1);
    assert_eq!(state.pending_reports(10).unwrap(), vec![report(1)]);
    state.settle(&[1], &[]).unwrap();
    assert_eq!(state.pending_report_count().unwrap(), 0);
}
