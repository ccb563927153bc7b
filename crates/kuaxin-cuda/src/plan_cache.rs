//! Plans by primitive and input types, so a replayed program neither renders its kernels again
//! nor hashes their source on every launch (`supports` and `execute` both ask, every run). A
//! fused kernel is keyed by its address, and the entry holds the kernel, so the address cannot be
//! reused while the entry lives; other primitives are keyed by their printed form.
use crate::plan::Plan;
use cudarc::driver::CudaFunction;
use kuaxin_core::kernel::Kernel;
use kuaxin_core::prim::{Prim, TensorType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Entries kept before the cache starts over (a conformance run makes thousands of programs).
const MAX_ENTRIES: usize = 16384;

pub struct Cached {
    pub plan: Result<Plan, String>,
    /// The compiled kernel of a `Plan::Kernel`, once launched.
    pub function: OnceLock<CudaFunction>,
    _pin: Option<Arc<Kernel>>,
}

/// The primitive (printed, or a fused kernel's address) and its input types.
type Key = (String, Vec<TensorType>);

#[derive(Default)]
pub struct PlanCache {
    map: Mutex<HashMap<Key, Arc<Cached>>>,
}

impl PlanCache {
    /// The cached plan of `prim` on `inputs`, made by `make` the first time.
    pub fn get(
        &self,
        prim: &Prim,
        inputs: &[TensorType],
        make: impl FnOnce() -> Result<Plan, String>,
    ) -> Arc<Cached> {
        let (key, pin) = match prim {
            Prim::Fused(k) => (format!("fused@{:p}", Arc::as_ptr(k)), Some(k.clone())),
            p => (format!("{p:?}"), None),
        };
        let key = (key, inputs.to_vec());
        if let Some(c) = self.map.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return c;
        }
        let c = Arc::new(Cached {
            plan: make(),
            function: OnceLock::new(),
            _pin: pin,
        });
        if let Ok(mut m) = self.map.lock() {
            if m.len() >= MAX_ENTRIES {
                m.clear();
            }
            m.insert(key, c.clone());
        }
        c
    }
}
