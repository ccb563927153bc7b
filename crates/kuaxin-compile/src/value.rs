//! Values while lowering: tensors known by type (and by data when constant), sequences, optionals.
use kuaxin_core::prim::TensorType;
use kuaxin_core::{DType, HostValue, Tensor};
use std::sync::Arc;

/// Where a traced tensor comes from.
#[derive(Debug, Clone)]
pub enum Src {
    /// Known at compile time (initializer, Constant, or folded from those).
    Const(Arc<Tensor>),
    /// Slot `id` of the traced program (an input or an instruction's output).
    Slot(usize),
}

impl Src {
    /// The same value: the same slot, or the very same constant tensor.
    pub fn is_same(&self, other: &Src) -> bool {
        match (self, other) {
            (Src::Slot(x), Src::Slot(y)) => x == y,
            (Src::Const(x), Src::Const(y)) => Arc::ptr_eq(x, y),
            _ => false,
        }
    }
}

/// A tensor in the trace: its concrete type and where its data comes from.
#[derive(Debug, Clone)]
pub struct TVal {
    pub ty: TensorType,
    pub src: Src,
}

impl TVal {
    pub fn constant(t: Tensor) -> TVal {
        TVal {
            ty: TensorType::new(t.dtype(), t.shape.clone()),
            src: Src::Const(Arc::new(t)),
        }
    }
    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.ty.shape
    }
    pub fn rank(&self) -> usize {
        self.ty.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.ty.numel()
    }
    pub fn as_const(&self) -> Option<&Arc<Tensor>> {
        match &self.src {
            Src::Const(t) => Some(t),
            Src::Slot(_) => None,
        }
    }
}

/// Any value a graph edge can carry.
#[derive(Debug, Clone)]
pub enum Value {
    Tensor(TVal),
    Sequence(Vec<Value>),
    /// `None` is the empty optional; the type is kept for OptionalHasElement and friends.
    Optional(Option<Box<Value>>),
}

impl Value {
    pub fn from_host(v: &HostValue) -> Value {
        match v {
            HostValue::Tensor(t) => Value::Tensor(TVal::constant(t.clone())),
            HostValue::Sequence(s) => Value::Sequence(s.iter().map(Value::from_host).collect()),
            HostValue::Optional(o) => {
                Value::Optional(o.as_ref().map(|v| Box::new(Value::from_host(v))))
            }
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Tensor(_) => "tensor",
            Value::Sequence(_) => "sequence",
            Value::Optional(_) => "optional",
        }
    }
}
