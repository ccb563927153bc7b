//! `AttributeProto` -> [`Attr`].
//!
//! The declared `type` decides which field is read, as the ONNX runtime does: an attribute
//! declared FLOAT is `f` even if some other field is also set. Models from before IR
//! version 2 have no `type`; for those the one field that is present decides. Subgraphs
//! (If/Loop/Scan bodies) are converted recursively with the same rules as the main graph.
use crate::external::ExternalFiles;
use crate::graph::convert_graph;
use crate::proto::attribute_proto::AttributeType as T;
use crate::proto::{AttributeProto, GraphProto, TensorProto};
use crate::tensor::convert_tensor;
use crate::types::value_type;
use kuaxin_core::graph::{Attr, Graph};
use kuaxin_core::{Error, Result, Tensor};
use std::sync::Arc;

/// Converts one attribute. Errors do not name the attribute; the caller adds that.
pub(crate) fn convert_attr(a: &AttributeProto, ext: &ExternalFiles) -> Result<Attr> {
    if !a.ref_attr_name().is_empty() {
        return Err(Error::unsupported(format!(
            "attribute references '{}' of an enclosing function (ref_attr_name), which is not supported",
            a.ref_attr_name()
        )));
    }
    let ty = match a.r#type {
        None | Some(0) => inferred_type(a)?,
        Some(code) => T::try_from(code)
            .map_err(|_| Error::invalid(format!("unknown attribute type code {code}")))?,
    };
    let tensor = |t: &TensorProto| convert_tensor(t, ext).map(Arc::new);
    let graph = |g: &GraphProto| convert_graph(g, ext).map(Arc::new);
    Ok(match ty {
        T::Float => Attr::Float(a.f()),
        T::Int => Attr::Int(a.i()),
        T::String => Attr::String(a.s().to_vec()),
        T::Tensor => Attr::Tensor(tensor(a.t.as_ref().ok_or_else(|| missing("TENSOR", "t"))?)?),
        T::Graph => Attr::Graph(graph(a.g.as_ref().ok_or_else(|| missing("GRAPH", "g"))?)?),
        T::TypeProto => Attr::Type(value_type(
            a.tp.as_ref().ok_or_else(|| missing("TYPE_PROTO", "tp"))?,
        )?),
        T::Floats => Attr::Floats(a.floats.clone()),
        T::Ints => Attr::Ints(a.ints.clone()),
        T::Strings => Attr::Strings(a.strings.clone()),
        T::Tensors => Attr::Tensors(
            a.tensors
                .iter()
                .map(tensor)
                .collect::<Result<Vec<Arc<Tensor>>>>()?,
        ),
        T::Graphs => Attr::Graphs(
            a.graphs
                .iter()
                .map(graph)
                .collect::<Result<Vec<Arc<Graph>>>>()?,
        ),
        T::SparseTensor | T::SparseTensors => {
            return Err(Error::unsupported(
                "sparse tensor attributes are not supported",
            ))
        }
        T::TypeProtos => {
            return Err(Error::unsupported(
                "TYPE_PROTOS attributes are not supported",
            ))
        }
        T::Undefined => return Err(Error::invalid("attribute has no type and no value")),
    })
}

fn missing(ty: &str, field: &str) -> Error {
    Error::invalid(format!(
        "attribute is declared {ty} but field '{field}' is absent"
    ))
}

/// The type of an attribute written without `type` (IR version 1): the field that is set.
fn inferred_type(a: &AttributeProto) -> Result<T> {
    Ok(if a.f.is_some() {
        T::Float
    } else if a.i.is_some() {
        T::Int
    } else if a.s.is_some() {
        T::String
    } else if a.t.is_some() {
        T::Tensor
    } else if a.g.is_some() {
        T::Graph
    } else if a.tp.is_some() {
        T::TypeProto
    } else if a.sparse_tensor.is_some() {
        T::SparseTensor
    } else if !a.floats.is_empty() {
        T::Floats
    } else if !a.ints.is_empty() {
        T::Ints
    } else if !a.strings.is_empty() {
        T::Strings
    } else if !a.tensors.is_empty() {
        T::Tensors
    } else if !a.graphs.is_empty() {
        T::Graphs
    } else if !a.sparse_tensors.is_empty() {
        T::SparseTensors
    } else if !a.type_protos.is_empty() {
        T::TypeProtos
    } else {
        return Err(Error::invalid("attribute has no type and no value"));
    })
}
