//! What `peergrid-coordinator init` writes and `serve` reads:
//!
//! ```text
//! DIR/coordinator.sqlite    the store (WAL mode)
//! DIR/tls/cert.der          self-signed certificate (its SHA-256 is in the join string)
//! DIR/tls/key.der           its private key (PKCS#8)
//! DIR/project.key           the project's Ed25519 signing key (hex); keep a copy offline
//! DIR/project.pub           its public key (hex)
//! DIR/coordinator.toml      settings: public address, researcher token hash, and
//!                           `[project]`: name, description, web site, operator
//! DIR/serve.json            written by `serve`: the addresses it bound and the join string
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use peergrid_os::write_private;
use serde::{Deserialize, Serialize};

use crate::project::{Project, ProjectEdit};
use crate::tls;

#[derive(Serialize, Deserialize)]
pub struct Settings {
    /// `host:port` volunteers dial; goes into the join string.
    pub public_addr: String,
    /// BLAKE3 (hex) of the researcher API token.
    pub researcher_token_blake3: String,
    /// What the dashboard says about the project (`init --name …`,
    /// `project set`); a running `serve` re-reads it (`project::watch`).
    #[serde(default, skip_serializing_if = "Project::is_empty")]
    pub project: Project,
}

pub struct DataDir {
    pub root: PathBuf,
}

/// What `init` made, to print once.
pub struct Initialised {
    pub join: String,
    pub token: String,
    pub project_public_key: String,
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(b)
}

impl DataDir {
    pub fn new(root: &Path) -> DataDir {
        DataDir {
            root: root.to_path_buf(),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.root.join("coordinator.sqlite")
    }
    pub fn settings_path(&self) -> PathBuf {
        self.root.join("coordinator.toml")
    }
    pub fn serve_info(&self) -> PathBuf {
        self.root.join("serve.json")
    }

    /// Creates keys, certificate, token and database in an empty or new
    /// folder. Refuses to overwrite an existing coordinator.
    pub fn init(&self, public_addr: &str, about: &Project) -> Result<Initialised> {
        about.check().map_err(anyhow::Error::msg)?;
        if self.settings_path().exists() {
            bail!(
                "{} already holds a coordinator; choose another --data folder (nothing was changed)",
                self.root.display()
            );
        }
        fs::create_dir_all(self.root.join("tls"))
            .with_context(|| format!("creating {}", self.root.display()))?;
        let (cert, key) = tls::generate_certificate()?;
        let key_path = self.root.join("tls/key.der");
        write_private(&key_path, &key)
            .with_context(|| format!("creating {}", key_path.display()))?;
        fs::write(self.root.join("tls/cert.der"), &cert)?;

        let project = ed25519_dalek::SigningKey::from_bytes(&random_bytes::<32>()?);
        let project_public_key = hex::encode(project.verifying_key().to_bytes());
        let project_key_path = self.root.join("project.key");
        write_private(
            &project_key_path,
            hex::encode(project.to_bytes()).as_bytes(),
        )
        .with_context(|| format!("creating {}", project_key_path.display()))?;
        fs::write(self.root.join("project.pub"), &project_public_key)?;

        let token = format!("pgt_{}", hex::encode(random_bytes::<24>()?));
        let settings = Settings {
            public_addr: public_addr.to_string(),
            researcher_token_blake3: blake3::hash(token.as_bytes()).to_hex().to_string(),
            project: about.clone(),
        };
        crate::store::SqliteStore::open(&self.db(), false).context("creating the database")?;
        // Written last: its presence marks a complete init.
        self.write_settings(&settings)?;
        let join = self.join_string(public_addr)?;
        Ok(Initialised {
            join,
            token,
            project_public_key,
        })
    }

    pub fn settings(&self) -> Result<Settings> {
        let path = self.settings_path();
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {}; run `peergrid-coordinator init --data {}` first",
                path.display(),
                self.root.display()
            )
        })?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `coordinator.toml` through a temporary file renamed over it,
    /// so a running `serve` never reads half a file.
    fn write_settings(&self, settings: &Settings) -> Result<()> {
        let text = format!(
            "# peergrid coordinator settings, written by `peergrid-coordinator init` and `project set`\n{}",
            toml::to_string(settings)?
        );
        let path = self.settings_path();
        let tmp = self.root.join(".coordinator.toml.tmp");
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))
    }

    /// Applies `edit` to the project in `coordinator.toml`; returns the
    /// project as it now stands. A running `serve` shows it within
    /// `project::RELOAD_EVERY`.
    pub fn set_project(&self, edit: ProjectEdit) -> Result<Project> {
        let mut settings = self.settings()?;
        settings.project = settings
            .project
            .edited(edit)
            .map_err(anyhow::Error::msg)
            .context("nothing was changed")?;
        self.write_settings(&settings)?;
        Ok(settings.project)
    }

    /// Copies the project to a new folder `to` while it may be serving:
    /// settings, keys, certificate, and a consistent snapshot of the
    /// database (SQLite's `VACUUM INTO`, which reads one transaction's
    /// view). `serve --data TO` then serves the same project under the same
    /// join string. The copy is built beside `to` and renamed into place
    /// last, so a backup cut short never looks complete. Refuses an
    /// existing `to`.
    pub fn backup(&self, to: &Path) -> Result<()> {
        self.settings()?;
        if to.exists() {
            bail!(
                "{} already exists; back up into a new folder (nothing was changed)",
                to.display()
            );
        }
        let name = to
            .file_name()
            .with_context(|| format!("{} names no folder", to.display()))?;
        let parent = match to.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if to.to_str().is_none() {
            bail!("{} is not valid UTF-8; choose a plainer name", to.display());
        }
        let partial = parent.join(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        // Only what this call made is removed on failure.
        let made = self.backup_into(&partial, &builder);
        if made.is_err() {
            let _ = fs::remove_dir_all(&partial);
        }
        made?;
        fs::rename(&partial, to)
            .with_context(|| format!("renaming {} to {}", partial.display(), to.display()))?;
        sync_dir(&parent)?;
        Ok(())
    }

    /// Fills the new folder `dir` and syncs every file and folder in it, so
    /// that once renamed into place the copy is whole even after a power
    /// cut.
    fn backup_into(&self, dir: &Path, builder: &fs::DirBuilder) -> Result<()> {
        builder.create(dir.join("tls"))?;
        for (file, private) in [
            ("coordinator.toml", false),
            ("project.pub", false),
            ("project.key", true),
            ("tls/cert.der", false),
            ("tls/key.der", true),
        ] {
            let from = self.root.join(file);
            let bytes = fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            let copy = dir.join(file);
            if private {
                // Made 0600 and synced.
                write_private(&copy, &bytes)
            } else {
                fs::write(&copy, &bytes).and_then(|()| fs::File::open(&copy)?.sync_all())
            }
            .with_context(|| format!("writing {}", copy.display()))?;
        }
        // VACUUM INTO syncs the file it writes (the connection's
        // `synchronous` is FULL).
        crate::store::SqliteStore::snapshot(&self.db(), &DataDir::new(dir).db())
            .context("copying the database")?;
        sync_dir(&dir.join("tls"))?;
        sync_dir(dir)
    }

    pub fn tls(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let cert = fs::read(self.root.join("tls/cert.der")).context("reading tls/cert.der")?;
        let key = fs::read(self.root.join("tls/key.der")).context("reading tls/key.der")?;
        Ok((cert, key))
    }

    pub fn join_string(&self, address: &str) -> Result<String> {
        let (cert, _) = self.tls()?;
        Ok(peergrid_proto::JoinString {
            address: address.to_string(),
            cert_sha256: tls::fingerprint(&cert),
            project_key: self.project_public_key()?,
        }
        .to_string())
    }

    /// The project's public key (`project.pub`).
    pub fn project_public_key(&self) -> Result<[u8; 32]> {
        let path = self.root.join("project.pub");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        peergrid_proto::signing::parse_public_key(&text)
            .with_context(|| format!("parsing {}", path.display()))
    }
}

/// Makes a folder's entries durable (the files made or renamed in it).
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Reads the project's secret key for `endorse` from `path` (`DIR/project.key`
/// or an offline copy). Both key files hold 32 bytes of hex, so the public
/// key given by mistake would be taken for a secret one and make
/// endorsements every worker refuses (a 403 only at submission). It is told
/// apart by its `.pub` name, or by not matching the `project.pub` beside it.
pub fn read_project_secret_key(path: &Path) -> Result<ed25519_dalek::SigningKey> {
    let refuse = || {
        anyhow::anyhow!(
            "{} is the project's public key; endorse with its secret key, project.key (in the same folder, or your offline copy)",
            path.display()
        )
    };
    if path.extension().is_some_and(|e| e == "pub") {
        return Err(refuse());
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let key = peergrid_proto::signing::parse_secret_key(&text)
        .with_context(|| format!("parsing {}", path.display()))?;
    let public = path.with_file_name("project.pub");
    if let Ok(published) = fs::read_to_string(&public)
        && published.trim() != hex::encode(key.verifying_key().to_bytes())
    {
        if published.trim() == text.trim() {
            return Err(refuse());
        }
        bail!(
            "{} is not the secret key of {} beside it; endorse with that project's project.key",
            path.display(),
            public.display()
        );
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endorsing_needs_the_secret_project_key() {
        let dir = tempfile::tempdir().unwrap();
        DataDir::new(dir.path())
            .init("127.0.0.1:1", &Project::default())
            .unwrap();
        let (secret, public) = (
            dir.path().join("project.key"),
            dir.path().join("project.pub"),
        );
        let key = read_project_secret_key(&secret).unwrap();
        assert_eq!(
            hex::encode(key.verifying_key().to_bytes()),
            fs::read_to_string(&public).unwrap().trim()
        );
        let e = read_project_secret_key(&public).unwrap_err().to_string();
        assert!(e.contains("public key") && e.contains("project.key"), "{e}");
        // A copy of the public key under another name, beside project.pub.
        let copy = dir.path().join("copy.txt");
        fs::copy(&public, &copy).unwrap();
        let e = read_project_secret_key(&copy).unwrap_err().to_string();
        assert!(e.contains("public key"), "{e}");
    }

    #[test]
    fn the_project_is_kept_in_the_settings_and_edited_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::new(dir.path());
        let first = Project {
            name: "Prime <Hunt>".into(),
            url: "https://example.org".into(),
            ..Project::default()
        };
        d.init("127.0.0.1:1", &first).unwrap();
        assert_eq!(d.settings().unwrap().project, first);
        let token = d.settings().unwrap().researcher_token_blake3;
        let now = d
            .set_project(ProjectEdit {
                description: Some("We count primes.".into()),
                ..ProjectEdit::default()
            })
            .unwrap();
        assert_eq!(
            (now.name.as_str(), now.description.as_str()),
            ("Prime <Hunt>", "We count primes.")
        );
        let settings = d.settings().unwrap();
        assert_eq!(settings.project, now);
        assert_eq!(
            settings.researcher_token_blake3, token,
            "the token survives"
        );
        let text = fs::read_to_string(d.settings_path()).unwrap();
        assert_eq!(crate::project::parse(&text).unwrap(), now);
        // A bad edit changes nothing.
        let e = d
            .set_project(ProjectEdit {
                url: Some("ftp://x".into()),
                ..ProjectEdit::default()
            })
            .unwrap_err();
        assert!(format!("{e:#}").contains("--url"), "{e:#}");
        assert_eq!(d.settings().unwrap().project, now);
        let Err(e) = DataDir::new(&dir.path().join("none")).init(
            "127.0.0.1:1",
            &Project {
                url: "x".into(),
                ..Project::default()
            },
        ) else {
            panic!("a bad --url was accepted")
        };
        assert!(e.to_string().contains("--url"), "{e}");
    }
}
