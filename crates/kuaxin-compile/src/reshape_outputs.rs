//! A `View` that only reshapes a fused kernel's output (same elements, same row-major order)
//! is not a copy: the kernel stores its output under the view's shape and the view goes.
//! A kernel's output is row-major over its kept domain and may carry any shape of that many
//! elements (`Kernel::out`), so only the type changes. MaxPool's keep-dims reduction
//! (`[N, C, H, W, 1, 1]` viewed as `[N, C, H, W]`) and a Reshape after an elementwise chain
//! were a copy each.
use crate::program::Instr;
use crate::value::Src;
use kuaxin_core::prim::Prim;
use kuaxin_core::tensor::is_row_major;
use std::collections::HashSet;
use std::sync::Arc;

/// `instrs` with every reshaping view of a fused kernel's output (read by nothing else and
/// not a program output) folded into the kernel.
pub fn absorb_reshapes(mut instrs: Vec<Instr>, live_out: &HashSet<usize>) -> Vec<Instr> {
    let uses = crate::program::slot_uses(&instrs, []);
    let producer = crate::program::producers(&instrs);
    let mut gone: HashSet<usize> = HashSet::new();
    for v in 0..instrs.len() {
        let view = &instrs[v];
        let [Src::Slot(x)] = view.inputs.as_slice() else {
            continue;
        };
        let Some(&p) = producer.get(x) else {
            continue;
        };
        let kernel = &instrs[p];
        let (Prim::Fused(k), [out]) = (&kernel.prim, view.out_types.as_slice()) else {
            continue;
        };
        if !is_reshape(&view.prim, &out.shape)
            || uses.get(x) != Some(&1)
            || live_out.contains(x)
            || kernel.outputs.len() != 1
            || view.outputs.len() != 1
            || out.dtype != k.out.dtype
            || out.numel() != k.out.numel()
        {
            continue;
        }
        let mut k = (**k).clone();
        k.out = out.clone();
        let (slot, ty) = (view.outputs[0], out.clone());
        let kernel = &mut instrs[p];
        kernel.prim = Prim::Fused(Arc::new(k));
        kernel.outputs[0] = slot;
        kernel.out_types[0] = ty;
        gone.insert(v);
    }
    crate::program::rewrite(instrs, &gone, Default::default())
}

/// Whether `prim` is a view reading its whole input in row-major order as `shape`: offset 0
/// and row-major strides (any stride on an axis of one).
fn is_reshape(prim: &Prim, shape: &[usize]) -> bool {
    prim.as_view().is_some_and(|(vshape, strides, offset)| {
        offset == 0 && vshape == shape && is_row_major(shape, strides)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuaxin_core::prim::ViewMap;

    fn view(shape: &[usize], strides: &[isize], offset: usize) -> Prim {
        let (shape, strides) = (shape.to_vec(), strides.to_vec());
        ViewMap {
            shape,
            strides,
            offset,
        }
        .prim()
    }

    #[test]
    fn only_row_major_views_of_the_whole_input_are_reshapes() {
        assert!(is_reshape(&view(&[2, 3, 4], &[12, 4, 1], 0), &[2, 3, 4]));
        // An axis of one may carry any stride.
        assert!(is_reshape(&view(&[2, 1, 4], &[4, 99, 1], 0), &[2, 1, 4]));
        assert!(is_reshape(&view(&[], &[], 0), &[]));
        // A transpose, a broadcast, a slice (offset) and a strided slice are not.
        assert!(!is_reshape(&view(&[3, 2], &[1, 3], 0), &[3, 2]));
        assert!(!is_reshape(&view(&[2, 3], &[0, 1], 0), &[2, 3]));
        assert!(!is_reshape(&view(&[2, 3], &[3, 1], 1), &[2, 3]));
        assert!(!is_reshape(&view(&[2, 3], &[6, 2], 0), &[2, 3]));
        assert!(!is_reshape(&Prim::SoftmaxRows, &[2, 3]));
    }
}
