//! One request or reply on a QUIC stream: reading a bounded frame (under
//! the door's memory budget), answering, and refusing a connection.

use std::sync::Arc;

use anyhow::Result;
use peergrid_proto::codec;
use peergrid_proto::wire::{ErrorCode, Reply, Request, WireError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(super) fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply::Error(WireError {
        code,
        message: message.into(),
    })
}

/// Answers with an error, waits (briefly) until the peer has it, then
/// closes the connection.
pub(super) async fn refuse(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    reply: &Reply,
) -> Result<()> {
    respond(send, reply).await?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), send.stopped()).await;
    conn.close(1u32.into(), b"refused");
    Ok(())
}

/// Reads one whole request of at most `limit` bytes; an oversized or
/// malformed one becomes the error reply to send instead. With a
/// `budget`, every byte read holds a permit of it until the returned
/// permit drops (after the request is handled): a crowd of large requests
/// waits instead of filling memory.
pub(super) async fn read_frame(
    recv: &mut quinn::RecvStream,
    limit: usize,
    budget: Option<Arc<Semaphore>>,
) -> Result<(Request, Option<OwnedSemaphorePermit>), Reply> {
    let too_long = || {
        error(
            ErrorCode::TooLarge,
            format!("request exceeds the {limit}-byte frame limit"),
        )
    };
    let mut bytes = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    loop {
        let chunk = recv
            .read_chunk(64 * 1024, true)
            .await
            .map_err(|e| error(ErrorCode::Malformed, format!("stream failed: {e}")))?;
        let Some(chunk) = chunk else { break };
        if bytes.len() + chunk.bytes.len() > limit {
            return Err(too_long());
        }
        if let Some(budget) = &budget {
            let n = u32::try_from(chunk.bytes.len()).map_err(|_| too_long())?;
            // Never wait for room while holding some: a crowd of stalled
            // large requests must not make everyone else queue behind it.
            let permit = budget.clone().try_acquire_many_owned(n).map_err(|_| {
                error(
                    ErrorCode::Busy,
                    "the coordinator is reading too many requests; try again shortly",
                )
            })?;
            match &mut held {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
        }
        bytes.extend_from_slice(&chunk.bytes);
    }
    let req = codec::decode(&bytes).map_err(|e| error(ErrorCode::Malformed, e.to_string()))?;
    Ok((req, held))
}

pub(super) async fn respond(send: &mut quinn::SendStream, reply: &Reply) -> Result<()> {
    let bytes = match codec::encode(reply) {
        Ok(b) => b,
        Err(e) => codec::encode(&error(ErrorCode::Internal, e.to_string()))?,
    };
    send.write_all(&bytes).await?;
    send.finish()?;
    Ok(())
}
