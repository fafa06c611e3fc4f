//! The feeder's side of [`Grid`]: new jobs, and loading unfinished and
//! reopened units from the store into the scheduler's window.

use anyhow::{Context, Result};
use peergrid_os::now_ms;
use peergrid_proto::spec::JobSubmission;
use peergrid_proto::wire::JobId;

use super::{Grid, WINDOW};

impl Grid {
    /// Stores a validated submission and wakes the feeder.
    pub async fn submit(&self, job: JobSubmission) -> Result<JobId> {
        let store = self.store.clone();
        let id = tokio::task::spawn_blocking(move || store.create_job(&job, now_ms()))
            .await
            .context("job submission task")??;
        self.feed.notify_one();
        Ok(id)
    }

    /// Loads unfinished units into the scheduler's window until it is full.
    pub async fn refill(&self) -> Result<()> {
        loop {
            let (after, room) = {
                let w = self.window();
                (
                    w.loaded_upto,
                    WINDOW.saturating_sub(w.scheduler.active_units()),
                )
            };
            if room < WINDOW / 2 {
                return Ok(());
            }
            let store = self.store.clone();
            let limit = room.min(10_000);
            let bytes_below = self.inputs_inline_below();
            let (units, jobs, stored_upto) = tokio::task::spawn_blocking(move || {
                let stored_upto = store.max_unit_id()?;
                let units = store.load_active_units(after, limit, bytes_below)?;
                let mut job_ids: Vec<JobId> = units.iter().map(|u| u.job).collect();
                job_ids.dedup();
                let mut jobs = Vec::new();
                for id in job_ids {
                    jobs.extend(store.job_info(id)?);
                }
                anyhow::Ok((units, jobs, stored_upto))
            })
            .await
            .context("feeder task")??;
            let mut w = self.window();
            w.stored_upto = w.stored_upto.max(stored_upto);
            // A short page reached the end: every active unit up to
            // `stored_upto` (read first) is loaded, so a report on any other
            // unit up to it (finished, failed, cancelled) is refused rather
            // than left waiting for a load that never comes.
            if units.len() < limit {
                w.loaded_upto = w.loaded_upto.max(stored_upto);
            }
            if units.is_empty() {
                return Ok(());
            }
            let now = now_ms();
            for job in jobs {
                if !w.scheduler.has_job(job.id) {
                    w.scheduler.add_job(job);
                }
            }
            for unit in units {
                w.loaded_upto = w.loaded_upto.max(unit.id);
                w.scheduler.load(unit, now);
            }
            let ops = w.scheduler.take_ops();
            if !ops.is_empty() {
                self.writer.submit_detached(ops);
            }
        }
    }

    /// Loads units that a repair or a dispute reopened (their dataset row
    /// moved to the history) back into the window, for fresh copies.
    pub async fn reload_reopened(&self) -> Result<()> {
        loop {
            let after = self.window().reopened_upto;
            let store = self.store.clone();
            let bytes_below = self.inputs_inline_below();
            let (units, jobs) = tokio::task::spawn_blocking(move || {
                let units = store.load_reopened_units(after, 10_000, bytes_below)?;
                let mut job_ids: Vec<JobId> = units.iter().map(|(_, u)| u.job).collect();
                job_ids.sort_unstable();
                job_ids.dedup();
                let mut jobs = Vec::new();
                for id in job_ids {
                    jobs.extend(store.job_info(id)?);
                }
                anyhow::Ok((units, jobs))
            })
            .await
            .context("feeder task")??;
            if units.is_empty() {
                return Ok(());
            }
            let now = now_ms();
            let mut w = self.window();
            for job in jobs {
                if !w.scheduler.has_job(job.id) {
                    w.scheduler.add_job(job);
                }
            }
            for (seq, unit) in units {
                w.reopened_upto = w.reopened_upto.max(seq);
                // Units past `loaded_upto` come with the next refill.
                if unit.id <= w.loaded_upto {
                    w.scheduler.load(unit, now);
                }
            }
            let ops = w.scheduler.take_ops();
            if !ops.is_empty() {
                self.writer.submit_detached(ops);
            }
        }
    }
}
