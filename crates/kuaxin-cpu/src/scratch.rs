//! Per-thread scratch buffers that outlive one call: a convolution's column matrix (megabytes
//! for a 3x3 layer) was allocated zeroed on every call, which cost a memset and, for sizes the
//! allocator maps fresh, a page fault per 4 KiB, only for im2col to overwrite it all.
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    static BUFFERS: RefCell<HashMap<TypeId, Box<dyn Any>>> = RefCell::new(HashMap::new());
}

/// Runs `f` on this thread's scratch buffer of `len` elements of `T`. Its contents are
/// whatever an earlier call left (or `T::default()`): `f` must write what it reads. A nested
/// call on the same thread gets a buffer of its own.
pub fn with_scratch<T: Copy + Default + 'static, R>(
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let key = TypeId::of::<T>();
    let taken = BUFFERS
        .with(|b| b.try_borrow_mut().ok().and_then(|mut m| m.remove(&key)))
        .and_then(|b| b.downcast::<Vec<T>>().ok());
    let mut buf = taken.map(|b| *b).unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, T::default());
    }
    let r = f(&mut buf[..len]);
    BUFFERS.with(|b| {
        if let Ok(mut m) = b.try_borrow_mut() {
            m.insert(key, Box::new(buf));
        }
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_reused_and_nested_calls_get_their_own() {
        let first = with_scratch::<f32, _>(8, |b| {
            b.fill(3.0);
            b.as_ptr() as usize
        });
        // The same allocation comes back, with what the last call wrote.
        let again = with_scratch::<f32, _>(4, |b| {
            assert_eq!(b, &[3.0; 4]);
            with_scratch::<f32, _>(4, |inner| {
                assert_ne!(inner.as_ptr(), b.as_ptr());
            });
            b.as_ptr() as usize
        });
        assert_eq!(first, again);
        // Other element types have buffers of their own.
        with_scratch::<f64, _>(2, |b| assert_eq!(b, &[0.0; 2]));
    }
}
