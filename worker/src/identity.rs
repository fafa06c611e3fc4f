//! The host's identity and self-description.
//!
//! A host is one Ed25519 key, made on first start and kept in the data
//! folder: the coordinator counts copies and credit per key, so two worker
//! processes need two data folders to be two hosts.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use ed25519_dalek::{Signer, SigningKey};
use peergrid_proto::wire::{Attachment, HostFacts, attachment_message};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

const KEY_FILE: &str = "host.key";

/// The account key file in the data folder when `--account` names an
/// account and no `--account-key` is given.
pub const ACCOUNT_KEY_FILE: &str = "account.key";

/// Loads the host key from `dir`, creating it (mode 0600) on first start.
pub fn load_or_create_key(dir: &Path) -> Result<SigningKey> {
    load_or_create_key_file(&dir.join(KEY_FILE), "delete it to become a new host")
}

/// The attachment of `host` to the account of `account_key` under `name`,
/// in `team` ('' = none).
pub fn attach(account_key: &SigningKey, host: &SigningKey, name: &str, team: &str) -> Attachment {
    let host_key = host.verifying_key().to_bytes();
    let team = team.trim();
    Attachment {
        account_key: account_key.verifying_key().to_bytes(),
        name: name.to_string(),
        team: team.to_string(),
        signature: account_key
            .sign(&attachment_message(&host_key, name, team))
            .to_bytes()
            .to_vec(),
    }
}

/// The attachment of `host` to the volunteer's account, when the
/// preferences name one (an account name, a key file, a team, or more):
/// the key is loaded from `account_key`, else `DATA/account.key`, and
/// made if missing. A team is the account's, signed with it, so that only
/// the holder of an account's key can put it in a team.
pub fn account_attachment(
    data: &Path,
    prefs: &crate::prefs::Preferences,
    host: &SigningKey,
) -> Result<Option<Attachment>> {
    if prefs.account.is_empty() && prefs.account_key.is_none() && prefs.team.trim().is_empty() {
        return Ok(None);
    }
    // A key file named explicitly must exist: a mistyped path would
    // otherwise start a new account without a word.
    if let Some(path) = &prefs.account_key {
        anyhow::ensure!(
            path.exists(),
            "the account key file {} does not exist: copy your account's key there (the first \
             machine keeps it in its data folder as {ACCOUNT_KEY_FILE}), or leave out \
             --account-key to make a new account",
            path.display()
        );
    }
    let path = prefs
        .account_key
        .clone()
        .unwrap_or_else(|| data.join(ACCOUNT_KEY_FILE));
    let key = load_or_create_key_file(
        &path,
        "restore it from one of your other machines, or delete it to start a new account",
    )?;
    Ok(Some(attach(&key, host, &prefs.account, &prefs.team)))
}

/// Loads an Ed25519 key kept as a hex seed in `path`, creating it (mode
/// 0600, folders included) if missing; `if_corrupt` says what to do when
/// the file is not a key.
pub fn load_or_create_key_file(path: &Path, if_corrupt: &str) -> Result<SigningKey> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut bytes)
                .with_context(|| format!("{} is corrupt; {if_corrupt}", path.display()))?;
            Ok(SigningKey::from_bytes(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
            let key = SigningKey::from_bytes(&seed);
            // Written whole beside it, then linked into place (which never
            // replaces): two workers starting at once on one shared account
            // file both end up with the one key that got there first.
            let mut tag = [0u8; 8];
            getrandom::fill(&mut tag).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
            let tmp = path.with_extension(format!("tmp-{}", hex::encode(tag)));
            peergrid_os::write_private(&tmp, hex::encode(key.to_bytes()).as_bytes())
                .with_context(|| format!("creating {}", tmp.display()))?;
            let linked = fs::hard_link(&tmp, path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => Ok(key),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    load_or_create_key_file(path, if_corrupt)
                }
                Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Cores, memory, OS, architecture and CPU model, read with sysinfo (the
/// name and slots, which the preferences set, left empty).
pub fn host_facts() -> HostFacts {
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_memory(MemoryRefreshKind::nothing().with_ram())
            .with_cpu(CpuRefreshKind::nothing()),
    );
    let (memory_bytes, cores, cpu_model) = sys
        .map(|sys| {
            let model = sys.cpus().first().map(|c| c.brand().trim().to_string());
            (
                sys.total_memory(),
                sys.cpus().len() as u32,
                model.unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    HostFacts {
        cores,
        memory_bytes,
        os: System::long_os_version().unwrap_or_else(|_| std::env::consts::OS.to_string()),
        arch: System::cpu_arch(),
        cpu_model,
        ..HostFacts::default()
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

    #[test]
    fn workers_starting_at_once_on_one_account_file_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared").join("ada.account");
        let missing = crate::prefs::Preferences {
            account_key: Some(path.clone()),
            ..Default::default()
        };
        let host = SigningKey::from_bytes(&[1; 32]);
        let e = account_attachment(dir.path(), &missing, &host).unwrap_err();
        assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
        let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create_key_file(&path, "x").unwrap().to_bytes()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            keys.windows(2).all(|w| w[0] == w[1]),
            "two keys for one file"
        );
        let host = SigningKey::from_bytes(&[1; 32]);
        let prefs = crate::prefs::Preferences {
            account: "ada".into(),
            account_key: Some(path.clone()),
            ..Default::default()
        };
        let a = account_attachment(dir.path(), &prefs, &host)
            .unwrap()
            .unwrap();
        assert_eq!(
            a.account_key,
            SigningKey::from_bytes(&keys[0]).verifying_key().to_bytes()
        );
        // A team alone makes an account (in DATA/account.key) to sign it.
        let team_only = crate::prefs::Preferences {
            team: " Rustaceans ".into(),
            ..Default::default()
        };
        let a = account_attachment(dir.path(), &team_only, &host)
            .unwrap()
            .unwrap();
        assert_eq!((a.name.as_str(), a.team.as_str()), ("", "Rustaceans"));
        assert!(dir.path().join(ACCOUNT_KEY_FILE).exists());
        let signer = ed25519_dalek::VerifyingKey::from_bytes(&a.account_key).unwrap();
        let message = attachment_message(&host.verifying_key().to_bytes(), "", "Rustaceans");
        let signature = ed25519_dalek::Signature::from_slice(&a.signature).unwrap();
        assert!(signer.verify_strict(&message, &signature).is_ok());
        let other_team = attachment_message(&host.verifying_key().to_bytes(), "", "Pythonistas");
        assert!(signer.verify_strict(&other_team, &signature).is_err());
        let anonymous = crate::prefs::Preferences::default();
        assert!(
            account_attachment(dir.path(), &anonymous, &host)
                .unwrap()
                .is_none()
        );
    }
}
