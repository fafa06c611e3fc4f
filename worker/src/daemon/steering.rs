//! How the daemon is watched and steered while it runs: the `status` view
//! (the control socket and the progress bars), `pause` and `resume` from
//! the control socket, and the governor loop that samples the machine
//! every second and publishes whether computing is suspended.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use peergrid_os::{lock, now_ms};

use super::exchange_rules::Winding;
use super::run_rules;
use super::{Shared, Worker, local_midnight_ms, note};
use crate::control::{ControlRequest, RunningTask, Status};
use crate::governor::{Monitor, ResourceGovernor, Sample};
use crate::state::LocalState;

impl Worker {
    /// What `status` shows, read afresh at each call.
    pub(super) fn status_fn(&self) -> Arc<dyn Fn() -> Result<Status> + Send + Sync> {
        let shared = self.shared.clone();
        let state = self.state.clone();
        let coordinator = self.config.join.address.clone();
        let source = self.config.prefs_source.clone();
        Arc::new(move || {
            let live = shared.live();
            let totals = state.totals(local_midnight_ms())?;
            let last_day = state.claimed_fuel_since(now_ms().saturating_sub(86_400_000))?;
            let running: Vec<RunningTask> = lock(&shared.running)
                .values()
                .map(|r| {
                    let running = r.started.elapsed();
                    RunningTask {
                        unit: r.unit,
                        job: r.job,
                        progress: r.progress(),
                        running_secs: running.as_secs(),
                        eta_secs: r.eta_secs(),
                        resumed: r.resumed,
                    }
                })
                .collect();
            // Read from the state, not from the slots' last pass, which a
            // task that just stopped or arrived has not reached yet.
            let queued = (totals.held_tasks as usize).saturating_sub(running.len());
            Ok(Status {
                coordinator: coordinator.clone(),
                connection: lock(&shared.connection).clone(),
                permanent_error: lock(&shared.permanent_error).clone(),
                suspended: lock(&shared.suspension).as_ref().map(|s| s.to_string()),
                paused_by_user: shared.user_paused.load(Ordering::Relaxed),
                pause_ends_in_secs: match shared.paused_until_ms.load(Ordering::Relaxed) {
                    0 => None,
                    until => Some(until.saturating_sub(now_ms()).div_ceil(1000)),
                },
                slots: live.slots,
                cpu_time_percent: live.prefs.cpu_time_percent,
                preferences_file: source.as_ref().map(|s| s.path.display().to_string()),
                set_by_flags: source
                    .as_ref()
                    .map(|s| s.overrides.given().iter().map(|k| k.to_string()).collect())
                    .unwrap_or_default(),
                winding_down: shared.winding().describe().map(str::to_string),
                running,
                queued,
                pending_uploads: totals.pending_reports,
                results_today: totals.finished_since,
                claimed_credit_fuel: totals.claimed_fuel,
                claimed_credit_fuel_last_day: last_day,
            })
        })
    }

    /// Answers the control socket: `status`, or `pause` and `resume`
    /// (recorded in the state, so they outlive a restart), then the status.
    pub(super) fn control_handler(
        &self,
    ) -> Arc<dyn Fn(ControlRequest) -> Result<Status> + Send + Sync> {
        let status = self.status_fn();
        let shared = self.shared.clone();
        let state = self.state.clone();
        let source = self.config.prefs_source.clone();
        Arc::new(move |req| {
            match req {
                ControlRequest::Status => {}
                ControlRequest::Reload => match &source {
                    Some(source) => {
                        super::preferences::apply(source, &shared, &state)?;
                    }
                    None => bail!("this worker reads no preferences file (no config folder)"),
                },
                ControlRequest::Pause
                | ControlRequest::PauseFor { .. }
                | ControlRequest::Resume => {
                    let pause = req != ControlRequest::Resume;
                    let until = match req {
                        ControlRequest::PauseFor { secs } => {
                            Some(now_ms().saturating_add(secs.saturating_mul(1000)))
                        }
                        _ => None,
                    };
                    state
                        .set_pause(pause, until)
                        .context("recording the pause in the worker's state")?;
                    shared
                        .paused_until_ms
                        .store(until.unwrap_or(0), Ordering::Relaxed);
                    shared.set_user_paused(pause);
                    let said = match (pause, until) {
                        (true, Some(until)) => format!(
                            "paused by the volunteer for {} s",
                            until.saturating_sub(now_ms()).div_ceil(1000)
                        ),
                        (true, None) => "paused by the volunteer".to_string(),
                        (false, _) => "resumed by the volunteer".to_string(),
                    };
                    tracing::info!("{said}");
                    note(&state, if pause { "paused" } else { "resumed" }, said);
                    shared.wake_core.notify_one();
                }
                ControlRequest::Abort { unit } => {
                    let running = lock(&shared.running).contains_key(&unit);
                    if !running && !state.has_task(unit)? {
                        bail!(
                            "this worker holds no task of unit {unit}; `peergrid-worker status` lists the running ones"
                        );
                    }
                    tracing::info!(unit, "aborted by the volunteer; giving the task back");
                    note(&state, "aborted", format!("unit {unit}, by the volunteer"));
                    lock(&shared.aborts).push(unit);
                    shared.wake_core.notify_one();
                }
                ControlRequest::NoMoreWork => {
                    // What the worker holds when asked: the wind-down may
                    // give a task back before a later snapshot is taken.
                    let held = status();
                    tracing::info!("no more work: finishing the held tasks, then stopping");
                    note(
                        &state,
                        "no more work",
                        "finishing the held tasks, then stopping",
                    );
                    shared.wind_down(Winding::NoMoreWork);
                    return held.map(|held| winding(held, &shared));
                }
                ControlRequest::Detach => {
                    let held = status();
                    note(
                        &state,
                        "detaching",
                        "giving back held work, then forgetting the project",
                    );
                    tracing::info!(
                        "detaching: giving back the held tasks, reporting finished results, then forgetting the project"
                    );
                    shared.wind_down(Winding::Detach);
                    return held.map(|held| winding(held, &shared));
                }
            }
            status()
        })
    }
}

/// A status taken before a wind-down began, marked as winding down.
fn winding(held: Status, shared: &Shared) -> Status {
    Status {
        winding_down: shared.winding().describe().map(str::to_string),
        ..held
    }
}

/// Samples the machine every second and publishes the governor's
/// decision; ends a `pause --for` when its time is up.
pub(super) async fn govern(shared: Arc<Shared>, state: Arc<LocalState>) {
    let mut governor = ResourceGovernor::new(&shared.live().prefs);
    let mut version = shared.live_version.load(Ordering::Relaxed);
    let mut monitor = Monitor::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let now_version = shared.live_version.load(Ordering::Relaxed);
        if now_version != version {
            version = now_version;
            governor.set_preferences(&shared.live().prefs);
        }
        let until = shared.paused_until_ms.load(Ordering::Relaxed);
        let paused = shared.user_paused.load(Ordering::Relaxed);
        if run_rules::pause_over(paused, (until != 0).then_some(until), now_ms()) {
            match state.set_paused(false) {
                Ok(()) => {
                    shared.paused_until_ms.store(0, Ordering::Relaxed);
                    shared.set_user_paused(false);
                    tracing::info!("the volunteer's pause is over; resuming");
                    note(&state, "resumed", "the volunteer's pause is over");
                }
                Err(e) => tracing::warn!("cannot end the pause in the worker's state: {e:#}"),
            }
        }
        let sample = Sample {
            non_grid_cpu_percent: monitor.non_grid_cpu_percent(),
            on_battery: monitor.on_battery(),
            local_time: chrono::Local::now().time(),
        };
        let decision = governor.update(
            sample,
            shared.user_paused.load(Ordering::Relaxed),
            Instant::now(),
        );
        shared.memory_budget.store(
            governor.memory_budget(monitor.total_memory()).max(1),
            Ordering::Relaxed,
        );
        let mut current = lock(&shared.suspension);
        let changed = run_rules::suspension_changed(&current, &decision);
        if changed {
            match &decision {
                Some(why) => {
                    tracing::info!("suspending: {why}");
                    note(&state, "suspended", why.to_string());
                }
                None => {
                    tracing::info!("resuming computing");
                    note(&state, "resumed", "computing again");
                }
            }
        }
        *current = decision;
        drop(current);
        if changed {
            shared.wake_core.notify_one();
        }
    }
}
