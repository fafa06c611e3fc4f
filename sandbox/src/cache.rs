//! The on-disk cache of compiled modules, so a restarted worker skips
//! compilation; and the crate's one `unsafe`, which loads code from it.
//!
//! Each engine keeps its files in `<folder>/<16 hex of BLAKE3(engine id)>/
//! <module hash>.cwasm` (a [`CompiledDir`]). A file holds a magic, a BLAKE3
//! checksum and the bytes of `Module::serialize`; anything wrong with it
//! (missing, torn, corrupt, refused by wasmtime's own version and
//! configuration check) is a miss: the module is compiled again and the
//! file rewritten. The in-memory cache of linked modules is the
//! [`Sandbox`](crate::Sandbox)'s own (`run.rs`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use peergrid_proto::Hash;
use wasmtime::{Engine, Module};

/// First bytes of a compiled-module file; a new layout gets a new magic.
/// The layout: magic, [`blake3::OUT_LEN`] bytes of [`compiled_checksum`],
/// then what `Module::serialize` produced.
pub(crate) const COMPILED_MAGIC: &[u8; 8] = b"pgcwasm1";
/// Extension of compiled-module files.
const COMPILED_EXTENSION: &str = "cwasm";
/// BLAKE3 key-derivation context of [`compiled_checksum`].
const COMPILED_CHECKSUM_CONTEXT: &str = "peergrid compiled-module checksum v1";

/// One engine configuration's folder of compiled modules.
pub(crate) struct CompiledDir {
    /// `<cache dir>/<16 hex of BLAKE3(engine id)>`: code compiled under one
    /// configuration is never offered to another.
    pub(crate) dir: PathBuf,
    /// The engine the code is compiled for and loaded into.
    engine: Engine,
    /// Names the engine's configuration; every file's checksum covers it.
    engine_id: String,
}

impl CompiledDir {
    /// The folder under `cache_dir` for code compiled by `engine`, whose
    /// configuration `engine_id` names. Created when the first module is
    /// written.
    pub(crate) fn new(cache_dir: &Path, engine: &Engine, engine_id: &str) -> CompiledDir {
        let id_hash = blake3::hash(engine_id.as_bytes()).to_hex();
        CompiledDir {
            dir: cache_dir.join(&id_hash[..16]),
            engine: engine.clone(),
            engine_id: engine_id.to_string(),
        }
    }

    /// Where `module`'s compiled code lives.
    pub(crate) fn path(&self, module: &Hash) -> PathBuf {
        self.dir
            .join(format!("{}.{COMPILED_EXTENSION}", module.to_hex()))
    }

    /// `module`'s compiled code, or `None` on a miss. A file that is there
    /// but unusable is logged and treated as a miss (the caller recompiles
    /// and overwrites it).
    pub(crate) fn read(&self, module: &Hash) -> Option<Module> {
        let path = self.path(module);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read a compiled module, compiling again: {e}");
                return None;
            }
        };
        match self.deserialize_verified(module, &bytes) {
            Ok(compiled) => Some(compiled),
            Err(reason) => {
                tracing::warn!(path = %path.display(), "ignoring a compiled module, compiling again: {reason}");
                None
            }
        }
    }

    /// Turns the bytes of a compiled-module file back into a module, once
    /// the checksum shows they are what [`CompiledDir::write`] wrote for
    /// this engine id and this module.
    #[allow(unsafe_code)]
    pub(crate) fn deserialize_verified(
        &self,
        module: &Hash,
        file: &[u8],
    ) -> Result<Module, String> {
        let checksum_end = COMPILED_MAGIC.len() + blake3::OUT_LEN;
        if file.len() < checksum_end || !file.starts_with(COMPILED_MAGIC) {
            return Err("not a compiled-module file of this version".to_string());
        }
        let (header, serialized) = file.split_at(checksum_end);
        let checksum = compiled_checksum(&self.engine_id, module, serialized);
        if header[COMPILED_MAGIC.len()..] != *checksum.as_bytes() {
            return Err("checksum mismatch (torn write or corruption)".to_string());
        }
        // SAFETY: `Module::deserialize` trusts its input to be code that
        // `Module::serialize` produced; it cannot check machine code. These
        // bytes are exactly what `write` wrote from `Module::serialize` on
        // an engine with this configuration: the checksum just verified
        // binds them to this engine id (which names the configuration) and
        // this module hash, and it was checked on the bytes in memory, so a
        // later change to the file cannot reach them (unlike
        // `deserialize_file`, which maps the file). wasmtime still checks
        // its exact version, the CPU features and the settings that matter
        // for safety, and refuses a mismatch, which the caller treats as a
        // miss; it ignores NaN canonicalization, which is why the engine id
        // is in the checksum and the folder name. Whoever could forge a file
        // here can write the worker's data folder, and so could already
        // replace the worker itself.
        unsafe { Module::deserialize(&self.engine, serialized) }.map_err(|e| format!("{e:#}"))
    }

    /// Writes `compiled` as `module`'s file. Failure only costs a
    /// recompilation next time, so it is logged, not returned.
    pub(crate) fn write(&self, module: &Hash, compiled: &Module) {
        let path = self.path(module);
        let written = compiled
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|serialized| {
                write_compiled_file(&self.dir, &path, &self.engine_id, module, &serialized)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "cannot cache a compiled module on disk: {e}");
        }
    }
}

/// Writes a compiled-module file atomically: a temporary file in the same
/// folder, renamed over `path`, so readers see the old file, the new one or
/// none, never half of one. No fsync: a file torn by a crash fails its
/// checksum and is simply rewritten.
pub(crate) fn write_compiled_file(
    dir: &Path,
    path: &Path,
    engine_id: &str,
    module: &Hash,
    serialized: &[u8],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(COMPILED_MAGIC)?;
    file.write_all(compiled_checksum(engine_id, module, serialized).as_bytes())?;
    file.write_all(serialized)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// BLAKE3 over the engine id, the module hash and the serialized code, so a
/// file only verifies for the engine and module it was written for.
pub(crate) fn compiled_checksum(engine_id: &str, module: &Hash, serialized: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_derive_key(COMPILED_CHECKSUM_CONTEXT);
    hasher.update(&(engine_id.len() as u64).to_le_bytes());
    hasher.update(engine_id.as_bytes());
    hasher.update(&module.0);
    hasher.update(serialized);
    hasher.finalize()
}
