//! The shared shape of every generated kernel: parameters (output first, then the inputs),
//! the index type, the grid-stride loop over output elements, row-major coordinates and
//! strided offsets. Sizes and strides are baked into the text; kernels are cached by it.
use crate::ctype::storage;
use crate::dialect::Dialect;
use crate::prelude::prelude;
use kuaxin_core::DType;
use std::fmt::Write;

/// Entry point name of every generated kernel.
pub const ENTRY: &str = "kx";
/// Threads per block of elementwise kernels.
pub const BLOCK: u32 = 256;
/// Most blocks a launch asks for; grid-stride loops cover the rest.
pub const MAX_GRID: u64 = 1 << 20;

/// One kernel launch: its source and its launch shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub src: String,
    pub grid: u32,
    pub block: u32,
}

pub type R<T> = std::result::Result<T, String>;

/// Whether indices need 64 bits: any element reached at or beyond 2^31.
pub fn wide(reach: u128) -> bool {
    reach >= i32::MAX as u128
}

/// Largest element index `offset + Σ (d-1)·|s|` plus one.
pub fn reach(domain: &[usize], strides: &[isize], offset: usize) -> u128 {
    domain
        .iter()
        .zip(strides)
        .map(|(&d, &s)| (d.saturating_sub(1) as u128) * s.unsigned_abs() as u128)
        .sum::<u128>()
        + offset as u128
        + 1
}

/// The full source: prelude, index type, entry point with parameters, and `body`.
/// `args[i]` is the dtype of input i (its parameter is `a{i}`); the output is `out`.
pub fn source(
    dl: &Dialect,
    out: DType,
    args: &[DType],
    wide: bool,
    launch_bounds: u32,
    body: &str,
) -> String {
    let mut params = format!("{}* __restrict__ out", storage(out, dl));
    for (i, d) in args.iter().enumerate() {
        let _ = write!(params, ", const {}* __restrict__ a{i}", storage(*d, dl));
    }
    let halves = |h: DType| out == h || args.contains(&h);
    let mut s = prelude(dl, body, (halves(DType::F16), halves(DType::BF16)));
    let _ = write!(
        s,
        "typedef {} kx_i;\n{} void __launch_bounds__({launch_bounds}) {ENTRY}({params}) {{\n{body}}}\n",
        if wide { "long long" } else { "int" },
        dl.kernel_qualifier
    );
    s
}

/// `body` once per element `o` of `n` outputs, in a grid-stride loop.
pub fn per_element(dl: &Dialect, n: usize, body: &str) -> String {
    format!(
        "for (kx_i o = (kx_i){b} * {bd} + {t}; o < (kx_i){n}; o += (kx_i){g} * {bd}) {{\n{body}}}\n",
        b = dl.block_idx,
        bd = dl.block_dim,
        t = dl.thread_idx,
        g = dl.grid_dim
    )
}

/// Blocks for `n` elements of `per_block` each.
pub fn grid(n: usize, per_block: u32) -> u32 {
    (n as u64).div_ceil(per_block as u64).clamp(1, MAX_GRID) as u32
}

/// `kx_i {p}k = ...;` : row-major coordinates of linear index `idx` in `dims`.
pub fn coords(b: &mut String, p: &str, idx: &str, dims: &[usize]) {
    if dims.is_empty() {
        return;
    }
    let _ = writeln!(b, "kx_i {p}r = {idx};");
    for (k, &d) in dims.iter().enumerate().rev() {
        if d == 1 {
            let _ = writeln!(b, "const kx_i {p}{k} = 0;");
        } else if k == 0 {
            let _ = writeln!(b, "const kx_i {p}{k} = {p}r;");
        } else {
            let _ = writeln!(b, "const kx_i {p}{k} = {p}r % {d}; {p}r /= {d};");
        }
    }
}

/// `(offset + Σ coord·stride)`, leaving out zero strides.
pub fn lin(offset: usize, terms: &[(String, isize)]) -> String {
    let mut s = format!("((kx_i){offset}");
    for (c, st) in terms {
        if *st != 0 {
            let _ = write!(s, " + {c} * {st}");
        }
    }
    s + ")"
}

/// `p0, p1, ...`
pub fn names(p: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{p}{i}")).collect()
}

pub fn zip(c: &[String], s: &[isize]) -> Vec<(String, isize)> {
    c.iter().cloned().zip(s.iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_skip_unit_dims_and_the_outer_modulo() {
        let mut b = String::new();
        coords(&mut b, "c", "o", &[3, 1, 5]);
        assert_eq!(
            b,
            "kx_i cr = o;\nconst kx_i c2 = cr % 5; cr /= 5;\nconst kx_i c1 = 0;\nconst kx_i c0 = cr;\n"
        );
        assert_eq!(
            lin(2, &zip(&names("c", 3), &[5, 0, -1])),
            "((kx_i)2 + c0 * 5 + c2 * -1)"
        );
    }

    #[test]
    fn index_width_follows_the_largest_element_reached() {
        assert!(!wide(reach(&[1 << 15, 1 << 15], &[1 << 15, 1], 0)));
        assert!(wide(reach(&[1 << 16, 1 << 16], &[1 << 16, 1], 0)));
        assert_eq!(grid(0, 256), 1);
        assert_eq!(grid(1 << 40, 256), MAX_GRID as u32);
    }
}
