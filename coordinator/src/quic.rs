//! The workers' door: a QUIC endpoint speaking the `peergrid/1` protocol.
//!
//! One connection is one host. Its first stream must carry a signed
//! [`Hello`]; every later stream carries one request and its reply. Bytes
//! from a worker are never trusted: oversized or malformed requests get an
//! error reply and the connection (and every other) keeps being served.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use ed25519_dalek::{Signature, VerifyingKey};
use peergrid_proto::codec;
use peergrid_proto::limits::{MAX_ACCOUNT, MAX_FRAME};
use peergrid_proto::wire::{ErrorCode, Hello, Reply, Request, Welcome, WireError, hello_message};

use crate::grid::{Banned, Grid, now_ms};
use crate::store::HostId;

/// Most worker connections served at once.
const MAX_CONNECTIONS: usize = 10_000;
/// A greeting older or newer than this is refused (clock skew allowance).
const HELLO_SKEW_MS: u64 = 10 * 60 * 1000;

pub struct QuicServer {
    pub endpoint: quinn::Endpoint,
    grid: Arc<Grid>,
    cert_sha256: [u8; 32],
}

impl QuicServer {
    pub fn bind(
        addr: SocketAddr,
        config: quinn::ServerConfig,
        grid: Arc<Grid>,
        cert_sha256: [u8; 32],
    ) -> Result<QuicServer> {
        let endpoint = quinn::Endpoint::server(config, addr)
            .with_context(|| format!("binding the QUIC endpoint on {addr}"))?;
        Ok(QuicServer {
            endpoint,
            grid,
            cert_sha256,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Accepts connections until the endpoint is closed.
    pub async fn run(self: Arc<Self>) {
        // Bounds the connections (and so the per-connection stream buffers)
        // a crowd of strangers can hold open at once.
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        while let Some(incoming) = self.endpoint.accept().await {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!(
                    remote = %incoming.remote_address(),
                    "refusing a connection: {MAX_CONNECTIONS} are open"
                );
                incoming.refuse();
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let remote = incoming.remote_address();
                match incoming.await {
                    Ok(conn) => {
                        if let Err(e) = server.serve_connection(conn).await {
                            tracing::debug!(%remote, "connection ended: {e:#}");
                        }
                    }
                    // A wrong ALPN or a failed handshake ends here.
                    Err(e) => tracing::info!(%remote, "QUIC handshake refused: {e}"),
                }
            });
        }
    }

    async fn serve_connection(&self, conn: quinn::Connection) -> Result<()> {
        let (mut send, mut recv) = conn.accept_bi().await?;
        let host = match read_request(&mut recv).await {
            Ok(Request::Hello(hello)) => match self.authenticate(&hello).await {
                Ok(host) => {
                    respond(&mut send, &Reply::Welcome(Welcome { host_id: host })).await?;
                    host
                }
                Err(e) => {
                    let code = if e.is::<StoreFailure>() {
                        ErrorCode::Internal
                    } else if e.is::<Banned>() {
                        ErrorCode::Banned
                    } else {
                        ErrorCode::Unauthenticated
                    };
                    let reply = error(code, format!("{e:#}"));
                    return refuse(&conn, &mut send, &reply).await;
                }
            },
            Ok(_) => {
                let msg = "the first request on a connection must be Hello";
                let reply = error(ErrorCode::Unauthenticated, msg);
                return refuse(&conn, &mut send, &reply).await;
            }
            Err(reply) => return refuse(&conn, &mut send, &reply).await,
        };
        tracing::debug!(host, remote = %conn.remote_address(), "worker connected");
        loop {
            let (mut send, mut recv) = conn.accept_bi().await?;
            let grid = self.grid.clone();
            tokio::spawn(async move {
                let reply = match read_request(&mut recv).await {
                    Ok(req) => handle(&grid, host, req).await,
                    Err(reply) => reply,
                };
                if let Err(e) = respond(&mut send, &reply).await {
                    tracing::debug!(host, "reply not delivered: {e}");
                }
            });
        }
    }

    async fn authenticate(&self, hello: &Hello) -> Result<HostId> {
        let now = now_ms();
        anyhow::ensure!(
            hello.timestamp_ms.abs_diff(now) <= HELLO_SKEW_MS,
            "the greeting's clock is more than 10 minutes off the coordinator's; fix the host's clock"
        );
        anyhow::ensure!(
            hello.facts.account.len() <= MAX_ACCOUNT
                && !hello.facts.account.chars().any(char::is_control),
            "the account name must be at most {MAX_ACCOUNT} bytes without control characters"
        );
        let key = VerifyingKey::from_bytes(&hello.host_key).context("invalid host key")?;
        let sig = Signature::from_slice(&hello.signature).context("invalid signature encoding")?;
        key.verify_strict(&hello_message(&self.cert_sha256, hello.timestamp_ms), &sig)
            .context("the greeting's signature does not verify")?;
        let store = self.grid.store.clone();
        let mut hello = hello.clone();
        // SQLite integers are i64; a stranger's u64 must fit.
        hello.facts.memory_bytes = hello.facts.memory_bytes.min(i64::MAX as u64);
        let host = tokio::task::spawn_blocking(move || {
            store.upsert_host(&hello.host_key, &hello.facts, &hello.worker_version, now)
        })
        .await?
        .map_err(|e| anyhow::anyhow!(StoreFailure(e.to_string())))?;
        self.grid.join(host).await?;
        Ok(host)
    }
}

/// A store error during Hello: the worker is not at fault and may retry.
#[derive(Debug, thiserror::Error)]
#[error("registering the host failed: {0}")]
struct StoreFailure(String);

async fn handle(grid: &Grid, host: HostId, req: Request) -> Reply {
    match req {
        Request::Hello(_) => error(ErrorCode::Malformed, "this connection already said Hello"),
        Request::Exchange(ex) => match grid.exchange(host, ex).await {
            Ok(r) => Reply::Exchange(r),
            Err(e) if e.is::<Banned>() => error(ErrorCode::Banned, format!("{e:#}")),
            Err(e) => error(ErrorCode::Internal, format!("{e:#}")),
        },
        Request::GetBlob(hash) => {
            let store = grid.store.clone();
            match tokio::task::spawn_blocking(move || store.get_blob(&hash)).await {
                Ok(Ok(Some(bytes))) => Reply::Blob(bytes),
                Ok(Ok(None)) => error(ErrorCode::NotFound, format!("no blob {hash}")),
                Ok(Err(e)) => error(ErrorCode::Internal, e.to_string()),
                Err(e) => error(ErrorCode::Internal, e.to_string()),
            }
        }
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply::Error(WireError {
        code,
        message: message.into(),
    })
}

/// Answers with an error, waits (briefly) until the peer has it, then
/// closes the connection.
async fn refuse(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    reply: &Reply,
) -> Result<()> {
    respond(send, reply).await?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), send.stopped()).await;
    conn.close(1u32.into(), b"refused");
    Ok(())
}

/// Reads one whole request; an oversized or malformed one becomes the
/// error reply to send instead.
async fn read_request(recv: &mut quinn::RecvStream) -> Result<Request, Reply> {
    let bytes = recv.read_to_end(MAX_FRAME).await.map_err(|e| match e {
        quinn::ReadToEndError::TooLong => error(
            ErrorCode::TooLarge,
            format!("request exceeds the {MAX_FRAME}-byte frame limit"),
        ),
        quinn::ReadToEndError::Read(e) => {
            error(ErrorCode::Malformed, format!("stream failed: {e}"))
        }
    })?;
    codec::decode(&bytes).map_err(|e| error(ErrorCode::Malformed, e.to_string()))
}

async fn respond(send: &mut quinn::SendStream, reply: &Reply) -> Result<()> {
    let bytes = match codec::encode(reply) {
        Ok(b) => b,
        Err(e) => codec::encode(&error(ErrorCode::Internal, e.to_string()))?,
    };
    send.write_all(&bytes).await?;
    send.finish()?;
    Ok(())
}
