//! kuaxin: one model code, every chip.
//!
//! ```no_run
//! let model = kuaxin::load_model(std::path::Path::new("model.onnx"))?;
//! let device = kuaxin::open_device("cpu", None)?;
//! let session = kuaxin::Session::new(model, device)?;
//! let inputs = kuaxin::random_inputs(session.model(), &Default::default(), 0)?;
//! let outputs = session.run(&inputs)?;
//! # Ok::<(), kuaxin_core::Error>(())
//! ```
pub mod check;
pub mod compare;
pub mod conformance;
pub mod coverage;
pub mod demo;
pub mod devices;
pub mod plan;
pub mod random;
pub mod session;

pub use devices::{device_notes, list_devices, open_device, DeviceInfo};
pub use kuaxin_core::{DType, Error, HostValue, Result, Tensor};
/// The allocator the `kuaxin` command runs with: large buffers on transparent huge pages
/// (Linux); a program embedding kuaxin can install it with `#[global_allocator]`.
pub use kuaxin_cpu::HugePageAlloc;
pub use random::random_inputs;
pub use session::{RunStats, Session, SessionOptions};

/// Loads a model file (ONNX today; the format is picked by extension).
pub fn load_model(path: &std::path::Path) -> Result<kuaxin_core::graph::Model> {
    kuaxin_onnx::load_model(path)
}
