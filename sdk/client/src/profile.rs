//! The researcher's profile: the coordinator's address, the researcher
//! token and the key and endorsement files, saved once by `peergrid
//! login` in `$XDG_CONFIG_HOME/peergrid/config.toml` (default
//! `~/.config/peergrid/config.toml`) instead of four environment
//! variables. The file holds the token, so it is written mode 0600, whole
//! or not at all. A flag beats an environment variable, which beats the
//! profile, which beats the built-in default.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Client, ClientError, Researcher, io_err, server_url};

type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The server when neither flag, variable nor profile names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
/// The key file when neither flag, variable nor profile names one.
pub const DEFAULT_KEY: &str = "researcher.key";
/// The endorsement file when neither flag, variable nor profile names one.
pub const DEFAULT_ENDORSEMENT: &str = "researcher.endorsement";

/// What `config.toml` holds; every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub server: Option<String>,
    pub token: Option<String>,
    /// Absolute, so the profile works from any folder.
    pub key: Option<PathBuf>,
    pub endorsement: Option<PathBuf>,
}

/// The settings a command runs with, each from the first of flag or
/// variable (`given`), profile and default that has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub server: String,
    pub token: Option<String>,
    pub key: PathBuf,
    pub endorsement: PathBuf,
}

impl Settings {
    /// Resolves each setting: `given` (a flag, or its environment
    /// variable, as clap read them) before `profile` before the default.
    pub fn resolve(
        server: Option<String>,
        token: Option<String>,
        key: Option<PathBuf>,
        endorsement: Option<PathBuf>,
        profile: &Profile,
    ) -> Settings {
        Settings {
            server: server
                .or_else(|| profile.server.clone())
                .unwrap_or_else(|| DEFAULT_SERVER.to_string()),
            token: token.or_else(|| profile.token.clone()),
            key: key
                .or_else(|| profile.key.clone())
                .unwrap_or_else(|| DEFAULT_KEY.into()),
            endorsement: endorsement
                .or_else(|| profile.endorsement.clone())
                .unwrap_or_else(|| DEFAULT_ENDORSEMENT.into()),
        }
    }
}

/// The profile's path from the process's environment (see
/// [`config_path_from`]).
pub fn config_path() -> Option<PathBuf> {
    config_path_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// `$XDG_CONFIG_HOME/peergrid/config.toml`, or `$HOME/.config/…` when
/// that variable is unset, empty or relative (the XDG base directory
/// rules); `None` without either.
pub fn config_path_from(
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let base = match xdg_config_home.map(PathBuf::from) {
        Some(x) if x.is_absolute() => x,
        _ => {
            let home = PathBuf::from(home.filter(|h| !h.is_empty())?);
            home.join(".config")
        }
    };
    Some(base.join("peergrid").join("config.toml"))
}

impl Profile {
    /// Reads the profile at `path`; no file is an empty profile.
    pub fn load(path: &Path) -> Result<Profile> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Profile::default()),
            Err(e) => return Err(io_err(path)(e)),
        };
        toml::from_str(&text).map_err(|e| ClientError::Profile {
            path: path.to_path_buf(),
            message: format!(
                "not a peergrid profile ({}); run `peergrid login` again or fix the file",
                e.message()
            ),
        })
    }

    /// Writes the profile to `path` with mode 0600 (its folder 0700 when
    /// made), through a temporary file renamed over the old one, so a
    /// crash leaves the old profile or the new one, never half of either.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(io_err(dir))?;
        let text = toml::to_string(self).map_err(|e| ClientError::Profile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        // tempfile creates its files mode 0600 on Unix.
        let mut tmp = tempfile::Builder::new()
            .prefix(".config.toml.")
            .tempfile_in(dir)
            .map_err(io_err(dir))?;
        tmp.write_all(text.as_bytes()).map_err(io_err(tmp.path()))?;
        tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
        tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
        Ok(())
    }
}

/// What `peergrid login` found when it checked the server.
#[derive(Debug)]
pub enum Reached {
    /// The server answered and took the token (or no token was given).
    Checked,
    /// The server could not be reached; the profile was written anyway,
    /// so a researcher can log in before the coordinator is up.
    Unreachable(String),
}

/// `peergrid login`: the given settings over the profile at `path`. The
/// server address must have a scheme, key and endorsement must belong
/// together (their paths are saved absolute), and a server that answers
/// must accept the token; a server that cannot be reached is reported but
/// does not stop the profile being written.
pub fn login(
    path: &Path,
    server: Option<String>,
    token: Option<String>,
    key: Option<PathBuf>,
    endorsement: Option<PathBuf>,
) -> Result<Reached> {
    // A broken profile is what login is there to replace.
    let mut profile = Profile::load(path).unwrap_or_default();
    if let Some(server) = server {
        profile.server = Some(server_url(&server)?);
    }
    if let Some(token) = token {
        profile.token = Some(token);
    }
    let absolute = |p: PathBuf| std::path::absolute(&p).map_err(io_err(&p));
    if let Some(key) = key {
        profile.key = Some(absolute(key)?);
    }
    if let Some(endorsement) = endorsement {
        profile.endorsement = Some(absolute(endorsement)?);
    }
    if let (Some(key), Some(endorsement)) = (&profile.key, &profile.endorsement) {
        Researcher::load(key, endorsement)?;
    }
    let settings = Settings::resolve(None, None, None, None, &profile);
    let client = Client::new(&server_url(&settings.server)?, settings.token.clone());
    let reached = match client.check_token() {
        Ok(()) => Reached::Checked,
        Err(e @ ClientError::Unreachable { .. }) => {
            let mut why = e.to_string();
            if let Some(cause) = std::error::Error::source(&e) {
                why.push_str(&format!(": {cause}"));
            }
            Reached::Unreachable(why)
        }
        Err(e) => return Err(e),
    };
    profile.save(path)?;
    Ok(reached)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Profile {
        Profile {
            server: Some("http://grid.example:8080".into()),
            token: Some("pgt_profile".into()),
            key: Some("/home/r/researcher.key".into()),
            endorsement: Some("/home/r/researcher.endorsement".into()),
        }
    }

    #[test]
    fn given_beats_profile_beats_default() {
        let none = Settings::resolve(None, None, None, None, &Profile::default());
        assert_eq!(none.server, DEFAULT_SERVER);
        assert_eq!(none.token, None);
        assert_eq!(none.key, PathBuf::from(DEFAULT_KEY));
        assert_eq!(none.endorsement, PathBuf::from(DEFAULT_ENDORSEMENT));

        let from_profile = Settings::resolve(None, None, None, None, &full());
        assert_eq!(from_profile.server, "http://grid.example:8080");
        assert_eq!(from_profile.token.as_deref(), Some("pgt_profile"));
        assert_eq!(from_profile.key, PathBuf::from("/home/r/researcher.key"));

        let given = Settings::resolve(
            Some("http://flag:1".into()),
            Some("pgt_flag".into()),
            Some("flag.key".into()),
            Some("flag.endorsement".into()),
            &full(),
        );
        assert_eq!(given.server, "http://flag:1");
        assert_eq!(given.token.as_deref(), Some("pgt_flag"));
        assert_eq!(given.key, PathBuf::from("flag.key"));
        assert_eq!(given.endorsement, PathBuf::from("flag.endorsement"));

        // One given setting does not hide the profile's others.
        let mixed = Settings::resolve(Some("http://flag:1".into()), None, None, None, &full());
        assert_eq!(mixed.token.as_deref(), Some("pgt_profile"));
    }

    #[test]
    fn the_path_follows_the_xdg_rules() {
        let p = |x: Option<&str>, h: Option<&str>| {
            config_path_from(x.map(Into::into), h.map(Into::into))
        };
        assert_eq!(
            p(Some("/cfg"), Some("/home/r")),
            Some(PathBuf::from("/cfg/peergrid/config.toml"))
        );
        for ignored in [None, Some(""), Some("relative/cfg")] {
            assert_eq!(
                p(ignored, Some("/home/r")),
                Some(PathBuf::from("/home/r/.config/peergrid/config.toml"))
            );
        }
        assert_eq!(p(None, None), None);
    }

    #[test]
    fn saved_profile_reads_back_private_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peergrid").join("config.toml");
        assert_eq!(Profile::load(&path).unwrap(), Profile::default());
        full().save(&path).unwrap();
        assert_eq!(Profile::load(&path).unwrap(), full());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
        // Saving again replaces it and leaves no temporary file behind.
        let smaller = Profile {
            token: None,
            ..full()
        };
        smaller.save(&path).unwrap();
        assert_eq!(Profile::load(&path).unwrap(), smaller);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("config.toml")]);
    }

    #[test]
    fn a_broken_profile_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "server = \"http://x\"\ntokn = \"t\"\n").unwrap();
        let e = Profile::load(&path).unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("tokn"), "{e}");
    }
}
