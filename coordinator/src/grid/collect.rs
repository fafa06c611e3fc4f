//! Blob garbage collection: uploads no job claimed within a grace period
//! (a submission that never came, or one refused after its upload) are
//! deleted from the store and from the published folder.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use peergrid_os::now_ms;

use super::Grid;
use crate::metrics;

/// Loose uploads deleted per transaction.
const PAGE: usize = 1024;

impl Grid {
    /// Deletes every loose upload older than `grace` that nothing names,
    /// from the store and the published folder; returns how many.
    pub async fn collect_loose_blobs(&self, grace: Duration) -> Result<u64> {
        let mut collected = 0;
        loop {
            let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
            let before = now_ms().saturating_sub(grace_ms);
            let store = self.store.clone();
            let publisher = self.publisher().cloned();
            let page = {
                let _alone = self.blob_gate.write().await;
                tokio::task::spawn_blocking(move || {
                    let page = store.collect_blobs(before, PAGE)?;
                    // After the commit: a crash in between leaves files
                    // whose blob is gone, which the next start sweeps.
                    if let Some(p) = publisher {
                        for hash in &page {
                            p.unpublish(hash);
                        }
                    }
                    anyhow::Ok(page.len())
                })
                .await
                .context("blob collection task")??
            };
            collected += page as u64;
            metrics::BLOBS_COLLECTED.fetch_add(page as u64, Ordering::Relaxed);
            if page < PAGE {
                return Ok(collected);
            }
        }
    }

    /// Runs [`Grid::collect_loose_blobs`] now and then: every half grace
    /// period, at most every 10 minutes.
    pub fn spawn_blob_collection(self: &Arc<Self>, grace: Duration) {
        let every = (grace / 2).clamp(Duration::from_secs(1), Duration::from_secs(600));
        let grid = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match grid.collect_loose_blobs(grace).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(collected = n, "deleted uploads no job claimed"),
                    Err(e) => tracing::error!("collecting loose uploads failed: {e:#}"),
                }
            }
        });
    }
}
