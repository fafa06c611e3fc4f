//! The project's public face: its name, what its science is, its web site
//! and who runs it, as the operator set them with `peergrid-coordinator init`
//! or `project set`. They live in the `[project]` table of
//! `DIR/coordinator.toml`; a running `serve` re-reads that file every
//! [`RELOAD_EVERY`] and shows the new text from then on ([`ProjectCell`]).
//!
//! The text is the operator's, but pages still escape it (maud) and only
//! `http://` and `https://` addresses become links.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often `serve` looks at `coordinator.toml` for a changed project.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// Longest project name, in characters.
pub const MAX_NAME: usize = 80;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 4000;
/// Longest web address or operator name, in characters.
pub const MAX_LINE: usize = 300;

/// What the public sees of a project. Every field may be empty: pages then
/// say "peergrid" and leave the rest out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Project {
    /// Shown in every page's title and heading.
    pub name: String,
    /// What the science is, in the operator's words (paragraphs separated
    /// by blank lines).
    pub description: String,
    /// The project's web site (`http://` or `https://`).
    pub url: String,
    /// Who runs the project (a person, a lab, an institute).
    pub operator: String,
    /// Where volunteers download `peergrid-worker` (`http://` or
    /// `https://`); empty: pages say to build it from source.
    pub download_url: String,
}

/// Changes to a [`Project`]: `None` keeps a field, `Some("")` clears it.
#[derive(Clone, Debug, Default)]
pub struct ProjectEdit {
    pub name: Option<String>,
    pub description: Option<String>,
    pub url: Option<String>,
    pub operator: Option<String>,
    pub download_url: Option<String>,
}

impl Project {
    /// The name pages show: the project's, or "peergrid" before it has one.
    pub fn display_name(&self) -> &str {
        if self.name.trim().is_empty() {
            "peergrid"
        } else {
            self.name.trim()
        }
    }

    /// The description's paragraphs (separated by blank lines), trimmed.
    pub fn paragraphs(&self) -> impl Iterator<Item = &str> {
        self.description
            .split("\n\n")
            .flat_map(|p| p.split("\r\n\r\n"))
            .map(str::trim)
            .filter(|p| !p.is_empty())
    }

    /// Whether nothing was set (`coordinator.toml` then has no `[project]`).
    pub fn is_empty(&self) -> bool {
        *self == Project::default()
    }

    /// The web address as a link target: only `http(s)://` addresses, so a
    /// `javascript:` address is shown as text and never followed.
    pub fn link(&self) -> Option<&str> {
        web_link(&self.url)
    }

    /// The worker's download address as a link target, as [`Project::link`].
    pub fn download_link(&self) -> Option<&str> {
        web_link(&self.download_url)
    }

    /// `edit` applied to this project, trimmed and checked.
    pub fn edited(&self, edit: ProjectEdit) -> Result<Project, String> {
        let pick = |new: Option<String>, old: &str| new.unwrap_or_else(|| old.to_string());
        let p = Project {
            name: pick(edit.name, &self.name).trim().to_string(),
            description: pick(edit.description, &self.description).trim().to_string(),
            url: pick(edit.url, &self.url).trim().to_string(),
            operator: pick(edit.operator, &self.operator).trim().to_string(),
            download_url: pick(edit.download_url, &self.download_url)
                .trim()
                .to_string(),
        };
        p.check()?;
        Ok(p)
    }

    /// Refuses text pages could not show well: too long, control
    /// characters (line breaks only in the description), a web address
    /// that is not `http(s)://`.
    pub fn check(&self) -> Result<(), String> {
        let fields = [
            ("--name", &self.name, MAX_NAME, false),
            ("--description", &self.description, MAX_DESCRIPTION, true),
            ("--url", &self.url, MAX_LINE, false),
            ("--operator", &self.operator, MAX_LINE, false),
            ("--download-url", &self.download_url, MAX_LINE, false),
        ];
        for (flag, text, max, lines) in fields {
            let chars = text.chars().count();
            if chars > max {
                return Err(format!(
                    "{flag} is {chars} characters long; at most {max} fit"
                ));
            }
            if text
                .chars()
                .any(|c| c.is_control() && !(lines && (c == '\n' || c == '\r' || c == '\t')))
            {
                return Err(format!(
                    "{flag} contains control characters{}",
                    if lines {
                        " other than line breaks"
                    } else {
                        " or line breaks"
                    }
                ));
            }
        }
        for (flag, url) in [("--url", &self.url), ("--download-url", &self.download_url)] {
            if !url.is_empty() && web_link(url).is_none() {
                return Err(format!(
                    "{flag} must start with https:// or http://, not `{url}`"
                ));
            }
        }
        Ok(())
    }
}

/// `url` when it is an `http(s)://` address.
fn web_link(url: &str) -> Option<&str> {
    let url = url.trim();
    let scheme = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    (scheme.starts_with("https://") || scheme.starts_with("http://")).then_some(url)
}

/// The project as `serve` shows it now: read by every page, replaced when
/// `coordinator.toml` changes.
#[derive(Default)]
pub struct ProjectCell(RwLock<Arc<Project>>);

impl ProjectCell {
    pub fn new(project: Project) -> ProjectCell {
        ProjectCell(RwLock::new(Arc::new(project)))
    }

    pub fn get(&self) -> Arc<Project> {
        match self.0.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the project; says whether it changed.
    pub fn set(&self, project: Project) -> bool {
        let mut slot = match self.0.write() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        if **slot == project {
            return false;
        }
        *slot = Arc::new(project);
        true
    }
}

/// The `[project]` table of a `coordinator.toml` (the rest is ignored).
#[derive(Deserialize)]
struct ProjectTable {
    #[serde(default)]
    project: Project,
}

/// The project in `coordinator.toml`'s text.
pub fn parse(settings_toml: &str) -> Result<Project, String> {
    toml::from_str::<ProjectTable>(settings_toml)
        .map(|t| t.project)
        .map_err(|e| e.to_string())
}

/// Re-reads `settings` (a `coordinator.toml`) every [`RELOAD_EVERY`] and
/// puts a changed, valid project into `cell`; a file that cannot be read
/// or parsed is logged and the project shown stays as it was.
pub fn watch(cell: Arc<ProjectCell>, settings: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_error = String::new();
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let read = tokio::fs::read_to_string(&settings)
                .await
                .map_err(|e| e.to_string())
                .and_then(|text| parse(&text))
                .and_then(|p| p.check().map(|()| p));
            match read {
                Ok(project) => {
                    last_error.clear();
                    if cell.set(project) {
                        tracing::info!(
                            name = %cell.get().display_name(),
                            "project description reloaded from {}",
                            settings.display()
                        );
                    }
                }
                Err(e) if e != last_error => {
                    tracing::warn!(
                        "keeping the project description shown: {}: {e}",
                        settings.display()
                    );
                    last_error = e;
                }
                Err(_) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_keep_unset_fields_and_refuse_bad_text() {
        let p = Project::default()
            .edited(ProjectEdit {
                name: Some("  Prime Hunt ".into()),
                url: Some("https://example.org/primes".into()),
                ..ProjectEdit::default()
            })
            .unwrap();
        assert_eq!(p.display_name(), "Prime Hunt");
        assert_eq!(p.link(), Some("https://example.org/primes"));
        let q = p
            .edited(ProjectEdit {
                description: Some("Counting primes.\n\nBy hand.".into()),
                ..ProjectEdit::default()
            })
            .unwrap();
        assert_eq!(
            (q.name.as_str(), q.url.as_str()),
            (p.name.as_str(), p.url.as_str())
        );
        for bad in [
            ProjectEdit {
                url: Some("javascript:alert(1)".into()),
                ..ProjectEdit::default()
            },
            ProjectEdit {
                name: Some("a\nb".into()),
                ..ProjectEdit::default()
            },
            ProjectEdit {
                name: Some("x".repeat(MAX_NAME + 1)),
                ..ProjectEdit::default()
            },
        ] {
            assert!(p.edited(bad).is_err());
        }
        assert_eq!(Project::default().display_name(), "peergrid");
        assert_eq!(
            Project {
                url: "javascript:alert(1)".into(),
                ..Project::default()
            }
            .link(),
            None
        );
    }

    #[test]
    fn the_project_table_is_read_from_the_settings_file() {
        let text =
            "public_addr = \"a:1\"\nresearcher_token_blake3 = \"00\"\n\n[project]\nname = \"Pi\"\n";
        assert_eq!(parse(text).unwrap().name, "Pi");
        assert!(parse("public_addr = \"a:1\"\n").unwrap().is_empty());
        assert!(parse("[project]\nname = 3\n").is_err());
    }
}
