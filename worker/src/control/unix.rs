//! The control channel on Unix: `DATA/control.sock`, mode 0600.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{Channel, socket_path};

/// The daemon's listening socket.
pub(super) struct Local(tokio::net::UnixListener);

pub(super) fn name(data: &Path) -> String {
    socket_path(data).display().to_string()
}

impl Channel for Local {
    type Conn = tokio::net::UnixStream;
    type Client = std::os::unix::net::UnixStream;

    fn bind(data: &Path) -> Result<Self> {
        let path = socket_path(data);
        // A socket left by a killed daemon: nobody answers on it any more.
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            bail!(
                "another worker is running on {} (its control socket answers); stop it first",
                data.display()
            );
        }
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)
            .with_context(|| format!("creating the control socket {}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
        Ok(Local(listener))
    }

    async fn accept(&mut self) -> std::io::Result<Self::Conn> {
        self.0.accept().await.map(|(stream, _)| stream)
    }

    fn connect(data: &Path, timeout: std::time::Duration) -> std::io::Result<Self::Client> {
        let stream = std::os::unix::net::UnixStream::connect(socket_path(data))?;
        stream.set_read_timeout(Some(timeout))?;
        Ok(stream)
    }
}
