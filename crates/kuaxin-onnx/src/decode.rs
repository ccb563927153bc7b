//! Protobuf decoding with short, readable errors.
//!
//! prost reports where decoding failed as the whole message path, innermost first; for a
//! hostile file nested a hundred levels deep that is kilobytes of text. This keeps the
//! reason and a shortened path, outermost first.
use kuaxin_core::{Error, Result};
use prost::Message;

/// Decodes `bytes` as `M`; `what` names the expected content ("ONNX model", "TensorProto").
pub(crate) fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M> {
    M::decode(bytes).map_err(|e| {
        Error::invalid(format!(
            "not a valid {what} (protobuf: {})",
            describe(&e.to_string())
        ))
    })
}

/// "failed to decode Protobuf message: B.f: A.g: buffer underflow" -> "buffer underflow in A.g > B.f".
fn describe(prost_message: &str) -> String {
    let rest = prost_message
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(prost_message);
    let mut path = Vec::new();
    let mut reason = rest;
    while let Some((head, tail)) = reason.split_once(": ") {
        let is_field = head.split_once('.').is_some_and(|(m, f)| {
            !m.is_empty()
                && !f.is_empty()
                && head
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        });
        if !is_field {
            break;
        }
        path.push(head);
        reason = tail;
    }
    path.reverse();
    match path.len() {
        0 => reason.to_string(),
        n if n <= 6 => format!("{reason} in {}", path.join(" > ")),
        n => format!(
            "{reason} in {} > ... > {} ({n} levels deep)",
            path[..3].join(" > "),
            path[n - 2..].join(" > ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn short_paths_outermost_first() {
        assert_eq!(
            describe("failed to decode Protobuf message: GraphProto.node: ModelProto.graph: buffer underflow"),
            "buffer underflow in ModelProto.graph > GraphProto.node"
        );
        assert_eq!(
            describe("failed to decode Protobuf message: ModelProto.ir_version: invalid wire type: StartGroup (expected Varint)"),
            "invalid wire type: StartGroup (expected Varint) in ModelProto.ir_version"
        );
        assert_eq!(
            describe("failed to decode Protobuf message: invalid varint"),
            "invalid varint"
        );
    }

    #[test]
    fn long_paths_are_elided() {
        let long = format!(
            "failed to decode Protobuf message: {}ModelProto.graph: recursion limit reached",
            "A.b: ".repeat(50)
        );
        let d = describe(&long);
        assert!(d.starts_with("recursion limit reached in ModelProto.graph > A.b > A.b > ... > A.b > A.b (51 levels deep)"), "{d}");
    }
}
