//! The weights of a Hugging Face folder: one `model.safetensors`, shards listed in
//! `model.safetensors.index.json`, or any `*.safetensors` files. Files are memory-mapped and
//! only the tensors asked for are read and converted.
use half::{bf16, f16};
use kuaxin_core::{DType, Data, Error, Result, Tensor};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::tensor::{Dtype as StDtype, Metadata};
use safetensors::SafeTensors;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

struct Shard {
    path: PathBuf,
    map: Mmap,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
    meta: Metadata,
}

pub struct Checkpoint {
    shards: Vec<Shard>,
    /// Tensor name -> shard index.
    index: HashMap<String, usize>,
    used: Mutex<BTreeSet<String>>,
    /// Synthesised weights instead of files (benchmarks at a real model's shape).
    random: Option<RandomWeights>,
}

/// Seeded random weights for any tensor asked for: norms 1, biases 0, other weights uniform
/// with the spread of a 0.02-std normal init.
#[derive(Debug, Clone, Copy)]
pub struct RandomWeights {
    pub seed: u64,
    /// Whether the LM head is tied (no `lm_head.weight`).
    pub tied: bool,
}

impl RandomWeights {
    fn make(&self, name: &str, shape: &[usize], dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        let constant = if name.ends_with("norm.weight") {
            Some(1.0)
        } else if name.ends_with(".bias") {
            Some(0.0)
        } else {
            None
        };
        if let Some(c) = constant {
            return Tensor::full(dtype, shape.to_vec(), c);
        }
        let mut h = self.seed ^ 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        const CHUNK: usize = 1 << 16;
        let vals: Vec<f32> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .flat_map_iter(|c| {
                let mut x = h ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let len = CHUNK.min(n - c * CHUNK);
                (0..len).map(move |_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Uniform on [-a, a] with a = 0.02 * sqrt(3): std 0.02.
                    ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * 0.034_641
                })
            })
            .collect();
        let data = match dtype {
            DType::BF16 => Data::BF16(vals.par_iter().map(|&v| bf16::from_f32(v)).collect()),
            DType::F16 => Data::F16(vals.par_iter().map(|&v| f16::from_f32(v)).collect()),
            DType::F64 => Data::F64(vals.par_iter().map(|&v| v as f64).collect()),
            _ => Data::F32(vals),
        };
        Tensor {
            shape: shape.to_vec(),
            data,
        }
    }
}

fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index)
            .map_err(|e| Error::io(format!("cannot read {}: {e}", index.display())))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(format!("{} is not valid JSON: {e}", index.display())))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                Error::invalid(format!("{} has no 'weight_map' object", index.display()))
            })?;
        let mut files: BTreeSet<String> = BTreeSet::new();
        for (name, f) in map {
            let f = f.as_str().ok_or_else(|| {
                Error::invalid(format!(
                    "{}: shard of '{name}' is not a file name",
                    index.display()
                ))
            })?;
            if f.contains('/') || f.contains("..") {
                return Err(Error::invalid(format!(
                    "{}: shard '{f}' of '{name}' is not a file in the model folder",
                    index.display()
                )));
            }
            files.insert(f.to_string());
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot list {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no model.safetensors, model.safetensors.index.json or *.safetensors file",
            dir.display()
        )));
    }
    Ok(found)
}

fn open_shard(path: &Path) -> Result<Shard> {
    let file =
        File::open(path).map_err(|e| Error::io(format!("cannot open {}: {e}", path.display())))?;
    // SAFETY: the map is read-only; a file changed underneath while loading can give wrong
    // weights but not unsoundness beyond what reading a racing file gives.
    let map = unsafe { Mmap::map(&file) }
        .map_err(|e| Error::io(format!("cannot map {}: {e}", path.display())))?;
    let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| {
        Error::invalid(format!(
            "{} is not a valid safetensors file: {e}",
            path.display()
        ))
    })?;
    Ok(Shard {
        path: path.to_path_buf(),
        map,
        data_start: 8 + n,
        meta,
    })
}

fn to_kuaxin(dt: StDtype) -> Option<DType> {
    Some(match dt {
        StDtype::F32 => DType::F32,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::F64 => DType::F64,
        _ => return None,
    })
}

/// Converts little-endian bytes of `from` into `to` (f32, f16 or bf16).
fn convert(bytes: &[u8], from: DType, to: DType) -> Data {
    fn read<T: Copy + Send + Sync, const N: usize>(
        bytes: &[u8],
        f: impl Fn([u8; N]) -> T + Sync,
    ) -> Vec<T> {
        bytes
            .par_chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N bytes")))
            .collect()
    }
    let as_f32: Vec<f32> = match from {
        DType::F32 if to == DType::F32 => return Data::F32(read(bytes, f32::from_le_bytes)),
        DType::BF16 if to == DType::BF16 => {
            return Data::BF16(read(bytes, |b| bf16::from_bits(u16::from_le_bytes(b))))
        }
        DType::F16 if to == DType::F16 => {
            return Data::F16(read(bytes, |b| f16::from_bits(u16::from_le_bytes(b))))
        }
        DType::F32 => read(bytes, f32::from_le_bytes),
        DType::BF16 => read(bytes, |b| bf16::from_bits(u16::from_le_bytes(b)).to_f32()),
        DType::F16 => read(bytes, |b| f16::from_bits(u16::from_le_bytes(b)).to_f32()),
        _ => read(bytes, |b| f64::from_le_bytes(b) as f32),
    };
    match to {
        DType::F64 => Data::F64(as_f32.par_iter().map(|&x| x as f64).collect()),
        DType::BF16 => Data::BF16(as_f32.par_iter().map(|&x| bf16::from_f32(x)).collect()),
        DType::F16 => Data::F16(as_f32.par_iter().map(|&x| f16::from_f32(x)).collect()),
        _ => Data::F32(as_f32),
    }
}

/// `[rows, cols]` -> `[cols, rows]`, in cache-sized tiles.
fn transpose<T: Copy + Send + Sync + Default>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
    const TILE: usize = 32;
    let mut out = vec![T::default(); v.len()];
    out.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(blk, chunk)| {
            let c0 = blk * TILE;
            let cw = chunk.len() / rows.max(1);
            for r0 in (0..rows).step_by(TILE) {
                for r in r0..(r0 + TILE).min(rows) {
                    for dc in 0..cw {
                        chunk[dc * rows + r] = v[r * cols + c0 + dc];
                    }
                }
            }
        });
    out
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let shards = shard_files(dir)?
            .iter()
            .map(|p| open_shard(p))
            .collect::<Result<Vec<_>>>()?;
        let mut index = HashMap::new();
        for (i, s) in shards.iter().enumerate() {
            for name in s.meta.tensors().keys() {
                index.insert(name.clone(), i);
            }
        }
        Ok(Checkpoint {
            shards,
            index,
            used: Mutex::new(BTreeSet::new()),
            random: None,
        })
    }

    /// A checkpoint that synthesises every tensor asked for.
    pub fn random(r: RandomWeights) -> Checkpoint {
        Checkpoint {
            shards: Vec::new(),
            index: HashMap::new(),
            used: Mutex::new(BTreeSet::new()),
            random: Some(r),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.random {
            Some(r) => !(r.tied && name == "lm_head.weight"),
            None => self.index.contains_key(name),
        }
    }

    /// The stored dtype of a tensor, if present.
    pub fn stored_dtype(&self, name: &str) -> Option<DType> {
        let s = &self.shards[*self.index.get(name)?];
        s.meta.info(name).and_then(|i| to_kuaxin(i.dtype))
    }

    /// Reads `name`, checks its shape, and converts it to `dtype`.
    pub fn tensor(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        if let Some(r) = &self.random {
            return Ok(r.make(name, shape, dtype));
        }
        let shard = self
            .index
            .get(name)
            .map(|&i| &self.shards[i])
            .ok_or_else(|| {
                Error::invalid(format!(
                    "tensor '{name}' is missing from the checkpoint (the config needs it)"
                ))
            })?;
        let info = shard.meta.info(name).ok_or_else(|| {
            Error::invalid(format!(
                "tensor '{name}' is missing from {}",
                shard.path.display()
            ))
        })?;
        if info.shape != shape {
            return Err(Error::invalid(format!(
                "tensor '{name}' in {} has shape {:?}, but the config implies {shape:?}",
                shard.path.display(),
                info.shape
            )));
        }
        let from = to_kuaxin(info.dtype).ok_or_else(|| {
            Error::unsupported(format!(
                "tensor '{name}' in {} is {:?}; kuaxin reads f32, f16, bf16 and f64 weights",
                shard.path.display(),
                info.dtype
            ))
        })?;
        let (a, b) = info.data_offsets;
        let n: usize = shape.iter().product();
        let (start, end) = (shard.data_start + a, shard.data_start + b);
        if b < a || end > shard.map.len() || b - a != n * from.size() {
            return Err(Error::invalid(format!(
                "tensor '{name}' in {}: its data range {a}..{b} does not fit the file or its shape",
                shard.path.display()
            )));
        }
        if let Ok(mut u) = self.used.lock() {
            u.insert(name.to_string());
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data: convert(&shard.map[start..end], from, dtype),
        })
    }

    /// A linear layer's weight stored `[out, in]` (PyTorch), returned as `[in, out]` so that
    /// `x @ w` needs no transpose at run time.
    pub fn linear(&self, name: &str, inp: usize, out: usize, dtype: DType) -> Result<Tensor> {
        if let Some(r) = &self.random {
            return Ok(r.make(name, &[inp, out], dtype));
        }
        let t = self.tensor(name, &[out, inp], dtype)?;
        let data = match t.data {
            Data::F32(v) => Data::F32(transpose(&v, out, inp)),
            Data::F16(v) => Data::F16(transpose(&v, out, inp)),
            Data::BF16(v) => Data::BF16(transpose(&v, out, inp)),
            Data::F64(v) => Data::F64(transpose(&v, out, inp)),
            other => other,
        };
        Ok(Tensor {
            shape: vec![inp, out],
            data,
        })
    }

    /// Names present in the files but never read (e.g. multi-token-prediction layers).
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        let mut v: Vec<String> = self
            .index
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Total bytes of the stored tensors.
    pub fn stored_bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| {
                s.meta
                    .tensors()
                    .values()
                    .map(|i| (i.data_offsets.1 - i.data_offsets.0) as u64)
                    .sum::<u64>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::transpose;

    #[test]
    fn transpose_matches_the_definition() {
        for (r, c) in [(1, 1), (3, 5), (33, 70), (64, 31)] {
            let v: Vec<u32> = (0..(r * c) as u32).collect();
            let t = transpose(&v, r, c);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(t[j * r + i], v[i * c + j], "({i}, {j}) of {r}x{c}");
                }
            }
        }
    }
}
