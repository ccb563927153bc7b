//! NumPy `.npz` bundles: a zip archive of `.npy` files, one per array.
//!
//! Reading accepts what `np.savez` writes: entries stored without compression (zip64 size
//! fields included, which numpy always writes in local headers). Compressed entries
//! (`np.savez_compressed`) are refused with an error naming the entry. Writing produces a
//! plain stored zip that `np.load` reads. Every entry's CRC-32 is checked; malformed archives
//! give an error naming the file and entry, never a panic.
use kuaxin_core::{Error, Result, Tensor};
use std::path::Path;

const EOCD_SIG: u32 = 0x0605_4b50;
const CDIR_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;
const ZIP64_EXTRA: u16 = 0x0001;

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}

/// One central-directory entry: where its data is and how big.
struct Entry {
    name: String,
    method: u16,
    crc: u32,
    size: u64,
    local_offset: u64,
}

/// Replaces 0xFFFFFFFF fields by their zip64 extra values (in the order the format lists them).
fn apply_zip64(extra: &[u8], size: &mut u64, csize: &mut u64, offset: &mut u64) {
    let mut at = 0;
    while let (Some(id), Some(len)) = (u16_at(extra, at), u16_at(extra, at + 2)) {
        let body = at + 4;
        if id == ZIP64_EXTRA {
            let mut p = body;
            for field in [size, csize, offset] {
                if *field == 0xFFFF_FFFF {
                    if let Some(v) = u64_at(extra, p) {
                        *field = v;
                    }
                    p += 8;
                }
            }
            return;
        }
        at = body + len as usize;
    }
}

fn central_directory(b: &[u8]) -> Result<Vec<Entry>> {
    // The end record is in the last 22 + 65535 bytes (it may end with a comment).
    let lo = b.len().saturating_sub(22 + 65535);
    let eocd = (lo..=b.len().saturating_sub(22))
        .rev()
        .find(|&i| u32_at(b, i) == Some(EOCD_SIG))
        .ok_or_else(|| Error::invalid("not a zip archive (no end-of-central-directory record)"))?;
    let count = u16_at(b, eocd + 10).unwrap_or(0);
    let cd_offset = u32_at(b, eocd + 16).unwrap_or(0);
    if count == 0xFFFF || cd_offset == 0xFFFF_FFFF {
        return Err(Error::unsupported(
            "zip64 archives (over 65535 arrays or 4 GiB) are not supported",
        ));
    }
    let mut at = cd_offset as usize;
    let mut entries = Vec::with_capacity(count as usize);
    for i in 0..count {
        let bad = || {
            Error::invalid(format!(
                "central directory entry {i} is truncated or corrupt"
            ))
        };
        if u32_at(b, at) != Some(CDIR_SIG) {
            return Err(bad());
        }
        let method = u16_at(b, at + 10).ok_or_else(bad)?;
        let crc = u32_at(b, at + 16).ok_or_else(bad)?;
        let mut csize = u32_at(b, at + 20).ok_or_else(bad)? as u64;
        let mut size = u32_at(b, at + 24).ok_or_else(bad)? as u64;
        let name_len = u16_at(b, at + 28).ok_or_else(bad)? as usize;
        let extra_len = u16_at(b, at + 30).ok_or_else(bad)? as usize;
        let comment_len = u16_at(b, at + 32).ok_or_else(bad)? as usize;
        let mut local_offset = u32_at(b, at + 42).ok_or_else(bad)? as u64;
        let name = b.get(at + 46..at + 46 + name_len).ok_or_else(bad)?;
        let name = String::from_utf8_lossy(name).into_owned();
        let extra = b
            .get(at + 46 + name_len..at + 46 + name_len + extra_len)
            .ok_or_else(bad)?;
        apply_zip64(extra, &mut size, &mut csize, &mut local_offset);
        if method == 0 && csize != size {
            return Err(Error::invalid(format!(
                "entry '{name}': stored entry with different sizes"
            )));
        }
        entries.push(Entry {
            name,
            method,
            crc,
            size,
            local_offset,
        });
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(entries)
}

fn entry_data<'b>(b: &'b [u8], e: &Entry) -> Result<&'b [u8]> {
    let bad = || {
        Error::invalid(format!(
            "entry '{}': local header is truncated or corrupt",
            e.name
        ))
    };
    let at = usize::try_from(e.local_offset).map_err(|_| bad())?;
    if u32_at(b, at) != Some(LOCAL_SIG) {
        return Err(bad());
    }
    let name_len = u16_at(b, at + 26).ok_or_else(bad)? as usize;
    let extra_len = u16_at(b, at + 28).ok_or_else(bad)? as usize;
    let start = at + 30 + name_len + extra_len;
    let len = usize::try_from(e.size).map_err(|_| bad())?;
    let data = start
        .checked_add(len)
        .and_then(|end| b.get(start..end))
        .ok_or_else(|| {
            Error::invalid(format!(
                "entry '{}': data runs past the end of the file",
                e.name
            ))
        })?;
    if crc32(data) != e.crc {
        return Err(Error::invalid(format!(
            "entry '{}': CRC-32 mismatch (corrupt archive)",
            e.name
        )));
    }
    Ok(data)
}

/// Decodes the bytes of an `.npz`: arrays by name (the entry name without `.npy`), in archive order.
pub fn read_npz_bytes(bytes: &[u8], name: &str) -> Result<Vec<(String, Tensor)>> {
    let entries = central_directory(bytes).map_err(|e| e.context(name))?;
    let mut out = Vec::with_capacity(entries.len());
    for e in &entries {
        if e.name.ends_with('/') {
            continue;
        }
        if e.method != 0 {
            return Err(Error::unsupported(format!(
                "{name}: entry '{}' is compressed (method {}); only uncompressed bundles (np.savez, not np.savez_compressed) are read",
                e.name, e.method
            )));
        }
        let data = entry_data(bytes, e).map_err(|err| err.context(name))?;
        let t = crate::read_npy_bytes(data, &format!("{name}: entry '{}'", e.name))?;
        let key = e.name.strip_suffix(".npy").unwrap_or(&e.name).to_string();
        out.push((key, t));
    }
    Ok(out)
}

/// Reads an `.npz` file.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::io(format!("{}: cannot read: {e}", path.display())))?;
    read_npz_bytes(&bytes, &path.display().to_string())
}

fn push16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn push32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// Encodes arrays as an uncompressed `.npz` (entries `NAME.npy`). Fails past the 4 GiB and
/// 65535-entry limits of a plain zip.
pub fn to_npz_bytes(arrays: &[(String, Tensor)]) -> Result<Vec<u8>> {
    if arrays.len() >= 0xFFFF {
        return Err(Error::unsupported(format!(
            "{} arrays: a bundle holds at most 65534",
            arrays.len()
        )));
    }
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, t) in arrays {
        let fname = format!("{name}.npy");
        let data = crate::to_npy_bytes(t);
        let offset = out.len();
        let too_big = |what: &str| {
            Error::unsupported(format!(
                "array '{name}': {what} exceeds 4 GiB (zip64 is not written)"
            ))
        };
        let size = u32::try_from(data.len()).map_err(|_| too_big("its size"))?;
        let offset32 = u32::try_from(offset).map_err(|_| too_big("the bundle"))?;
        let name_len = u16::try_from(fname.len())
            .map_err(|_| Error::invalid(format!("array name '{name}' is too long")))?;
        let crc = crc32(&data);
        // Local header: version 2.0, no flags, stored, zero time and date.
        push32(&mut out, LOCAL_SIG);
        for x in [20u16, 0, 0, 0, 0x21] {
            push16(&mut out, x);
        }
        push32(&mut out, crc);
        push32(&mut out, size);
        push32(&mut out, size);
        push16(&mut out, name_len);
        push16(&mut out, 0);
        out.extend_from_slice(fname.as_bytes());
        out.extend_from_slice(&data);
        push32(&mut central, CDIR_SIG);
        for x in [20u16, 20, 0, 0, 0, 0x21] {
            push16(&mut central, x);
        }
        push32(&mut central, crc);
        push32(&mut central, size);
        push32(&mut central, size);
        for x in [name_len, 0, 0, 0, 0] {
            push16(&mut central, x);
        }
        push32(&mut central, 0);
        push32(&mut central, offset32);
        central.extend_from_slice(fname.as_bytes());
    }
    let cd_offset = u32::try_from(out.len())
        .map_err(|_| Error::unsupported("bundle exceeds 4 GiB (zip64 is not written)"))?;
    let cd_len = central.len() as u32;
    out.extend_from_slice(&central);
    push32(&mut out, EOCD_SIG);
    for x in [0u16, 0, arrays.len() as u16, arrays.len() as u16] {
        push16(&mut out, x);
    }
    push32(&mut out, cd_len);
    push32(&mut out, cd_offset);
    push16(&mut out, 0);
    Ok(out)
}

/// Writes arrays as an uncompressed `.npz` file.
pub fn write_npz(path: &Path, arrays: &[(String, Tensor)]) -> Result<()> {
    let bytes = to_npz_bytes(arrays).map_err(|e| e.context(path.display()))?;
    std::fs::write(path, bytes)
        .map_err(|e| Error::io(format!("{}: cannot write: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuaxin_core::DType;

    fn sample() -> Vec<(String, Tensor)> {
        vec![
            (
                "a".into(),
                Tensor::from_vec(vec![2, 2], vec![1.0f32, -2.0, 3.5, 0.25]).unwrap(),
            ),
            (
                "ids".into(),
                Tensor::from_vec(vec![3], vec![7i64, 8, 9]).unwrap(),
            ),
        ]
    }

    #[test]
    fn round_trip() {
        let bytes = to_npz_bytes(&sample()).unwrap();
        let back = read_npz_bytes(&bytes, "t.npz").unwrap();
        assert_eq!(back, sample());
        assert_eq!(back[1].1.dtype(), DType::I64);
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn corruption_and_truncation_are_errors_naming_the_file() {
        let mut bytes = to_npz_bytes(&sample()).unwrap();
        let e = read_npz_bytes(&bytes[..bytes.len() / 2], "t.npz")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.npz"), "{e}");
        // Flip one data byte of the first entry: its CRC no longer matches.
        bytes[100] ^= 0xFF;
        let e = read_npz_bytes(&bytes, "t.npz").unwrap_err().to_string();
        assert!(e.contains("entry 'a.npy'") && e.contains("CRC"), "{e}");
        assert!(read_npz_bytes(b"", "e.npz").is_err());
        assert!(read_npz_bytes(&[0u8; 40], "z.npz").is_err());
    }

    #[test]
    fn compressed_entries_are_refused_by_name() {
        let mut bytes = to_npz_bytes(&sample()).unwrap();
        // Set the method of the first central-directory entry to deflate (8).
        let cd = bytes
            .windows(4)
            .position(|w| w == CDIR_SIG.to_le_bytes())
            .unwrap();
        bytes[cd + 10] = 8;
        let e = read_npz_bytes(&bytes, "c.npz").unwrap_err();
        assert!(
            e.is_unsupported() && e.to_string().contains("'a.npy'"),
            "{e}"
        );
    }
}
