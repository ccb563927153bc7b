//! Walking a fused kernel's (coalesced) domain in blocks of consecutive positions that may
//! span several rows: each block is a list of row segments, and every load fetches its values
//! segment by segment. Short rows (a 128-wide attention row, a 55-wide pooling row) then cost
//! one pass of the expression evaluator per block instead of one per row.
use crate::block::Val;
use kuaxin_core::kernel::Load;

/// The domain's shape as the loads see it: `outer` axes, then rows of `n` positions.
pub struct Walk<'a> {
    pub outer: &'a [usize],
    /// Per load: stride along each outer axis.
    pub strides: &'a [Vec<isize>],
    /// Per load: offset of position 0.
    pub offsets: &'a [isize],
    /// Per load: stride along the row.
    pub inner: &'a [isize],
    pub n: usize,
}

/// The row segments of one block: where each starts in the block, its length, and per load
/// the source offset of its first element.
#[derive(Default)]
pub struct Segments {
    loads: usize,
    starts: Vec<usize>,
    lens: Vec<usize>,
    /// Segment-major: `bases[s * loads + l]`.
    bases: Vec<isize>,
    scratch: Vec<isize>,
    /// The current row's index along each outer axis.
    index: Vec<usize>,
}

impl<'a> Walk<'a> {
    /// The (coalesced) domain `dims` walked row by row along its last axis.
    pub fn rows(
        dims: &'a [usize],
        strides: &'a [Vec<isize>],
        offsets: &'a [isize],
        inner: &'a [isize],
    ) -> Walk<'a> {
        Walk {
            outer: &dims[..dims.len().saturating_sub(1)],
            strides,
            offsets,
            inner,
            n: dims.last().copied().unwrap_or(1),
        }
    }

    /// Splits positions `p0 .. p0 + len` into row segments. The first row's bases come from
    /// its index; each next row's by stepping an odometer over the outer axes (no division
    /// per row: a block of short rows has many).
    pub fn segments(&self, p0: usize, len: usize, segs: &mut Segments) {
        let loads = self.offsets.len();
        segs.loads = loads;
        segs.starts.clear();
        segs.lens.clear();
        segs.bases.clear();
        segs.scratch.resize(loads, 0);
        let n = self.n.max(1);
        let (row, mut j) = (p0 / n, p0 % n);
        // The first row's index along each outer axis, and its bases.
        segs.index.clear();
        segs.index.resize(self.outer.len(), 0);
        let mut r = row;
        for (ax, &d) in self.outer.iter().enumerate().rev() {
            segs.index[ax] = r % d.max(1);
            r /= d.max(1);
        }
        let mut scratch = std::mem::take(&mut segs.scratch);
        scratch.copy_from_slice(self.offsets);
        for (ax, &i) in segs.index.iter().enumerate() {
            for (b, st) in scratch.iter_mut().zip(self.strides) {
                *b += i as isize * st[ax];
            }
        }
        let mut at = 0;
        while at < len {
            let seg = (n - j).min(len - at);
            for (b, inner) in scratch.iter().zip(self.inner) {
                segs.bases.push(b + j as isize * inner);
            }
            segs.starts.push(at);
            segs.lens.push(seg);
            at += seg;
            j = 0;
            if at < len {
                // Next row: the innermost outer axis steps, carrying outwards.
                for ax in (0..self.outer.len()).rev() {
                    segs.index[ax] += 1;
                    for (b, st) in scratch.iter_mut().zip(self.strides) {
                        *b += st[ax];
                    }
                    if segs.index[ax] < self.outer[ax] {
                        break;
                    }
                    for (b, st) in scratch.iter_mut().zip(self.strides) {
                        *b -= st[ax] * self.outer[ax] as isize;
                    }
                    segs.index[ax] = 0;
                }
            }
        }
        segs.scratch = scratch;
    }
}

/// Per load, the source offset of element 0 of row `row` over the `outer` axes (`strides`
/// per load and axis, `offsets` per load).
pub fn row_bases(
    row: usize,
    outer: &[usize],
    strides: &[Vec<isize>],
    offsets: &[isize],
    out: &mut [isize],
) {
    out.copy_from_slice(offsets);
    let mut r = row;
    for ax in (0..outer.len()).rev() {
        let i = (r % outer[ax]) as isize;
        r /= outer[ax];
        for (o, s) in out.iter_mut().zip(strides) {
            *o += i * s[ax];
        }
    }
}

/// Per load, its stride along the innermost axis (0 for a rank-0 domain).
pub fn inner_strides(strides: &[Vec<isize>]) -> Vec<isize> {
    strides
        .iter()
        .map(|s| s.last().copied().unwrap_or(0))
        .collect()
}

/// Per load, the source offset of domain position 0.
pub fn load_offsets(loads: &[Load]) -> Vec<isize> {
    loads.iter().map(|l| l.offset as isize).collect()
}

impl Segments {
    /// Each segment's start within the block and its length.
    pub fn parts(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.starts.iter().copied().zip(self.lens.iter().copied())
    }

    /// Each segment's start within the block, its length, and load `l`'s source offset of its
    /// first element.
    pub fn of_load(&self, l: usize) -> impl Iterator<Item = (usize, usize, isize)> + '_ {
        self.parts()
            .enumerate()
            .map(move |(s, (start, len))| (start, len, self.bases[s * self.loads + l]))
    }

    /// Load `l`'s values over the whole block, every source offset moved by `shift` (a
    /// reduced position's offset; 0 outside reductions): in place or as a scalar where the
    /// block allows, else copied into `dst`.
    pub fn fetch<'a>(
        &self,
        l: usize,
        src: &'a [f32],
        inner: isize,
        shift: isize,
        dst: &mut [f32],
    ) -> Val<'a> {
        let base = |s: usize| self.bases[s * self.loads + l] + shift;
        if self.starts.len() == 1 {
            return fetch(src, base(0), inner, dst);
        }
        let segments = 1..self.starts.len();
        if inner == 0 && segments.clone().all(|s| base(s) == base(0)) {
            return fetch(src, base(0), 0, dst);
        }
        // Rows that follow each other in the source read as one.
        if inner == 1 && { segments }.all(|s| base(s) == base(0) + self.starts[s] as isize) {
            return fetch(src, base(0), 1, dst);
        }
        for (s, (&start, &len)) in self.starts.iter().zip(&self.lens).enumerate() {
            copy(src, base(s), inner, &mut dst[start..start + len]);
        }
        Val::Buf
    }
}

/// `src[base + j * stride]` for `j < dst.len()`: in place when contiguous, a scalar when
/// `stride` is 0, else gathered into `dst`.
pub fn fetch<'a>(src: &'a [f32], base: isize, stride: isize, dst: &mut [f32]) -> Val<'a> {
    match stride {
        _ if dst.is_empty() => Val::Buf,
        1 => Val::Slice(&src[base as usize..base as usize + dst.len()]),
        0 => Val::Scalar(src[base as usize]),
        _ => {
            copy(src, base, stride, dst);
            Val::Buf
        }
    }
}

/// `dst[j] = src[base + j * stride]`.
pub fn copy(src: &[f32], base: isize, stride: isize, dst: &mut [f32]) {
    if dst.is_empty() {
        return;
    }
    match stride {
        1 => dst.copy_from_slice(&src[base as usize..base as usize + dst.len()]),
        0 => dst.fill(src[base as usize]),
        s => {
            // The indices run monotonically from `base` to `last`: checking both ends bounds
            // every one, so the loop needs no check per element.
            let last = base + (dst.len() as isize - 1) * s;
            assert!(
                base.min(last) >= 0 && (base.max(last) as usize) < src.len(),
                "fused load out of bounds"
            );
            if (2..=4).contains(&s) {
                return strided(&src[base as usize..=last as usize], s as usize, dst);
            }
            for (j, d) in dst.iter_mut().enumerate() {
                // SAFETY: base + j*s lies between base and last, both in bounds (checked above).
                *d = unsafe { *src.get_unchecked((base + j as isize * s) as usize) };
            }
        }
    }
}

/// `dst[j] = src[j * stride]`, where `src` holds `(dst.len() - 1) * stride + 1` elements.
/// Small strides (2 to 4: pooling windows, strided convolutions) run as constant-stride loops,
/// which vectorise as loads and shuffles.
pub fn strided<T: Copy>(src: &[T], stride: usize, dst: &mut [T]) {
    crate::simd::vectorized(
        #[inline(always)]
        || match stride {
            2 => every::<T, 2>(src, dst),
            3 => every::<T, 3>(src, dst),
            4 => every::<T, 4>(src, dst),
            s => {
                for (d, c) in dst.iter_mut().zip(src.iter().step_by(s.max(1))) {
                    *d = *c;
                }
            }
        },
    )
}

#[inline(always)]
fn every<T: Copy, const S: usize>(src: &[T], dst: &mut [T]) {
    let whole = src.len() / S;
    let (head, tail) = dst.split_at_mut(whole.min(dst.len()));
    for (d, c) in head.iter_mut().zip(src.chunks_exact(S)) {
        *d = c[0];
    }
    if let Some(d) = tail.first_mut() {
        *d = src[whole * S];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_spanning_rows_fetches_each_row_from_its_own_base() {
        // A 3 x 4 domain reading a 3 x 8 source with row stride 8 and element stride 2.
        let src: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let strides = vec![vec![8isize]];
        let walk = Walk {
            outer: &[3],
            strides: &strides,
            offsets: &[1],
            inner: &[2],
            n: 4,
        };
        let mut segs = Segments::default();
        walk.segments(2, 7, &mut segs);
        let mut dst = vec![0f32; 7];
        assert!(matches!(segs.fetch(0, &src, 2, 0, &mut dst), Val::Buf));
        // Positions 2..9: row 0 cols 2,3; row 1 cols 0..4; row 2 col 0.
        assert_eq!(dst, vec![5.0, 7.0, 9.0, 11.0, 13.0, 15.0, 17.0]);
        assert!(matches!(segs.fetch(0, &src, 2, -1, &mut dst), Val::Buf));
        assert_eq!(dst, vec![4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]);
    }

    #[test]
    fn segments_step_rows_across_every_outer_axis() {
        // Outer axes [2, 3] (rows 0..6), rows of 2; two loads with different strides.
        let strides = vec![vec![100isize, 10], vec![-7isize, 3]];
        let walk = Walk {
            outer: &[2, 3],
            strides: &strides,
            offsets: &[5, 50],
            inner: &[1, 2],
            n: 2,
        };
        let mut segs = Segments::default();
        for (p0, len) in [(1, 11), (0, 12), (3, 6), (4, 1)] {
            walk.segments(p0, len, &mut segs);
            let mut want = Vec::new();
            let (mut p, end) = (p0, p0 + len);
            while p < end {
                let (row, j) = (p / 2, p % 2);
                let mut b = vec![0isize; 2];
                row_bases(row, walk.outer, walk.strides, walk.offsets, &mut b);
                want.extend([b[0] + j as isize, b[1] + 2 * j as isize]);
                p += 2 - j;
            }
            assert_eq!(segs.bases, want, "from {p0}, {len} positions");
        }
    }

    #[test]
    fn small_strides_gather_every_element() {
        let src: Vec<f32> = (0..40).map(|v| v as f32).collect();
        for s in 1..=5isize {
            for n in [1usize, 2, 7, 8] {
                for base in [0isize, 3] {
                    let mut dst = vec![-1f32; n];
                    copy(&src, base, s, &mut dst);
                    let want: Vec<f32> = (0..n).map(|j| (base + j as isize * s) as f32).collect();
                    assert_eq!(dst, want, "stride {s}, {n} elements from {base}");
                }
            }
        }
    }

    #[test]
    fn a_block_within_one_row_reads_in_place_or_as_a_scalar() {
        let src: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let strides = vec![vec![8isize], vec![0isize], vec![1isize]];
        let walk = Walk {
            outer: &[3],
            strides: &strides,
            offsets: &[1, 5, 2],
            inner: &[1, 0, 0],
            n: 4,
        };
        let mut segs = Segments::default();
        walk.segments(4, 3, &mut segs); // row 1, columns 0..3
        let mut dst = vec![0f32; 3];
        match segs.fetch(0, &src, 1, 0, &mut dst) {
            Val::Slice(s) => assert_eq!(s, &[9.0, 10.0, 11.0]),
            _ => panic!("a contiguous load within a row is read in place"),
        }
        assert!(matches!(segs.fetch(1, &src, 0, 0, &mut dst), Val::Scalar(v) if v == 5.0));
        // Spanning rows 1 and 2: load 1 is the same everywhere, load 2 is not.
        walk.segments(6, 4, &mut segs);
        let mut dst = vec![0f32; 4];
        assert!(matches!(segs.fetch(1, &src, 0, 0, &mut dst), Val::Scalar(v) if v == 5.0));
        assert!(matches!(segs.fetch(2, &src, 0, 0, &mut dst), Val::Buf));
        assert_eq!(dst, vec![3.0, 3.0, 4.0, 4.0]);
        // Rows 8 apart are not contiguous; rows 4 apart (of 4) are.
        assert!(matches!(segs.fetch(0, &src, 1, 0, &mut dst), Val::Buf));
        assert_eq!(dst, vec![11.0, 12.0, 17.0, 18.0]);
        let dense = vec![vec![4isize]];
        let walk = Walk {
            outer: &[3],
            strides: &dense,
            offsets: &[0],
            inner: &[1],
            n: 4,
        };
        walk.segments(2, 8, &mut segs);
        let mut dst = vec![0f32; 8];
        match segs.fetch(0, &src, 1, 0, &mut dst) {
            Val::Slice(s) => assert_eq!(s, &[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]),
            _ => panic!("consecutive rows are read in place"),
        }
    }
}
