//! Uploading a job's blobs: only those the server lacks, in batches
//! (`POST /api/v1/blobs`, `peergrid_proto::batch`), or one `PUT` each on a
//! coordinator older than batches.

use std::collections::HashSet;

use peergrid_proto::Hash;
use peergrid_proto::api::BlobsStored;
use peergrid_proto::batch::{FRAME_HEADER, encode_frame};

use crate::{Client, ClientError, Result, UploadStats};

/// Largest body of one upload batch the client sends (the server takes up
/// to 256 MiB); a blob larger than this goes alone.
const BATCH_BYTES: usize = 64 * 1024 * 1024;

impl Client {
    /// Uploads the blobs the server lacks; blobs it has cost nothing.
    pub fn upload(&self, blobs: &[(Hash, Vec<u8>)]) -> Result<UploadStats> {
        let mut stats = UploadStats::default();
        // Asked once, and only when something is to be sent.
        let mut batches: Option<bool> = None;
        for chunk in blobs.chunks(10_000) {
            let hashes: Vec<Hash> = chunk.iter().map(|(h, _)| *h).collect();
            let url = self.url("/api/v1/blobs/missing");
            let r = self
                .agent
                .post(&url)
                .header("Authorization", &self.auth())
                .send_json(&hashes);
            let missing: Vec<Hash> = Self::json(self.check(&url, r)?)?;
            stats.already_there += chunk.len() - missing.len();
            let missing: HashSet<Hash> = missing.into_iter().collect();
            let to_send: Vec<&(Hash, Vec<u8>)> =
                chunk.iter().filter(|(h, _)| missing.contains(h)).collect();
            if !to_send.is_empty() && batches.is_none() {
                batches = Some(self.takes_batches()?);
            }
            let mut at = 0;
            while at < to_send.len() {
                // One batch: as many blobs as fit in BATCH_BYTES (at least one).
                let mut body = Vec::new();
                let start = at;
                while at < to_send.len()
                    && (at == start
                        || body.len() + FRAME_HEADER + to_send[at].1.len() <= BATCH_BYTES)
                {
                    encode_frame(&mut body, &to_send[at].0, &to_send[at].1);
                    at += 1;
                }
                let batch = &to_send[start..at];
                if batches == Some(true) {
                    self.put_batch(&body)?;
                } else {
                    // A server from before batches: one request per blob.
                    for (hash, bytes) in batch {
                        self.put_one(hash, bytes)?;
                    }
                }
                stats.uploaded += batch.len();
                stats.uploaded_bytes += batch.iter().map(|(_, b)| b.len()).sum::<usize>();
            }
        }
        Ok(stats)
    }

    /// Whether the server takes batches: an empty one is its `400` ("the
    /// batch is empty"); a coordinator from before them answers `404`.
    /// Asked before sending a large body, whose early refusal the client
    /// might only see as a reset connection.
    fn takes_batches(&self) -> Result<bool> {
        match self.post_batch(&[]) {
            Ok(_) | Err(ClientError::Refused { status: 400, .. }) => Ok(true),
            Err(ClientError::Refused {
                status: 404 | 405, ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends one batch of blob frames.
    fn put_batch(&self, body: &[u8]) -> Result<()> {
        let _: BlobsStored = Self::json(self.post_batch(body)?)?;
        Ok(())
    }

    fn post_batch(&self, body: &[u8]) -> Result<ureq::http::Response<ureq::Body>> {
        let url = self.url("/api/v1/blobs");
        let r = self
            .agent
            .post(&url)
            .header("Authorization", &self.auth())
            .header("Content-Type", "application/octet-stream")
            .send(body);
        self.check(&url, r)
    }

    fn put_one(&self, hash: &Hash, bytes: &[u8]) -> Result<()> {
        let url = self.url(&format!("/api/v1/blobs/{hash}"));
        let r = self
            .agent
            .put(&url)
            .header("Authorization", &self.auth())
            .send(bytes);
        self.check(&url, r)?;
        Ok(())
    }
}
