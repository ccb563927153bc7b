//! Views read by a matrix product become index maps of its operands (`Prim::MatMulOfViews`)
//! instead of copies: the reshapes and head transposes around a transformer's attention
//! (`[1, 128, 384] -> [128, 384]`, `[128, 12, 32] -> [12, 32, 128]`) were each a full copy of
//! an activation before every product, where gemm reads strided operands as they are.
//!
//! A chain of views is composed into one map when every step walks axes of the one before it
//! (see `inline::compose`).
use crate::inline::compose;
use crate::program::Instr;
use crate::value::Src;
use kuaxin_core::kernel::Load;
use kuaxin_core::prim::{Prim, TensorType, ViewMap};
use kuaxin_core::DType;
use std::collections::HashMap;

/// Rewrites every f32 `MatMul` that reads a view into a `MatMulOfViews` reading the view's
/// source, where `supports` claims it. The views themselves stay; a later pass drops those no
/// one reads any more.
pub fn merge_view_matmuls(
    instrs: Vec<Instr>,
    slot_types: &[TensorType],
    supports: &dyn Fn(&Prim) -> bool,
) -> Vec<Instr> {
    let producer = crate::program::producers(&instrs);
    let mut out = instrs.clone();
    for (i, ins) in instrs.iter().enumerate() {
        if !matches!(ins.prim, Prim::MatMul) || ins.inputs.len() != 2 {
            continue;
        }
        let mut inputs = ins.inputs.clone();
        let mut maps: [Option<ViewMap>; 2] = [None, None];
        for (j, map) in maps.iter_mut().enumerate() {
            if let Some((base, m)) = resolve(&instrs, &producer, slot_types, &ins.inputs[j]) {
                inputs[j] = base;
                *map = Some(m);
            }
        }
        if maps.iter().all(Option::is_none) {
            continue;
        }
        let [a, b] = maps;
        let prim = Prim::MatMulOfViews { a, b };
        if supports(&prim) {
            out[i] = Instr {
                prim,
                inputs,
                ..ins.clone()
            };
        }
    }
    out
}

/// The source and composed index map of an f32 value made by a chain of views.
fn resolve(
    instrs: &[Instr],
    producer: &HashMap<usize, usize>,
    slot_types: &[TensorType],
    src: &Src,
) -> Option<(Src, ViewMap)> {
    let view_of = |src: &Src| -> Option<(&Instr, ViewMap)> {
        let Src::Slot(s) = src else { return None };
        let ins = &instrs[*producer.get(s)?];
        let (shape, strides, offset) = ins.prim.as_view()?;
        (slot_types.get(*s)?.dtype == DType::F32).then(|| {
            let map = ViewMap {
                shape: shape.to_vec(),
                strides: strides.to_vec(),
                offset,
            };
            (ins, map)
        })
    };
    let (first, mut map) = view_of(src)?;
    let mut base = first.inputs.first()?.clone();
    // Fold earlier views in while each step composes.
    while let Some((inner_ins, inner)) = view_of(&base) {
        let load = Load {
            arg: 0,
            dtype: DType::F32,
            strides: map.strides.clone(),
            offset: map.offset,
        };
        let Some(step) = compose(&inner.shape, &load, &map.shape) else {
            break;
        };
        let Some(offset) = step.offset(&inner.strides, inner.offset) else {
            break;
        };
        map = ViewMap {
            strides: step.strides(&inner.strides),
            offset,
            shape: map.shape,
        };
        base = inner_ins.inputs.first()?.clone();
    }
    Some((base, map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn view(input: usize, out: usize, shape: &[usize], strides: &[isize]) -> Instr {
        Instr {
            prim: Prim::View {
                shape: shape.to_vec(),
                strides: strides.to_vec(),
                offset: 0,
            },
            inputs: vec![Src::Slot(input)],
            outputs: vec![out],
            out_types: vec![TensorType::new(DType::F32, shape.to_vec())],
            origin: Arc::from("view"),
        }
    }

    #[test]
    fn a_reshape_then_transpose_becomes_one_operand_map() {
        // Slot 0: [4, 6]; slot 1 = reshape to [4, 2, 3]; slot 2 = transpose to [2, 4, 3];
        // slot 3: [2, 3, 5]; slot 4 = slot 2 x slot 3.
        let types: Vec<TensorType> = [
            vec![4, 6],
            vec![4, 2, 3],
            vec![2, 4, 3],
            vec![2, 3, 5],
            vec![2, 4, 5],
        ]
        .into_iter()
        .map(|s| TensorType::new(DType::F32, s))
        .collect();
        let mm = Instr {
            prim: Prim::MatMul,
            inputs: vec![Src::Slot(2), Src::Slot(3)],
            outputs: vec![4],
            out_types: vec![types[4].clone()],
            origin: Arc::from("matmul"),
        };
        let program = vec![
            view(0, 1, &[4, 2, 3], &[6, 3, 1]),
            view(1, 2, &[2, 4, 3], &[3, 6, 1]),
            mm,
        ];
        let out = merge_view_matmuls(program.clone(), &types, &|_| true);
        let Prim::MatMulOfViews {
            a: Some(a),
            b: None,
        } = &out[2].prim
        else {
            panic!("not merged: {:?}", out[2].prim)
        };
        assert!(matches!(out[2].inputs[..], [Src::Slot(0), Src::Slot(3)]));
        // Element (h, i, j) of the transposed view is element (i, 3h + j) of slot 0.
        assert_eq!(
            (&a.shape[..], &a.strides[..], a.offset),
            (&[2, 4, 3][..], &[3, 6, 1][..], 0)
        );
        // A back end that does not claim the prim keeps the plain product.
        let unclaimed = merge_view_matmuls(program, &types, &|p| {
            !matches!(p, Prim::MatMulOfViews { .. })
        });
        assert!(matches!(unclaimed[2].prim, Prim::MatMul));
    }
}
