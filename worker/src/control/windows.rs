//! The control channel on Windows: a named pipe, `\\.\pipe\peergrid-worker-`
//! and a digest of the data folder's full path, so each data folder has its
//! own. It refuses remote clients; the default security of a named pipe
//! lets only its creator, the administrators and the system write to it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};

use super::Channel;

/// The pipe instance waiting for the next command.
pub(super) struct Local {
    name: String,
    next: NamedPipeServer,
}

pub(super) fn name(data: &Path) -> String {
    let full = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    let digest = Sha256::digest(full.to_string_lossy().to_lowercase().as_bytes());
    format!(r"\\.\pipe\peergrid-worker-{}", hex::encode(&digest[..12]))
}

/// Windows' ERROR_ACCESS_DENIED: another process made the first instance.
const ACCESS_DENIED: i32 = 5;
/// ERROR_PIPE_BUSY: every instance is serving a command.
const PIPE_BUSY: i32 = 231;

impl Channel for Local {
    type Conn = NamedPipeServer;
    type Client = std::fs::File;

    fn bind(data: &Path) -> Result<Self> {
        let name = name(data);
        let next = match ServerOptions::new()
            .first_pipe_instance(true)
            .reject_remote_clients(true)
            .create(&name)
        {
            Ok(pipe) => pipe,
            Err(e) if e.raw_os_error() == Some(ACCESS_DENIED) => bail!(
                "another worker is running on {} (its control pipe {name} exists); stop it first",
                data.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("creating the control pipe {name}"));
            }
        };
        Ok(Local { name, next })
    }

    async fn accept(&mut self) -> std::io::Result<Self::Conn> {
        self.next.connect().await?;
        // The next instance exists before this one is handed over, so a
        // command never finds no pipe at all.
        let fresh = ServerOptions::new()
            .reject_remote_clients(true)
            .create(&self.name)?;
        Ok(std::mem::replace(&mut self.next, fresh))
    }

    /// A pipe opened as a file has no read timeout: a command waits for a
    /// hung daemon until it is interrupted. `timeout` bounds only the wait
    /// for a free instance.
    fn connect(data: &Path, timeout: std::time::Duration) -> std::io::Result<Self::Client> {
        let name = name(data);
        let until = std::time::Instant::now() + timeout;
        loop {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&name)
            {
                Err(e)
                    if e.raw_os_error() == Some(PIPE_BUSY) && std::time::Instant::now() < until =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }
}
