//! Constant weights prepared once per back end. The executor uploads every constant through
//! `Backend::upload_shared`, which registers it here; a matrix product whose B is a registered
//! constant asks for its [`PackedB`] and gets the copy packed on first use.
//!
//! Packed copies add memory (as much as the weights they copy), so they stop at a budget:
//! `KUAXIN_CPU_PACK_MIB` (default 1024). Products beyond it pack on every call, as before.
use crate::conv_blocked::{pack, PackedConv};
use crate::gemm::Mat;
use crate::panels::PackedB;
use kuaxin_core::Tensor;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

/// Packed copies of the constants one back end has seen.
#[derive(Default)]
pub struct Weights {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The registered constants by address. Holding a `Weak` keeps the allocation, so the
    /// address cannot be reused by another tensor while it is here.
    consts: HashMap<usize, Weak<Tensor>>,
    packed: HashMap<Key, Arc<PackedB>>,
    /// Convolution weights packed for the blocked layout, by the constant's address and the
    /// input channels of a block.
    blocked: HashMap<(usize, usize), Arc<PackedConv>>,
    bytes: usize,
}

/// A packed copy of (part of) a constant, and the key it is cached under.
trait Packed {
    type Key: Copy + Eq + Hash;
    /// The address of the constant a key names.
    fn tensor(key: &Self::Key) -> usize;
    /// Memory the copy holds.
    fn bytes(&self) -> usize;
    /// Where `Inner` keeps copies of this kind.
    fn map(inner: &mut Inner) -> &mut HashMap<Self::Key, Arc<Self>>;
}

impl Packed for PackedB {
    type Key = Key;
    fn tensor(key: &Key) -> usize {
        key.tensor
    }
    fn bytes(&self) -> usize {
        PackedB::bytes(self)
    }
    fn map(inner: &mut Inner) -> &mut HashMap<Key, Arc<Self>> {
        &mut inner.packed
    }
}

impl Packed for PackedConv {
    type Key = (usize, usize);
    fn tensor(key: &(usize, usize)) -> usize {
        key.0
    }
    fn bytes(&self) -> usize {
        PackedConv::bytes(self)
    }
    fn map(inner: &mut Inner) -> &mut HashMap<(usize, usize), Arc<Self>> {
        &mut inner.blocked
    }
}

impl Inner {
    /// Drops the copies of `P` whose constants are no longer registered.
    fn forget_dropped<P: Packed>(&mut self) {
        let mut map = std::mem::take(P::map(self));
        map.retain(|key, p| {
            let keep = self.consts.contains_key(&P::tensor(key));
            if !keep {
                self.bytes -= p.bytes();
            }
            keep
        });
        *P::map(self) = map;
    }
}

/// Which matrix of which constant a packed copy holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    tensor: usize,
    mat: Mat,
    k: usize,
    n: usize,
    width: usize,
}

fn budget_bytes() -> usize {
    use std::sync::OnceLock;
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        std::env::var("KUAXIN_CPU_PACK_MIB")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(1024)
            .saturating_mul(1 << 20)
    })
}

impl Weights {
    /// Records `t` as a constant (it stays alive across runs), and forgets the packed copies
    /// of constants that have since been dropped.
    pub fn register(&self, t: &Arc<Tensor>) {
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        g.consts.retain(|_, w| w.strong_count() > 0);
        g.forget_dropped::<PackedB>();
        g.forget_dropped::<PackedConv>();
        g.consts.insert(Arc::as_ptr(t) as usize, Arc::downgrade(t));
    }

    /// The copy of kind `P` under `key` (of the constant `t`), built by `build` now if there
    /// is none yet; `None` when `t` is not a registered constant, the copy would take the
    /// packed bytes past the budget (`need` of them), or `build` fails.
    fn cached<P: Packed>(
        &self,
        t: &Tensor,
        key: P::Key,
        need: usize,
        build: impl FnOnce() -> Option<P>,
    ) -> Option<Arc<P>> {
        {
            let mut g = self.inner.lock().ok()?;
            // `t` is alive (borrowed here), so a registered address with a live count is it.
            let tensor = t as *const Tensor as usize;
            if g.consts.get(&tensor).is_none_or(|w| w.strong_count() == 0) {
                return None;
            }
            if let Some(p) = P::map(&mut g).get(&key) {
                return Some(p.clone());
            }
            if g.bytes.saturating_add(need) > budget_bytes() {
                return None;
            }
        }
        let p = Arc::new(build()?);
        let mut g = self.inner.lock().ok()?;
        if let Some(old) = P::map(&mut g).insert(key, p.clone()) {
            g.bytes -= old.bytes();
        }
        g.bytes += p.bytes();
        Some(p)
    }

    /// The `k x n` matrix `mat` of the constant `t` (whose data is `src`) in panels of
    /// `width` columns, packed now if it is not yet; `None` when `t` is not a registered
    /// constant or the budget is spent.
    pub fn packed_b(
        &self,
        t: &Tensor,
        src: &[f32],
        mat: Mat,
        (k, n): (usize, usize),
        width: usize,
    ) -> Option<Arc<PackedB>> {
        let key = Key {
            tensor: t as *const Tensor as usize,
            mat,
            k,
            n,
            width,
        };
        let need = n
            .div_ceil(width.max(1))
            .saturating_mul(k)
            .saturating_mul(width.saturating_mul(4));
        self.cached(t, key, need, || {
            PackedB::with_width(src, mat, k, n, width).ok()
        })
    }

    /// The constant convolution weight `t` (`[m, c, kh, kw]`, data `src`) packed for the
    /// blocked layout in input blocks of `ci_block` channels ([`pack`]), now if it is not
    /// yet; `None` when `t` is not a registered constant, does not pack, or the budget is
    /// spent.
    pub fn packed_conv(
        &self,
        t: &Tensor,
        src: &[f32],
        shape: [usize; 4],
        ci_block: usize,
    ) -> Option<Arc<PackedConv>> {
        let key = (t as *const Tensor as usize, ci_block);
        let need = src.len().saturating_mul(4);
        self.cached(t, key, need, || pack(src, shape, ci_block).ok())
    }
}
