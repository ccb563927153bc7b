//! The back-end contract: what a chip implements so that every model runs on it.
//!
//! Allocation and freeing are the life of a [`DeviceTensor`] (created by `upload` and `execute`,
//! freed when its last handle drops). A back end implements primitives, never ONNX ops.
use crate::error::Result;
use crate::prim::{Prim, TensorType};
use crate::tensor::Tensor;
use std::any::Any;
use std::sync::Arc;

/// A tensor living on a device. `storage` is the back end's own buffer type.
#[derive(Clone)]
pub struct DeviceTensor {
    pub ty: TensorType,
    pub storage: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for DeviceTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceTensor({})", self.ty)
    }
}

pub trait Backend: Send + Sync {
    /// Device name as users type it: `cpu`, `wgpu:0`, `cuda:1`.
    fn name(&self) -> String;
    /// Allocates device memory and copies a host tensor in.
    fn upload(&self, t: &Tensor) -> Result<DeviceTensor>;
    /// Uploads a tensor that stays alive elsewhere (weights): back ends that share host memory
    /// can skip the copy.
    fn upload_shared(&self, t: &Arc<Tensor>) -> Result<DeviceTensor> {
        self.upload(t)
    }
    /// Gives a run an input the caller keeps (it is not a constant: nothing is cached for
    /// it): back ends that share host memory read it where it lies, without a copy.
    fn upload_input(&self, t: &Arc<Tensor>) -> Result<DeviceTensor> {
        self.upload(t)
    }
    /// Moves a host tensor the caller no longer needs onto the device: back ends that share
    /// host memory take it without a copy.
    fn upload_owned(&self, t: Tensor) -> Result<DeviceTensor> {
        self.upload(&t)
    }
    /// Copies a device tensor out to the host.
    fn download(&self, t: &DeviceTensor) -> Result<Tensor>;
    /// Downloads a device tensor the caller gives up: back ends that share host memory hand
    /// the buffer over without a copy when this was its last handle.
    fn download_owned(&self, t: DeviceTensor) -> Result<Tensor> {
        self.download(&t)
    }
    /// Allocates the outputs and runs one primitive on them. `outputs` are the types
    /// `Prim::infer` computed, already validated.
    fn execute(
        &self,
        prim: &Prim,
        inputs: &[&DeviceTensor],
        outputs: &[TensorType],
    ) -> Result<Vec<DeviceTensor>>;
    /// [`Backend::execute`] on inputs the caller gives up: an input whose storage has no
    /// other handle left (its last use) may become an output's storage, as a residual that a
    /// convolution adds in place. Back ends that cannot reuse storage run `execute`.
    fn execute_owned(
        &self,
        prim: &Prim,
        inputs: Vec<DeviceTensor>,
        outputs: &[TensorType],
    ) -> Result<Vec<DeviceTensor>> {
        let refs: Vec<&DeviceTensor> = inputs.iter().collect();
        self.execute(prim, &refs, outputs)
    }
    /// Runs `f` (a sequence of `execute` calls) in the back end's execution context, so a back
    /// end with worker threads enters it once per program instead of once per primitive.
    fn scope(&self, f: &mut (dyn FnMut() -> Result<()> + Send)) -> Result<()> {
        f()
    }
    /// Waits until all queued work is done.
    fn synchronize(&self) -> Result<()>;
    /// Whether this back end can run `prim` on these input types; the executor places what it
    /// cannot on the host and says so.
    /// Fused kernels and composites made by fusion need explicit support; plain primitives
    /// are the contract.
    fn supports(&self, prim: &Prim, _inputs: &[TensorType]) -> bool {
        !matches!(
            prim,
            Prim::Fused(_)
                | Prim::SoftmaxRows
                | Prim::MaskedSoftmaxRows { .. }
                | Prim::LayerNormRows { .. }
        )
    }
}
