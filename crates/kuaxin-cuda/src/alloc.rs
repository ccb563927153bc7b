//! A caching allocator: device memory freed by a dropped tensor goes to a free list by size
//! class and is handed to the next allocation of that class without a driver call. All work
//! runs in order on one stream, so a block reused by later work can never be overwritten
//! while earlier work still reads it. When the driver runs out of memory, the cache is
//! returned to it and the allocation tried again; failing that, the error names the tensor.
use cudarc::driver::{result, sys, CudaContext, CudaStream};
use kuaxin_core::prim::TensorType;
use kuaxin_core::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct Pool {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    free: Mutex<HashMap<usize, Vec<sys::CUdeviceptr>>>,
}

/// Device memory of one tensor; returns to the pool when dropped.
pub struct Block {
    pub ptr: sys::CUdeviceptr,
    class: usize,
    pool: Arc<Pool>,
}

impl Drop for Block {
    fn drop(&mut self) {
        if self.class > 0 {
            if let Ok(mut f) = self.pool.free.lock() {
                f.entry(self.class).or_default().push(self.ptr);
            }
        }
    }
}

/// The size class of a request: 512-byte steps below 1 MiB, then sixteenths of a power of two,
/// so a class wastes at most an eighth of the request.
pub fn size_class(bytes: usize) -> usize {
    if bytes == 0 {
        return 0;
    }
    if bytes < 1 << 20 {
        return bytes.div_ceil(512) * 512;
    }
    let step = bytes.next_power_of_two() / 16;
    bytes.div_ceil(step) * step
}

impl Pool {
    pub fn new(ctx: Arc<CudaContext>, stream: Arc<CudaStream>) -> Arc<Pool> {
        Arc::new(Pool {
            ctx,
            stream,
            free: Mutex::new(HashMap::new()),
        })
    }

    /// Memory for a tensor of type `ty`, named in the error when there is none.
    pub fn alloc(self: &Arc<Self>, ty: &TensorType, device: &str) -> Result<Block> {
        let bytes = ty.numel().saturating_mul(ty.dtype.size());
        let class = size_class(bytes);
        if class == 0 {
            return Ok(Block {
                ptr: 0,
                class,
                pool: self.clone(),
            });
        }
        let cached = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.get_mut(&class).and_then(|v| v.pop()));
        if let Some(ptr) = cached {
            return Ok(Block {
                ptr,
                class,
                pool: self.clone(),
            });
        }
        self.ctx
            .bind_to_thread()
            .map_err(|e| Error::backend(format!("{device}: {e:?}")))?;
        // SAFETY: a plain allocation in the bound context.
        let first = unsafe { result::malloc_sync(class) };
        let ptr = match first {
            Ok(p) => p,
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                self.trim()?;
                // SAFETY: as above.
                unsafe { result::malloc_sync(class) }
                    .map_err(|_| self.out_of_memory(ty, bytes, device))?
            }
            Err(e) => return Err(Error::backend(format!("{device}: allocating {ty}: {e:?}"))),
        };
        Ok(Block {
            ptr,
            class,
            pool: self.clone(),
        })
    }

    fn out_of_memory(&self, ty: &TensorType, bytes: usize, device: &str) -> Error {
        let (free, total) = result::mem_get_info().unwrap_or((0, 0));
        Error::backend(format!(
            "{device}: out of memory allocating tensor {ty} ({} MiB; {} MiB free of {} MiB)",
            bytes >> 20,
            free >> 20,
            total >> 20
        ))
    }

    /// Returns every cached block to the driver (after the work that used them is done).
    pub fn trim(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| Error::backend(format!("cuda: synchronize: {e:?}")))?;
        let blocks: Vec<sys::CUdeviceptr> = match self.free.lock() {
            Ok(mut f) => f.drain().flat_map(|(_, v)| v).collect(),
            Err(_) => return Ok(()),
        };
        for p in blocks {
            // SAFETY: cached blocks have no owner and no pending work.
            unsafe { result::free_sync(p) }
                .map_err(|e| Error::backend(format!("cuda: free: {e:?}")))?;
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        let _ = self.trim();
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_waste_little() {
        assert_eq!(size_class(0), 0);
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(513), 1024);
        assert_eq!(size_class(3 << 20), 3 << 20);
        let big = (5 << 20) + 1;
        let c = size_class(big);
        assert!(c >= big && c - big <= big / 8, "{c}");
    }
}
