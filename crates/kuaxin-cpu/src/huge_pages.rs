//! A global allocator that puts large buffers on transparent huge pages (Linux).
//!
//! The kernels read NCHW activations across channels: a 1 x 1 convolution's tile reads one
//! cache line from each of 64 to 512 input channel planes, a 56 x 56 plane 12 KiB from the
//! next, so one tile touches as many 4 KiB pages as it has channels, more than a Zen 3
//! core's 64-entry L1 TLB. On 2 MiB pages the same reads touch one or two. Measured on a Zen 3
//! core, one process alternating the two placements (whole buffers on huge pages): a 1 x 1
//! layer of 64 -> 256 channels at 56 x 56 1.20 against 1.35 ms (minimum) and 1.29 against
//! 1.44 (median); 256 -> 64 channels 1.15 against 1.29; 128 -> 512 at 28 x 28 (3 KiB planes)
//! 2% (BENCHMARKS.md).
//!
//! Allocations of at least [`THRESHOLD`] bytes are aligned to 2 MiB, and the whole 2 MiB pages
//! they hold advised `MADV_HUGEPAGE`, which the kernel honours when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise` (and ignores
//! otherwise); a last part page stays on small pages. Padding every large buffer to whole
//! pages instead, and putting buffers from 512 KiB on huge pages, made ResNet-50's peak RSS
//! 394-466 MiB against 294; this way it is ~325. Medium allocations, from
//! [`huge_regions::MEDIUM`] (64 KiB) up to [`THRESHOLD`], are carved side by side from regions
//! of huge pages instead ([`crate::huge_regions`]: a few MiB more RSS). Smaller allocations,
//! and every allocation off Linux, go to the system allocator as they are.
//!
//! A freed large block is kept (up to [`CACHE_SLOTS`] blocks, [`CACHE_BYTES`] in all) and
//! handed out again for the next allocation of exactly its layout: the C allocator unmaps or
//! trims such blocks, so a model's output of megabytes (or a copy of its input) was faulted
//! in afresh, page by page, on every run: a 1024^3 MatMul's 4 MiB output and input cost 5-8%
//! of its run under `perf` in the kernel's page clearing.
//!
//! A library cannot choose the allocator of the program that uses it: the `kuaxin` command
//! installs this one, and a program embedding kuaxin may do the same:
//! ```ignore
//! #[global_allocator]
//! static ALLOC: kuaxin::HugePageAlloc = kuaxin::HugePageAlloc;
//! ```
use crate::huge_regions;
use std::alloc::{GlobalAlloc, Layout, System};

/// A huge page (x86-64 and aarch64 Linux with 4 KiB base pages).
pub(crate) const HUGE: usize = 2 << 20;
/// Smallest allocation advised: one that can hold a whole huge page once aligned.
pub const THRESHOLD: usize = HUGE;

/// The system allocator, with allocations of [`THRESHOLD`] bytes or more on huge pages.
pub struct HugePageAlloc;

/// Freed large blocks kept for reuse, at most.
pub const CACHE_SLOTS: usize = 8;
/// Bytes of freed large blocks kept for reuse, at most.
pub const CACHE_BYTES: usize = 256 << 20;

/// A freed block: its address and the layout it was allocated with (size 0: an empty slot).
#[derive(Clone, Copy)]
struct Kept {
    at: usize,
    size: usize,
    align: usize,
}

/// The blocks kept: a fixed array under a lock (the allocator cannot allocate its own
/// bookkeeping; `std`'s mutex does not allocate).
static KEPT: std::sync::Mutex<[Kept; CACHE_SLOTS]> = std::sync::Mutex::new(
    [Kept {
        at: 0,
        size: 0,
        align: 0,
    }; CACHE_SLOTS],
);

/// A kept block of exactly `layout`, taken out of the cache.
fn take_kept(layout: Layout) -> Option<*mut u8> {
    let mut kept = KEPT.lock().ok()?;
    let slot = kept
        .iter_mut()
        .find(|k| k.size == layout.size() && k.align == layout.align())?;
    let at = slot.at;
    slot.size = 0;
    Some(at as *mut u8)
}

/// Keeps the freed block `p` of `layout` for reuse; false (the caller frees it) when the
/// cache has no room for it.
fn keep(p: *mut u8, layout: Layout) -> bool {
    let Ok(mut kept) = KEPT.lock() else {
        return false;
    };
    let held: usize = kept.iter().map(|k| k.size).sum();
    if held + layout.size() > CACHE_BYTES {
        return false;
    }
    match kept.iter_mut().find(|k| k.size == 0) {
        Some(slot) => {
            *slot = Kept {
                at: p as usize,
                size: layout.size(),
                align: layout.align(),
            };
            true
        }
        None => false,
    }
}

/// The layout a large allocation is made with: 2 MiB aligned. `None` for a small one (or one
/// whose alignment cannot be raised), which goes to the system allocator unchanged.
fn huge_layout(layout: Layout) -> Option<Layout> {
    if !cfg!(target_os = "linux") || layout.size() < THRESHOLD {
        return None;
    }
    Layout::from_size_align(layout.size(), layout.align().max(HUGE)).ok()
}

/// Asks the kernel for huge pages over `len` bytes from `p` (both multiples of 2 MiB). Advice
/// only: a kernel without transparent huge pages refuses it and the buffer keeps small pages.
pub(crate) fn advise(p: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: `p..p + len` is a mapping this allocator just obtained; MADV_HUGEPAGE changes
    // only how it is backed, never its contents.
    unsafe {
        libc::madvise(p.cast(), len, libc::MADV_HUGEPAGE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (p, len);
}

/// `get` called with the layout a block of `layout` is made with, the whole huge pages of a
/// large one then advised.
fn with_layout(layout: Layout, get: impl FnOnce(Layout) -> *mut u8) -> *mut u8 {
    match huge_layout(layout) {
        Some(huge) => {
            let p = get(huge);
            if !p.is_null() {
                advise(p, huge.size() / HUGE * HUGE);
            }
            p
        }
        None => get(layout),
    }
}

// SAFETY: a medium block from a region (`huge_regions`) is recognised by its address and
// goes back there, never to `System`; it holds its layout's bytes at a 64-byte alignment,
// at least the layout's. Every other block is allocated and freed by `System` with one
// layout, chosen from the caller's layout alone (`huge_layout`), so `dealloc` and `realloc`
// see the layout `alloc` used; a huge layout only raises the alignment, which the caller's
// use of the block cannot notice.
// A kept block came from `System` with the very layout it is handed out for again, and
// belongs to no one while kept.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(p) = huge_regions::alloc(layout) {
            return p;
        }
        if let Some(p) = huge_layout(layout).and_then(take_kept) {
            return p;
        }
        // SAFETY: forwarded with a layout of nonzero size (the caller's, or a larger one).
        with_layout(layout, |l| unsafe { System.alloc(l) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(p) =
            huge_regions::alloc(layout).or_else(|| huge_layout(layout).and_then(take_kept))
        {
            // SAFETY: the block (kept, or from a region) holds `layout.size()` bytes, now
            // the caller's.
            unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            return p;
        }
        // SAFETY: as in `alloc`.
        with_layout(layout, |l| unsafe { System.alloc_zeroed(l) })
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if huge_regions::dealloc(p, layout) {
            return;
        }
        let made = huge_layout(layout);
        if made.is_some_and(|l| keep(p, l)) {
            return;
        }
        // SAFETY: `p` came from `alloc` with `layout`, so from `System` with this layout.
        unsafe { System.dealloc(p, made.unwrap_or(layout)) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`; a block that is or becomes large moves
        // through `alloc` and `dealloc` above, so it keeps its layout's rules.
        unsafe {
            let new = Layout::from_size_align_unchecked(new_size, layout.align());
            let plain =
                |l: Layout| huge_layout(l).is_none() && huge_regions::block_size(l).is_none();
            if plain(layout) && plain(new) {
                return System.realloc(p, layout, new_size);
            }
            let q = self.alloc(new);
            if !q.is_null() {
                std::ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
            q
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_blocks_keep_their_layout_and_large_ones_are_aligned_to_huge_pages() {
        let small = Layout::from_size_align(THRESHOLD - 1, 8).expect("a layout");
        assert_eq!(huge_layout(small), None);
        let large = Layout::from_size_align(THRESHOLD + 3, 64).expect("a layout");
        match huge_layout(large) {
            Some(h) if cfg!(target_os = "linux") => {
                assert_eq!((h.size(), h.align()), (THRESHOLD + 3, HUGE));
            }
            other => assert_eq!(other, None, "huge pages are asked for on Linux only"),
        }
        let hostile = Layout::from_size_align(isize::MAX as usize - 4095, 8).expect("a layout");
        assert_eq!(
            huge_layout(hostile),
            None,
            "aligning would overflow: left as it is"
        );
    }

    /// A freed large block comes back for the next allocation of its layout (zeroed when asked),
    /// and one larger than the cache holds is freed.
    #[test]
    fn freed_large_blocks_are_kept_for_the_same_layout() {
        if !cfg!(target_os = "linux") {
            eprintln!("skipped: large blocks are kept on Linux only");
            return;
        }
        let a = HugePageAlloc;
        // A size no other test allocates (the cache is the process's).
        let layout = Layout::from_size_align(THRESHOLD + 12_345, 8).expect("a layout");
        let p = comes_back_zeroed(layout);
        // SAFETY: each block is freed once with its layout.
        unsafe {
            let r = a.alloc(layout);
            assert_eq!(r, p);
            a.dealloc(r, layout);
            let huge = Layout::from_size_align(CACHE_BYTES + 1, 8).expect("a layout");
            let big = a.alloc(huge);
            assert!(!big.is_null());
            a.dealloc(big, huge);
            assert!(
                take_kept(huge_layout(huge).expect("large")).is_none(),
                "a block larger than the cache was kept"
            );
        }
    }

    /// A freed medium block, from a region of huge pages, comes back for the next allocation
    /// of its size, zeroed when asked.
    #[test]
    fn freed_medium_blocks_come_back_zeroed_when_asked() {
        if !cfg!(target_os = "linux") {
            eprintln!("skipped: medium blocks come from regions on Linux only");
            return;
        }
        // A size no other test allocates (the regions are the process's).
        let layout = Layout::from_size_align(huge_regions::MEDIUM + 54_321, 8).expect("a layout");
        comes_back_zeroed(layout);
    }

    /// Allocates a block of `layout`, fills and frees it, and checks that a zeroed
    /// allocation of the same layout hands the same block back, zeroed; returns its address
    /// (freed).
    fn comes_back_zeroed(layout: Layout) -> *mut u8 {
        let a = HugePageAlloc;
        // SAFETY: each block is written within its size and freed once with its layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 7, layout.size());
            a.dealloc(p, layout);
            let q = a.alloc_zeroed(layout);
            assert_eq!(q, p, "the freed block was not handed out again");
            assert!((0..layout.size()).all(|i| *q.add(i) == 0), "not zeroed");
            a.dealloc(q, layout);
            p
        }
    }

    /// Blocks on either side of the threshold, grown and shrunk across it, keep their bytes,
    /// and large ones come back 2 MiB aligned.
    #[test]
    fn blocks_keep_their_contents_across_the_threshold() {
        let a = HugePageAlloc;
        let medium = huge_regions::MEDIUM;
        for (from, to) in [
            (1000, medium + 100),
            (medium + 100, THRESHOLD + 5),
            (THRESHOLD + 5, medium + 7),
            (medium + 7, 2 * medium + 9),
            (1000, THRESHOLD + 100),
            (THRESHOLD + 100, 1000),
            (THRESHOLD, 3 * HUGE + 5),
            (64, 128),
        ] {
            let layout = Layout::from_size_align(from, 16).expect("a layout");
            // SAFETY: nonzero sizes; each block is written within its size and freed once
            // with the layout it has then.
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                if cfg!(target_os = "linux") && from >= THRESHOLD {
                    assert_eq!(p as usize % HUGE, 0, "{from} bytes not 2 MiB aligned");
                }
                for i in 0..from {
                    *p.add(i) = (i % 251) as u8;
                }
                let q = a.realloc(p, layout, to);
                assert!(!q.is_null());
                for i in 0..from.min(to) {
                    assert_eq!(*q.add(i), (i % 251) as u8, "{from} -> {to}: byte {i}");
                }
                a.dealloc(q, Layout::from_size_align(to, 16).expect("a layout"));
            }
            // SAFETY: as above.
            unsafe {
                let z = a.alloc_zeroed(layout);
                assert!((0..from).all(|i| *z.add(i) == 0), "{from} bytes not zeroed");
                a.dealloc(z, layout);
            }
        }
    }
}
