//! Exporting a job's dataset to a file without ever losing the file that
//! was there: the export goes to a temporary file beside it, its BLAKE3
//! is checked against the coordinator's checksum manifest, and only then
//! is it renamed over the old one. A refused request, a server that is
//! down or stops mid-way, or bytes that do not match leave the old file
//! as it was.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::{Client, ClientError, io_err};

type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How often an export is tried again when the dataset changed while it
/// was downloaded (rows of a running job arriving in between).
const ATTEMPTS: usize = 3;

/// What an export to a file wrote.
#[derive(Debug, PartialEq, Eq)]
pub struct Exported {
    pub bytes: u64,
    /// BLAKE3 (hex) of the file, as the manifest gives it.
    pub blake3: String,
}

/// Writes job `job`'s export in `format` (`jsonl`, `csv`, `csv_columns`
/// or `parquet`, as the manifest names them) to `path`,
/// replacing it only once the whole export arrived and matches the
/// manifest.
pub fn export_to_file(client: &Client, job: u64, format: &str, path: &Path) -> Result<Exported> {
    let keep = |e: ClientError| keep_note(e, path);
    for _ in 0..ATTEMPTS {
        let before = client.export_digest(job, format).map_err(keep)?;
        let (tmp, got) = download(client, job, format, path).map_err(keep)?;
        let matches = |d: &(String, u64)| d.0 == got.blake3 && d.1 == got.bytes;
        let settled = if matches(&before) {
            true
        } else {
            // The dataset may have grown between the manifest and the
            // export: the manifest read after the export then matches.
            let after = client.export_digest(job, format).map_err(keep)?;
            if matches(&after) {
                true
            } else if after == before {
                return Err(keep(ClientError::BadAnswer(format!(
                    "the export of job {job} does not match the checksum manifest \
                     (got {} bytes with BLAKE3 {}; the manifest says {} bytes with BLAKE3 {})",
                    got.bytes, got.blake3, before.1, before.0
                ))));
            } else {
                false
            }
        };
        if settled {
            keep_permissions(path, tmp.as_file());
            tmp.persist(path)
                .map_err(|e| io_err(path)(e.error))
                .map_err(keep)?;
            return Ok(got);
        }
    }
    Err(keep(ClientError::BadAnswer(format!(
        "the dataset of job {job} changed during each of {ATTEMPTS} tries; \
         try again, or once the job has finished"
    ))))
}

/// Says at the end of the error (its causes included) that the file at
/// `path`, if any, is untouched.
fn keep_note(e: ClientError, path: &Path) -> ClientError {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    let note = if path.exists() {
        "is left as it was"
    } else {
        "was not written"
    };
    ClientError::Spec(format!("{text}; {} {note}", path.display()))
}

/// Downloads the export into a temporary file in `path`'s folder (so the
/// rename stays on one file system), hashing it on the way.
fn download(
    client: &Client,
    job: u64,
    format: &str,
    path: &Path,
) -> Result<(tempfile::NamedTempFile, Exported)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".part");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder.tempfile_in(dir).map_err(io_err(dir))?;
    let mut out = Hashing {
        inner: BufWriter::new(tmp.as_file()),
        hasher: blake3::Hasher::new(),
    };
    let bytes = client.export(job, format, &mut out)?;
    out.inner.flush().map_err(io_err(tmp.path()))?;
    let blake3 = out.hasher.finalize().to_hex().to_string();
    drop(out);
    tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
    Ok((tmp, Exported { bytes, blake3 }))
}

/// The replaced file's permissions carry over to the new one.
fn keep_permissions(path: &Path, new: &std::fs::File) {
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = new.set_permissions(meta.permissions());
    }
}

/// Hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
