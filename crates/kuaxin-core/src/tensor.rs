//! Host tensors: a shape and typed, contiguous, row-major storage.
use crate::dtype::DType;
use crate::error::{Error, Result};
use half::{bf16, f16};

/// Typed storage, one variant per [`DType`].
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
}

/// Runs `$body` with `$v` bound to the typed `Vec` inside a [`Data`], whatever its dtype.
#[macro_export]
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::Data::F32($v) => $body,
            $crate::Data::F64($v) => $body,
            $crate::Data::F16($v) => $body,
            $crate::Data::BF16($v) => $body,
            $crate::Data::I8($v) => $body,
            $crate::Data::I16($v) => $body,
            $crate::Data::I32($v) => $body,
            $crate::Data::I64($v) => $body,
            $crate::Data::U8($v) => $body,
            $crate::Data::U16($v) => $body,
            $crate::Data::U32($v) => $body,
            $crate::Data::U64($v) => $body,
            $crate::Data::Bool($v) => $body,
        }
    };
}

/// Like [`with_data`], but rebuilds a `Data` of the same variant from `$body`'s `Vec`.
#[macro_export]
macro_rules! map_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::Data::F32($v) => $crate::Data::F32($body),
            $crate::Data::F64($v) => $crate::Data::F64($body),
            $crate::Data::F16($v) => $crate::Data::F16($body),
            $crate::Data::BF16($v) => $crate::Data::BF16($body),
            $crate::Data::I8($v) => $crate::Data::I8($body),
            $crate::Data::I16($v) => $crate::Data::I16($body),
            $crate::Data::I32($v) => $crate::Data::I32($body),
            $crate::Data::I64($v) => $crate::Data::I64($body),
            $crate::Data::U8($v) => $crate::Data::U8($body),
            $crate::Data::U16($v) => $crate::Data::U16($body),
            $crate::Data::U32($v) => $crate::Data::U32($body),
            $crate::Data::U64($v) => $crate::Data::U64($body),
            $crate::Data::Bool($v) => $crate::Data::Bool($body),
        }
    };
}

/// Element types that can live in a [`Data`].
pub trait Element: Copy + Default + Send + Sync + 'static + std::fmt::Debug {
    const DTYPE: DType;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn to_i64(self) -> i64;
    fn from_i64(v: i64) -> Self;
    fn wrap(v: Vec<Self>) -> Data;
}

macro_rules! element_int {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn from_i64(v: i64) -> Self {
                v as $t
            }
            fn wrap(v: Vec<Self>) -> Data {
                Data::$d(v)
            }
        }
    };
}
element_int!(i8, I8);
element_int!(i16, I16);
element_int!(i32, I32);
element_int!(i64, I64);
element_int!(u8, U8);
element_int!(u16, U16);
element_int!(u32, U32);
element_int!(u64, U64);

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v as f32
    }
    fn wrap(v: Vec<Self>) -> Data {
        Data::F32(v)
    }
}
impl Element for f64 {
    const DTYPE: DType = DType::F64;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v as f64
    }
    fn wrap(v: Vec<Self>) -> Data {
        Data::F64(v)
    }
}
impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn to_i64(self) -> i64 {
        self.to_f64() as i64
    }
    fn from_i64(v: i64) -> Self {
        f16::from_f64(v as f64)
    }
    fn wrap(v: Vec<Self>) -> Data {
        Data::F16(v)
    }
}
impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    fn to_i64(self) -> i64 {
        self.to_f64() as i64
    }
    fn from_i64(v: i64) -> Self {
        bf16::from_f64(v as f64)
    }
    fn wrap(v: Vec<Self>) -> Data {
        Data::BF16(v)
    }
}
impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
    fn wrap(v: Vec<Self>) -> Data {
        Data::Bool(v)
    }
}

impl Data {
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
            Data::F16(_) => DType::F16,
            Data::BF16(_) => DType::BF16,
            Data::I8(_) => DType::I8,
            Data::I16(_) => DType::I16,
            Data::I32(_) => DType::I32,
            Data::I64(_) => DType::I64,
            Data::U8(_) => DType::U8,
            Data::U16(_) => DType::U16,
            Data::U32(_) => DType::U32,
            Data::U64(_) => DType::U64,
            Data::Bool(_) => DType::Bool,
        }
    }
    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `n` zero (false) elements of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> Data {
        match dtype {
            DType::F32 => Data::F32(vec![0.0; n]),
            DType::F64 => Data::F64(vec![0.0; n]),
            DType::F16 => Data::F16(vec![f16::ZERO; n]),
            DType::BF16 => Data::BF16(vec![bf16::ZERO; n]),
            DType::I8 => Data::I8(vec![0; n]),
            DType::I16 => Data::I16(vec![0; n]),
            DType::I32 => Data::I32(vec![0; n]),
            DType::I64 => Data::I64(vec![0; n]),
            DType::U8 => Data::U8(vec![0; n]),
            DType::U16 => Data::U16(vec![0; n]),
            DType::U32 => Data::U32(vec![0; n]),
            DType::U64 => Data::U64(vec![0; n]),
            DType::Bool => Data::Bool(vec![false; n]),
        }
    }
    /// Elements as f64 (lossless for every dtype but 64-bit integers beyond 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        with_data!(self, v => v.iter().map(|x| x.to_f64()).collect())
    }
    /// Elements as i64 (floats truncate).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        with_data!(self, v => v.iter().map(|x| x.to_i64()).collect())
    }
    /// Builds `dtype` storage from f64 values (rounding per the target type's `as` rules).
    pub fn from_f64_iter(dtype: DType, it: impl Iterator<Item = f64>) -> Data {
        match dtype {
            DType::F32 => Data::F32(it.map(|x| x as f32).collect()),
            DType::F64 => Data::F64(it.collect()),
            DType::F16 => Data::F16(it.map(f16::from_f64).collect()),
            DType::BF16 => Data::BF16(it.map(bf16::from_f64).collect()),
            DType::I8 => Data::I8(it.map(|x| x as i8).collect()),
            DType::I16 => Data::I16(it.map(|x| x as i16).collect()),
            DType::I32 => Data::I32(it.map(|x| x as i32).collect()),
            DType::I64 => Data::I64(it.map(|x| x as i64).collect()),
            DType::U8 => Data::U8(it.map(|x| x as u8).collect()),
            DType::U16 => Data::U16(it.map(|x| x as u16).collect()),
            DType::U32 => Data::U32(it.map(|x| x as u32).collect()),
            DType::U64 => Data::U64(it.map(|x| x as u64).collect()),
            DType::Bool => Data::Bool(it.map(|x| x != 0.0).collect()),
        }
    }
    /// Builds `dtype` storage from i64 values (wrapping like `as`).
    pub fn from_i64_iter(dtype: DType, it: impl Iterator<Item = i64>) -> Data {
        match dtype {
            DType::F32 => Data::F32(it.map(|x| x as f32).collect()),
            DType::F64 => Data::F64(it.map(|x| x as f64).collect()),
            DType::F16 => Data::F16(it.map(|x| f16::from_f64(x as f64)).collect()),
            DType::BF16 => Data::BF16(it.map(|x| bf16::from_f64(x as f64)).collect()),
            DType::I8 => Data::I8(it.map(|x| x as i8).collect()),
            DType::I16 => Data::I16(it.map(|x| x as i16).collect()),
            DType::I32 => Data::I32(it.map(|x| x as i32).collect()),
            DType::I64 => Data::I64(it.collect()),
            DType::U8 => Data::U8(it.map(|x| x as u8).collect()),
            DType::U16 => Data::U16(it.map(|x| x as u16).collect()),
            DType::U32 => Data::U32(it.map(|x| x as u32).collect()),
            DType::U64 => Data::U64(it.map(|x| x as u64).collect()),
            DType::Bool => Data::Bool(it.map(|x| x != 0).collect()),
        }
    }
    /// Element `i` as f64.
    pub fn get_f64(&self, i: usize) -> f64 {
        with_data!(self, v => v[i].to_f64())
    }
    /// Picks elements by index (a gather on flat storage).
    pub fn gather_flat(&self, idx: &[usize]) -> Data {
        map_data!(self, v => idx.iter().map(|&i| v[i]).collect())
    }
}

/// A host tensor: dims plus contiguous row-major data.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

/// Number of elements of `shape`, or an error when it overflows.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a contiguous tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<isize> {
    let mut s = vec![0isize; shape.len()];
    let mut acc = 1isize;
    for i in (0..shape.len()).rev() {
        s[i] = acc;
        acc *= shape[i].max(1) as isize;
    }
    s
}

/// Whether `strides` walk `shape` as a contiguous row-major run: each axis's stride the product
/// of the sizes after it, any stride on an axis of one.
pub fn is_row_major(shape: &[usize], strides: &[isize]) -> bool {
    shape.len() == strides.len()
        && shape
            .iter()
            .zip(contiguous_strides(shape))
            .zip(strides)
            .all(|((&d, want), &s)| d == 1 || s == want)
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Data) -> Result<Tensor> {
        let n = checked_numel(&shape)
            .ok_or_else(|| Error::invalid(format!("shape {shape:?} overflows")))?;
        if n != data.len() {
            return Err(Error::invalid(format!(
                "tensor of shape {shape:?} needs {n} elements but has {}",
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }
    pub fn from_vec<T: Element>(shape: Vec<usize>, v: Vec<T>) -> Result<Tensor> {
        Tensor::new(shape, T::wrap(v))
    }
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor {
            shape: vec![],
            data: T::wrap(vec![v]),
        }
    }
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = numel(&shape);
        Tensor {
            shape,
            data: Data::zeros(dtype, n),
        }
    }
    /// A tensor of `shape` filled with `value` converted to `dtype`.
    pub fn full(dtype: DType, shape: Vec<usize>, value: f64) -> Tensor {
        let n = numel(&shape);
        Tensor {
            shape,
            data: Data::from_f64_iter(dtype, std::iter::repeat_n(value, n)),
        }
    }
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.data.to_f64_vec()
    }
    pub fn to_i64_vec(&self) -> Vec<i64> {
        self.data.to_i64_vec()
    }
    /// Same data, new shape with the same element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor> {
        Tensor::new(shape, self.data.clone())
    }
    /// Converts element type with `as`-style rules (float to int truncates, saturating).
    pub fn cast(&self, to: DType) -> Tensor {
        let data = if self.dtype() == to {
            self.data.clone()
        } else if let (Data::U64(v), true) = (&self.data, to.is_float() || to == DType::Bool) {
            // u64 above 2^63 must not pass through i64.
            Data::from_f64_iter(to, v.iter().map(|&x| x as f64))
        } else if to.is_float()
            || self.dtype().is_float()
            || to == DType::Bool
            || self.dtype() == DType::Bool
        {
            if self.dtype() == DType::U64 || self.dtype() == DType::I64 {
                Data::from_i64_iter(to, self.data.to_i64_vec().into_iter())
            } else {
                Data::from_f64_iter(to, self.data.to_f64_vec().into_iter())
            }
        } else if self.dtype() == DType::U64 {
            match &self.data {
                Data::U64(v) => Data::from_i64_iter(to, v.iter().map(|&x| x as i64)),
                _ => unreachable!(),
            }
        } else {
            Data::from_i64_iter(to, self.data.to_i64_vec().into_iter())
        };
        Tensor {
            shape: self.shape.clone(),
            data,
        }
    }
    /// A short description for error messages: `f32[2, 3]`.
    pub fn type_string(&self) -> String {
        format!("{}{:?}", self.dtype(), self.shape)
    }
}
