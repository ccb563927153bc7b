//! Runtime values on the host: tensors, sequences of values, optionals.
use crate::tensor::Tensor;

#[derive(Debug, Clone, PartialEq)]
pub enum HostValue {
    Tensor(Tensor),
    Sequence(Vec<HostValue>),
    /// `None` is an empty optional.
    Optional(Option<Box<HostValue>>),
}

impl HostValue {
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            HostValue::Tensor(t) => Some(t),
            _ => None,
        }
    }
    pub fn describe(&self) -> String {
        match self {
            HostValue::Tensor(t) => t.type_string(),
            HostValue::Sequence(v) => format!("seq[{}]", v.len()),
            HostValue::Optional(None) => "optional(empty)".into(),
            HostValue::Optional(Some(v)) => format!("optional({})", v.describe()),
        }
    }
}
