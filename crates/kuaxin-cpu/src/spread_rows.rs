//! Rows of A that a register tile would read from one L1 set, copied where they do not.
//!
//! A tile reads one element from each of its rows per step of k. When those rows lie a
//! multiple of 4 KiB apart (a 1024-column f32 matrix read in place) they all fall in the same
//! set of a 64-set L1, and fourteen rows in a 12-way set evict each other on every step: the
//! 1024^3 MatMul on one Zen 5 core ran at 10.5-11 ms or, for seconds at a time, a steady
//! 21 ms, where the same product read through a 1040-column view (rows 4160 bytes apart, one
//! set further each) held 10.7-11.7 ms medians throughout. Such a block of A is copied into
//! rows one cache line longer than its steps of k before its tiles run.

/// Bytes an L1 set index repeats after (64 sets of 64-byte lines).
const SET_PERIOD: usize = 4096;
/// Bytes per cache line.
const LINE: usize = 64;
/// Rows of one tile that may share a set before the block is copied (of 12 ways, room left
/// for the B rows and C lines the tile touches meanwhile).
const SHARED_SET_ROWS: usize = 4;

/// Whether `rows` rows of f32 whose starts lie `row_step` elements apart crowd one L1 set:
/// more than [`SHARED_SET_ROWS`] of them start in it. Rows less than a line apart share lines
/// that lie in consecutive sets: never crowded.
pub fn crowded(row_step: isize, rows: usize) -> bool {
    let step = row_step.unsigned_abs();
    if step < LINE / 4 {
        return false;
    }
    let step = step % (SET_PERIOD / 4) * 4;
    let mut per_set = [0usize; SET_PERIOD / LINE];
    (0..rows).any(|r| {
        let set = (r % SET_PERIOD) * step % SET_PERIOD / LINE;
        per_set[set] += 1;
        per_set[set] > SHARED_SET_ROWS
    })
}

/// Elements between the rows of a copy of `steps` steps of k: whole lines, plus one, so that
/// consecutive rows start in consecutive sets.
pub fn copy_stride(steps: usize) -> usize {
    steps.next_multiple_of(LINE / 4) + LINE / 4
}

/// Copies `rows` rows of `steps` contiguous elements, the first at `src[0]`, the next
/// `row_step` further on, into `dst` at [`copy_stride`]`(steps)` apart.
///
/// Panics if a row falls outside `src` or `dst` (callers size both from the same counts).
pub fn copy(src: &[f32], row_step: usize, rows: usize, steps: usize, dst: &mut [f32]) {
    let ld = copy_stride(steps);
    for r in 0..rows {
        dst[r * ld..r * ld + steps].copy_from_slice(&src[r * row_step..r * row_step + steps]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_a_multiple_of_4_kib_apart_crowd_a_set_and_others_do_not() {
        // 1024 or 2048 f32 columns: every row in one set.
        assert!(crowded(1024, 14));
        assert!(crowded(2048, 8));
        assert!(crowded(-1024, 14));
        // 512 columns: two sets of seven rows each.
        assert!(crowded(512, 14));
        // 256 columns: four sets, four rows at most in each (14 = 4 + 4 + 3 + 3).
        assert!(!crowded(256, 14));
        // Fewer rows than the limit never crowd.
        assert!(!crowded(1024, SHARED_SET_ROWS));
        // Strides that walk the sets: a copy's, MiniLM's 384 and a transposed A's 1.
        assert!(!crowded(copy_stride(1024) as isize, 14));
        assert!(!crowded(384, 14));
        assert!(!crowded(1, 14));
        assert!(!crowded(0, 1));
    }

    #[test]
    fn a_copy_holds_each_row_at_the_copy_stride() {
        let (rows, steps, row_step) = (3, 5, 9);
        let src: Vec<f32> = (0..rows * row_step).map(|v| v as f32).collect();
        let ld = copy_stride(steps);
        assert_eq!(ld, 32);
        let mut dst = vec![-1.0; rows * ld];
        copy(&src, row_step, rows, steps, &mut dst);
        for r in 0..rows {
            for p in 0..ld {
                let want = if p < steps {
                    src[r * row_step + p]
                } else {
                    -1.0
                };
                assert_eq!(dst[r * ld + p], want, "row {r}, step {p}");
            }
        }
    }
}
