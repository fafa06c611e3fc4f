//! The host's identity and self-description.
//!
//! A host is one Ed25519 key, made on first start and kept in the data
//! folder: the coordinator counts copies and credit per key, so two worker
//! processes need two data folders to be two hosts.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use ed25519_dalek::SigningKey;
use peergrid_proto::wire::HostFacts;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

const KEY_FILE: &str = "host.key";

/// Loads the host key from `dir`, creating it (mode 0600) on first start.
pub fn load_or_create_key(dir: &Path) -> Result<SigningKey> {
    let path = dir.join(KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut bytes).with_context(|| {
                format!(
                    "{} is corrupt; delete it to become a new host",
                    path.display()
                )
            })?;
            Ok(SigningKey::from_bytes(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
            let key = SigningKey::from_bytes(&seed);
            write_private(&path, hex::encode(key.to_bytes()).as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("creating {}", path.display()))
}

/// Cores, memory, OS and architecture, read with sysinfo.
pub fn host_facts() -> HostFacts {
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_memory(MemoryRefreshKind::nothing().with_ram())
            .with_cpu(CpuRefreshKind::nothing()),
    );
    let (memory_bytes, cores) = sys
        .map(|sys| (sys.total_memory(), sys.cpus().len() as u32))
        .unwrap_or((0, 0));
    HostFacts {
        cores,
        memory_bytes,
        os: System::long_os_version().unwrap_or_else(|_| std::env::consts::OS.to_string()),
        arch: System::cpu_arch(),
        account: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_describe_this_machine() {
        let f = host_facts();
        assert!(f.cores >= 1, "{f:?}");
        assert!(f.memory_bytes > 0, "{f:?}");
        assert!(!f.arch.is_empty(), "{f:?}");
    }

    #[test]
    fn the_host_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_key(dir.path()).unwrap();
        let b = load_or_create_key(dir.path()).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        std::fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        let e = load_or_create_key(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("corrupt"), "{e:#}");
    }
}
