//! kuaxin-wgpu: the back-end contract on wgpu (Vulkan, Metal, DX12).
//!
//! Every primitive and fused kernel becomes one WGSL compute shader ([`wgsl`]), compiled once
//! per source text and cached. Device tensors are storage buffers. Dtypes:
//! f32, i32, u32, bool (stored as u32 0/1) and f16 (where the adapter has `shader-f16`; math in
//! f32, rounded to f16 after each op) compute here; i64/u64 are narrowed to i32/u32 on upload
//! (an error when a value does not fit) and widened back on download, so their arithmetic wraps
//! at 32 bits. Other dtypes (f64, bf16, 8/16-bit integers) stay in host memory and `supports`
//! refuses every primitive on them, so the executor runs those on the host and reports it.
//! Tensors larger than the adapter's storage-binding limit stay in host memory the same way
//! (their primitives run on the host and are reported); a kernel output beyond it is an error.
mod wgsl;

use kuaxin_core::prim::{Prim, TensorType};
use kuaxin_core::{Backend, DType, Data, DeviceTensor, Error, Result, Tensor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A device tensor's storage: a buffer, or host memory for dtypes this back end does not compute.
enum Store {
    Gpu(wgpu::Buffer),
    Host(Arc<Tensor>),
}

pub struct WgpuBackend {
    index: usize,
    info: wgpu::AdapterInfo,
    device: wgpu::Device,
    queue: wgpu::Queue,
    f16: bool,
    max_binding: u64,
    max_buffers: u32,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    layouts: Mutex<HashMap<usize, Arc<(wgpu::BindGroupLayout, wgpu::PipelineLayout)>>>,
    /// The first error wgpu reported outside an error scope (device lost, validation).
    fault: Arc<Mutex<Option<String>>>,
}

/// One adapter, for `kuaxin devices`.
pub struct AdapterSummary {
    pub name: String,
    pub description: String,
}

fn adapters() -> Vec<wgpu::Adapter> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
}

/// The adapters this machine offers, as `wgpu:N` devices.
pub fn list() -> Vec<AdapterSummary> {
    adapters()
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let (info, l) = (a.get_info(), a.limits());
            AdapterSummary {
                name: format!("wgpu:{i}"),
                description: format!(
                    "{} ({:?}, {:?} {}; max binding {} MiB, {} storage buffers, shader-f16 {})",
                    info.name,
                    info.device_type,
                    info.backend,
                    info.driver_info,
                    l.max_storage_buffer_binding_size >> 20,
                    l.max_storage_buffers_per_shader_stage,
                    if a.features().contains(wgpu::Features::SHADER_F16) {
                        "yes"
                    } else {
                        "no"
                    }
                ),
            }
        })
        .collect()
}

impl WgpuBackend {
    /// Opens adapter `index` (as listed by [`list`]).
    pub fn new(index: usize) -> Result<WgpuBackend> {
        let all = adapters();
        if all.is_empty() {
            return Err(Error::unsupported("device 'wgpu': no Vulkan, Metal or DX12 adapter found (on Debian: apt-get install mesa-vulkan-drivers libvulkan1)"));
        }
        let adapter = all.get(index).ok_or_else(|| {
            Error::invalid(format!(
                "device 'wgpu:{index}': there are {} wgpu adapters (wgpu:0..wgpu:{})",
                all.len(),
                all.len() - 1
            ))
        })?;
        let f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        let limits = adapter.limits();
        let desc = wgpu::DeviceDescriptor {
            label: Some("kuaxin"),
            required_features: if f16 {
                wgpu::Features::SHADER_F16
            } else {
                wgpu::Features::empty()
            },
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::backend(format!(
                "wgpu:{index}: cannot open {}: {e}",
                adapter.get_info().name
            ))
        })?;
        let fault = Arc::new(Mutex::new(None));
        let f = fault.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            f.lock().unwrap().get_or_insert_with(|| e.to_string());
        }));
        Ok(WgpuBackend {
            index,
            info: adapter.get_info(),
            device,
            queue,
            f16,
            max_binding: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            max_buffers: limits.max_storage_buffers_per_shader_stage,
            pipelines: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            fault,
        })
    }

    fn check_fault(&self) -> Result<()> {
        match self.fault.lock().unwrap().take() {
            Some(e) => Err(Error::backend(format!(
                "wgpu:{} ({}): {e}",
                self.index, self.info.name
            ))),
            None => Ok(()),
        }
    }

    /// Whether this back end computes `d` (else tensors of `d` stay on the host).
    fn computes(&self, d: DType) -> bool {
        wgsl::storage_type(d, self.f16).is_some()
    }

    fn bytes(ty: &TensorType) -> u64 {
        (ty.numel() as u64).saturating_mul(if ty.dtype == DType::F16 { 2 } else { 4 })
    }

    /// Whether tensors of `ty` live in device buffers: a dtype computed here, within the
    /// binding limit (larger ones stay in host memory and their primitives run on the host).
    fn on_device(&self, ty: &TensorType) -> bool {
        self.computes(ty.dtype) && Self::bytes(ty) <= self.max_binding
    }

    fn buffer(&self, ty: &TensorType, bytes: Option<&[u8]>) -> Result<wgpu::Buffer> {
        let size = Self::bytes(ty);
        if size > self.max_binding {
            return Err(Error::unsupported(format!(
                "wgpu:{}: tensor {ty} needs {} MiB, more than the adapter's {} MiB storage-binding limit",
                self.index, size >> 20, self.max_binding >> 20
            )));
        }
        let size = (size.div_ceil(4) * 4).max(4);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: bytes.is_some(),
        });
        if let Some(b) = bytes {
            buf.get_mapped_range_mut(..)
                .map_err(|e| Error::backend(format!("wgpu: map: {e}")))?
                .slice(..b.len())
                .copy_from_slice(b);
            buf.unmap();
        }
        Ok(buf)
    }

    fn layout(&self, n_inputs: usize) -> Arc<(wgpu::BindGroupLayout, wgpu::PipelineLayout)> {
        self.layouts
            .lock()
            .unwrap()
            .entry(n_inputs)
            .or_insert_with(|| {
                let entries: Vec<wgpu::BindGroupLayoutEntry> = (0..=n_inputs)
                    .map(|i| wgpu::BindGroupLayoutEntry {
                        binding: i as u32,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage { read_only: i > 0 },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    })
                    .collect();
                let bgl = self
                    .device
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: None,
                        entries: &entries,
                    });
                let pl = self
                    .device
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: None,
                        bind_group_layouts: &[Some(&bgl)],
                        immediate_size: 0,
                    });
                Arc::new((bgl, pl))
            })
            .clone()
    }

    fn pipeline(&self, src: &str, n_inputs: usize) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = format!("{n_inputs}\n{src}");
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let layout = self.layout(n_inputs);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: None,
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
        let p = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: Some(&layout.1),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::backend(format!(
                "wgpu: shader does not compile: {e}\n{src}"
            )));
        }
        let p = Arc::new(p);
        self.pipelines.lock().unwrap().insert(key, p.clone());
        Ok(p)
    }

    fn gpu<'a>(&self, t: &'a DeviceTensor) -> Result<&'a wgpu::Buffer> {
        match t.storage.downcast_ref::<Store>() {
            Some(Store::Gpu(b)) => Ok(b),
            Some(Store::Host(_)) => Err(Error::unsupported(format!(
                "wgpu: {} tensors are not computed on this device",
                t.ty.dtype
            ))),
            None => Err(Error::backend(format!(
                "wgpu: tensor {} belongs to another back end",
                t.ty
            ))),
        }
    }
}

/// Little-endian bytes of a tensor as stored on the device (64-bit integers narrowed).
fn to_bytes(t: &Tensor) -> Result<Vec<u8>> {
    fn narrow<T: Copy + std::fmt::Display, U: TryFrom<T>>(
        t: &Tensor,
        v: &[T],
        b: impl Fn(U) -> [u8; 4],
    ) -> Result<Vec<u8>> {
        v.iter()
            .map(|&x| U::try_from(x).map(&b).map_err(|_| Error::unsupported(format!(
                "wgpu: {} tensor holds {x}, outside the 32-bit range this back end computes 64-bit integers in", t.type_string()))))
            .collect::<Result<Vec<_>>>()
            .map(|v| v.concat())
    }
    Ok(match &t.data {
        Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::Bool(v) => v.iter().flat_map(|&x| (x as u32).to_le_bytes()).collect(),
        Data::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Data::I64(v) => narrow(t, v, i32::to_le_bytes)?,
        Data::U64(v) => narrow(t, v, u32::to_le_bytes)?,
        other => {
            return Err(Error::unsupported(format!(
                "wgpu: {} is not computed on this device",
                other.dtype()
            )))
        }
    })
}

fn from_bytes(ty: &TensorType, b: &[u8]) -> Result<Tensor> {
    let n = ty.numel();
    let w = |i: usize| [b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]];
    let data = match ty.dtype {
        DType::F32 => Data::F32((0..n).map(|i| f32::from_le_bytes(w(i))).collect()),
        DType::I32 => Data::I32((0..n).map(|i| i32::from_le_bytes(w(i))).collect()),
        DType::U32 => Data::U32((0..n).map(|i| u32::from_le_bytes(w(i))).collect()),
        DType::I64 => Data::I64((0..n).map(|i| i32::from_le_bytes(w(i)) as i64).collect()),
        DType::U64 => Data::U64((0..n).map(|i| u32::from_le_bytes(w(i)) as u64).collect()),
        DType::Bool => Data::Bool((0..n).map(|i| u32::from_le_bytes(w(i)) != 0).collect()),
        DType::F16 => Data::F16(
            (0..n)
                .map(|i| half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
                .collect(),
        ),
        d => return Err(Error::backend(format!("wgpu: no device storage for {d}"))),
    };
    Tensor::new(ty.shape.clone(), data)
}

impl Backend for WgpuBackend {
    fn name(&self) -> String {
        format!("wgpu:{}", self.index)
    }

    fn upload(&self, t: &Tensor) -> Result<DeviceTensor> {
        let ty = TensorType::new(t.dtype(), t.shape.clone());
        let store = if self.on_device(&ty) {
            Store::Gpu(self.buffer(&ty, Some(&to_bytes(t)?))?)
        } else {
            Store::Host(Arc::new(t.clone()))
        };
        Ok(DeviceTensor {
            ty,
            storage: Arc::new(store),
        })
    }

    fn upload_shared(&self, t: &Arc<Tensor>) -> Result<DeviceTensor> {
        if self.on_device(&TensorType::new(t.dtype(), t.shape.clone())) {
            return self.upload(t);
        }
        Ok(DeviceTensor {
            ty: TensorType::new(t.dtype(), t.shape.clone()),
            storage: Arc::new(Store::Host(t.clone())),
        })
    }

    fn download(&self, t: &DeviceTensor) -> Result<Tensor> {
        let buf = match t.storage.downcast_ref::<Store>() {
            Some(Store::Host(h)) => return Ok(h.as_ref().clone()),
            _ => self.gpu(t)?,
        };
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: buf.size(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, buf.size());
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::backend(format!("wgpu: {e}")))?;
        rx.recv()
            .map_err(|e| Error::backend(format!("wgpu: {e}")))?
            .map_err(|e| Error::backend(format!("wgpu: reading back {}: {e}", t.ty)))?;
        self.check_fault()?;
        let out = from_bytes(
            &t.ty,
            &staging
                .get_mapped_range(..)
                .map_err(|e| Error::backend(format!("wgpu: map: {e}")))?,
        );
        staging.unmap();
        out
    }

    fn execute(
        &self,
        prim: &Prim,
        inputs: &[&DeviceTensor],
        outputs: &[TensorType],
    ) -> Result<Vec<DeviceTensor>> {
        let [out_ty] = outputs else {
            return Err(Error::unsupported(format!(
                "wgpu: {} has {} outputs",
                prim.name(),
                outputs.len()
            )));
        };
        let in_types: Vec<TensorType> = inputs.iter().map(|t| t.ty.clone()).collect();
        let bufs = inputs
            .iter()
            .map(|t| self.gpu(t))
            .collect::<Result<Vec<_>>>()?;
        let out = self.buffer(out_ty, None)?;
        if out_ty.numel() > 0 {
            let shader = match prim {
                Prim::Fused(k) => wgsl::render_kernel(k, self.f16),
                p => wgsl::render(p, &in_types, out_ty, self.f16),
            }
            .map_err(|why| Error::unsupported(format!("wgpu: {}: {why}", prim.name())))?;
            let pipeline = self.pipeline(&shader.src, inputs.len())?;
            let layout = self.layout(inputs.len());
            let entries: Vec<wgpu::BindGroupEntry> = std::iter::once(&out)
                .chain(bufs.iter().copied())
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: b.as_entire_binding(),
                })
                .collect();
            let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &layout.0,
                entries: &entries,
            });
            let mut enc = self.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &group, &[]);
                let [x, y, z] = shader.groups;
                pass.dispatch_workgroups(x, y, z);
            }
            self.queue.submit([enc.finish()]);
            self.check_fault()?;
        }
        Ok(vec![DeviceTensor {
            ty: out_ty.clone(),
            storage: Arc::new(Store::Gpu(out)),
        }])
    }

    fn synchronize(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::backend(format!("wgpu: {e}")))?;
        self.check_fault()
    }

    fn supports(&self, prim: &Prim, inputs: &[TensorType]) -> bool {
        match prim {
            Prim::Host(_) => false,
            // The fusion pass asks without input types; the executor asks again with them.
            Prim::Fused(k) => {
                k.loads.iter().map(|l| l.arg + 2).max().unwrap_or(1) as u32 <= self.max_buffers
                    && inputs.iter().chain([&k.out]).all(|t| self.on_device(t))
                    && wgsl::render_kernel(k, self.f16).is_ok()
            }
            p => {
                let Ok(outs) = p.infer(inputs) else {
                    return false;
                };
                inputs.len() < self.max_buffers as usize
                    && inputs.iter().chain(&outs).all(|t| self.on_device(t))
                    && outs.len() == 1
                    && wgsl::render(p, inputs, &outs[0], self.f16).is_ok()
            }
        }
    }
}
