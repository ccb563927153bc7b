//! External tensor data: bytes kept in a side file next to the model.
//!
//! Exporters (torch for models over 2 GiB, `onnx.save(..., save_as_external_data=True)`)
//! write weights to e.g. `model.onnx.data` and record `location` / `offset` / `length` in
//! the tensor. The location comes from the file, so it is untrusted: it must be a plain
//! relative path that stays inside the model's directory (no absolute paths, no `..`).
//! Symbolic links inside that directory are followed on purpose: the Hugging Face cache
//! stores every file as a link into a shared blob folder.
//!
//! One more bound: across a model, no more bytes may be read from a file than it holds.
//! Real exporters give each tensor its own region; without this, a tiny model could point
//! thousands of tensors at the same gigabyte and make the loader allocate terabytes.
use crate::proto::StringStringEntryProto;
use kuaxin_core::{Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// Where one model's external data lives, and how much of each file has been read so far.
pub(crate) struct ExternalFiles<'a> {
    dir: Option<&'a Path>,
    read: RefCell<HashMap<PathBuf, u64>>,
}

impl<'a> ExternalFiles<'a> {
    /// `dir`: the model's directory; `None` makes any external reference an error.
    pub(crate) fn new(dir: Option<&'a Path>) -> Self {
        ExternalFiles {
            dir,
            read: RefCell::new(HashMap::new()),
        }
    }

    /// Reads exactly `nbytes` bytes described by `entries` (see [`read_external`]).
    pub(crate) fn read(
        &self,
        entries: &[StringStringEntryProto],
        nbytes: usize,
    ) -> Result<Vec<u8>> {
        read_external(entries, nbytes, self.dir, &mut self.read.borrow_mut())
    }
}

/// Reads exactly `nbytes` bytes of external data described by `entries`, relative to
/// `base_dir`. Checks the key values, the file's real length and the per-file budget
/// (`read`: bytes already taken from each file) before allocating.
fn read_external(
    entries: &[StringStringEntryProto],
    nbytes: usize,
    base_dir: Option<&Path>,
    read: &mut HashMap<PathBuf, u64>,
) -> Result<Vec<u8>> {
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for e in entries {
        match e.key() {
            "location" => location = Some(e.value()),
            "offset" => offset = parse_u64("offset", e.value())?,
            "length" => length = Some(parse_u64("length", e.value())?),
            _ => {} // "checksum" and future keys do not change where the bytes are
        }
    }
    let location = location.ok_or_else(|| Error::invalid("external data has no 'location'"))?;
    let rel = contained_path(location)?;
    let base = base_dir.ok_or_else(|| {
        Error::invalid(format!(
            "external data '{location}' needs the model's directory, but none was given"
        ))
    })?;
    if let Some(len) = length {
        if len != nbytes as u64 {
            return Err(Error::invalid(format!(
                "external data '{location}' has length {len} but the dims need {nbytes} bytes"
            )));
        }
    }
    let path = base.join(rel);
    let mut file = File::open(&path).map_err(|e| {
        Error::io(format!(
            "cannot open external data file '{}': {e}",
            path.display()
        ))
    })?;
    let file_len = file
        .metadata()
        .map_err(|e| {
            Error::io(format!(
                "cannot stat external data file '{}': {e}",
                path.display()
            ))
        })?
        .len();
    let end = offset.checked_add(nbytes as u64);
    if end.is_none_or(|end| end > file_len) {
        return Err(Error::invalid(format!(
            "external data needs {nbytes} bytes at offset {offset} of '{location}', \
             which has only {file_len} bytes"
        )));
    }
    let used = read.entry(path.clone()).or_insert(0);
    let total = used.saturating_add(nbytes as u64);
    if total > file_len {
        return Err(Error::invalid(format!(
            "tensors read {total} bytes in all from '{location}', which has only {file_len} \
             (external data regions overlap)"
        )));
    }
    *used = total;
    let mut buf = vec![0u8; nbytes];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(|e| {
            Error::io(format!(
                "cannot read external data file '{}': {e}",
                path.display()
            ))
        })?;
    Ok(buf)
}

fn parse_u64(key: &str, v: &str) -> Result<u64> {
    v.trim().parse().map_err(|_| {
        Error::invalid(format!(
            "external data '{key}' is not a non-negative integer: {v:?}"
        ))
    })
}

/// `location` as a relative path that cannot leave the directory it is joined to.
fn contained_path(location: &str) -> Result<PathBuf> {
    let p = Path::new(location);
    let escapes = || {
        Error::invalid(format!(
            "external data location '{location}' escapes the model directory \
             (must be a relative path without '..')"
        ))
    };
    if location.is_empty() {
        return Err(Error::invalid("external data location is empty"));
    }
    if p.is_absolute() || p.has_root() {
        return Err(escapes());
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(escapes())
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(Error::invalid(format!(
            "external data location '{location}' names no file"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::contained_path;

    #[test]
    fn locations_must_stay_inside() {
        assert!(contained_path("model.onnx.data").is_ok());
        assert!(contained_path("./weights/w.bin").is_ok());
        assert!(contained_path("../secret").is_err());
        assert!(contained_path("a/../../b").is_err());
        assert!(contained_path("/etc/passwd").is_err());
        assert!(contained_path("").is_err());
        assert!(contained_path(".").is_err());
    }
}
