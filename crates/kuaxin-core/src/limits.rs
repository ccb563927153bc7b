//! The allocation limit, shared by every crate: no tensor, scratch buffer or host-built table
//! larger than
//! `KUAXIN_MAX_TENSOR_BYTES` bytes (default 8 GiB). Hostile shapes fail cleanly instead of
//! aborting the process.
use crate::{DType, Error, Result};

/// Default limit: 8 GiB.
pub const DEFAULT_MAX_TENSOR_BYTES: u64 = 8 << 30;

/// The current limit, read from `KUAXIN_MAX_TENSOR_BYTES` (bytes, decimal) on every call.
pub fn max_tensor_bytes() -> u64 {
    std::env::var("KUAXIN_MAX_TENSOR_BYTES")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_MAX_TENSOR_BYTES)
}

/// Errors (kind `Backend`) when `bytes` is over the limit.
pub fn check_bytes(bytes: u128) -> Result<()> {
    if bytes > max_tensor_bytes() as u128 {
        return Err(Error::backend(format!(
            "out of memory: tensor of {bytes} bytes exceeds the limit"
        )));
    }
    Ok(())
}

/// Checks a buffer of `numel` elements of `dtype`.
pub fn check_alloc(dtype: DType, numel: usize) -> Result<()> {
    check_bytes(numel as u128 * dtype.size() as u128)
}

/// Checks a buffer of `numel` elements of `T`.
pub fn check_elems<T>(numel: usize) -> Result<()> {
    check_bytes(numel as u128 * std::mem::size_of::<T>() as u128)
}
