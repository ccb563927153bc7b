//! Medium blocks, from [`MEDIUM`] bytes up to [`crate::huge_pages::THRESHOLD`], carved from a
//! few regions of huge pages (Linux), for [`crate::huge_pages::HugePageAlloc`].
//!
//! A model's intermediates are mostly medium: ResNet-50's 800 KiB maps of 64 channels at
//! 56 x 56 and of 1024 at 14 x 14, MiniLM-L3's 768 KiB of 128 x 1536. On 4 KiB pages a
//! 1 x 1 convolution read in place touches a page per input channel at every step (planes
//! 12 KiB apart at 56 x 56) besides its output's and residual's rows, more pages than the
//! L1 TLB's 64; a block too small to hold an aligned huge page of its own cannot be advised
//! one. Carved side by side from 2 MiB aligned regions advised `MADV_HUGEPAGE`, they share
//! huge pages. Measured on an Ice Lake server core against the system allocator, per-kernel
//! minima in alternating processes: ResNet-50 6-9% faster at 1 thread (its layers at 56 x 56
//! and 28 x 28 10-20%), MiniLM-L3 ~3%; SqueezeNet level (its convolutions faster, its Concats
//! and first max pool ~10% slower, not explained); ~7 MiB more RSS (BENCHMARKS.md).
//!
//! A block is a whole number of [`GRAIN`]s, carved with a page more, and starts at one of
//! the 64-byte aligned offsets of that page ([`COLOR`]). A freed block is kept in a list
//! and handed out again for the next block of its size, the last freed first (the likeliest
//! still in cache, as the C allocator's bins hand them out): a program run allocates the
//! same sizes in the same order every time, so after the first run nothing new is carved
//! (and nothing is faulted in). Past [`FREE_BYTES`] of freed blocks (or [`FREE_SLOTS`] of
//! them: sizes that stop coming, as when inputs change shape between runs) the oldest is
//! given back to the system and its range not carved again. Regions are never unmapped; when
//! they are full, a block goes to the system allocator as before, so the worst case is the
//! old placement, not a failure or unbounded memory.
#[cfg(target_os = "linux")]
use crate::huge_pages::{advise, HUGE};
use std::alloc::Layout;
use std::sync::{Mutex, MutexGuard};

/// Smallest block carved from the regions.
pub const MEDIUM: usize = 64 << 10;
/// Unit of a block's size.
pub const GRAIN: usize = 16 << 10;
/// Bytes of one region (a multiple of the huge page).
const REGION: usize = 64 << 20;
/// Regions at most.
const REGIONS: usize = 8;
/// Freed blocks kept at most.
const FREE_SLOTS: usize = 512;
/// Bytes of freed blocks kept at most; past it the oldest are given back
/// ([`release_oldest`]).
const FREE_BYTES: usize = 64 << 20;
/// A small page: the span of a block's [`COLOR`]s.
const PAGE: usize = 4096;
/// Step between the offsets at which successive blocks start within a page (17 cache
/// lines). Grains start on page boundaries, so without it every source-destination pair of
/// a copy or an elementwise kernel would sit at the same offset in its pages, where a load
/// can wait on the stores to the other block (4 KiB aliasing) and both fall in the same L1
/// sets. A precaution, not measured apart on the Ice Lake host: SqueezeNet's Concats were
/// ~10% slower than on the system allocator with these offsets and without.
const COLOR: usize = 17 * 64;

/// The regions mapped (start address, bytes carved; start 0: not mapped) and the freed
/// blocks (address, bytes), in the order freed. Fixed arrays: an allocator cannot
/// allocate its own bookkeeping.
struct Regions {
    maps: [(usize, usize); REGIONS],
    free: [(usize, usize); FREE_SLOTS],
    /// Freed blocks held (the first `held` of `free`, oldest first).
    held: usize,
    /// Blocks carved so far (the last one's color).
    carved: usize,
}

impl Regions {
    /// Nothing mapped, nothing freed.
    const EMPTY: Regions = Regions {
        maps: [(0, 0); REGIONS],
        free: [(0, 0); FREE_SLOTS],
        held: 0,
        carved: 0,
    };
}

static STATE: Mutex<Regions> = Mutex::new(Regions::EMPTY);

/// The state, also after a panic elsewhere poisoned the lock (nothing here panics while
/// holding it, and a block of ours must never reach the system allocator).
fn state() -> MutexGuard<'static, Regions> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The size class of a block of `layout` (its bytes in whole grains; it is carved with a
/// page more), when it is medium (and on Linux).
pub fn block_size(layout: Layout) -> Option<usize> {
    let medium = layout.size() >= MEDIUM
        && layout.size() < crate::huge_pages::THRESHOLD
        && layout.align() <= 64;
    (cfg!(target_os = "linux") && medium).then(|| layout.size().next_multiple_of(GRAIN))
}

/// A block for `layout` from the regions: one freed of its size, or a new one carved.
/// `None` when the layout is not medium or the regions are full (or cannot be mapped).
pub fn alloc(layout: Layout) -> Option<*mut u8> {
    let size = block_size(layout)?;
    let mut r = state();
    // The last freed block of this size: the likeliest still in cache.
    let held = r.held;
    if let Some(i) = r.free[..held].iter().rposition(|f| f.1 == size) {
        let at = r.free[i].0;
        r.free.copy_within(i + 1..held, i);
        r.held -= 1;
        return Some(at as *mut u8);
    }
    r.carved += 1;
    let color = r.carved * COLOR % PAGE;
    for map in r.maps.iter_mut() {
        if map.0 == 0 {
            *map = (map_region()?, 0);
        }
        if REGION - map.1 >= size + PAGE {
            let at = map.0 + map.1 + color;
            map.1 += size + PAGE;
            return Some(at as *mut u8);
        }
    }
    None
}

/// Takes back the block `p` of `layout` when it came from the regions (true); false when it
/// did not (the caller frees it).
pub fn dealloc(p: *mut u8, layout: Layout) -> bool {
    let Some(size) = block_size(layout) else {
        return false;
    };
    let at = p as usize;
    let mut r = state();
    let ours = r
        .maps
        .iter()
        .any(|m| m.0 != 0 && at >= m.0 && at < m.0 + REGION);
    if !ours {
        return false;
    }
    keep_freed(&mut r, (at, size), FREE_BYTES);
    true
}

/// Adds the freed `block` (address, bytes) to the list, then gives back the oldest blocks
/// while the list is over `bytes` in all (or full).
fn keep_freed(r: &mut Regions, block: (usize, usize), bytes: usize) {
    if r.held == FREE_SLOTS {
        release_oldest(r);
    }
    let held = r.held;
    r.free[held] = block;
    r.held += 1;
    while r.free[..r.held].iter().map(|f| f.1).sum::<usize>() > bytes {
        release_oldest(r);
    }
}

/// Gives the memory of the oldest freed block back to the system and forgets the block (its
/// address range is not carved again): what bounds the memory held for sizes that stop
/// coming, as when a program's inputs change shape from run to run.
fn release_oldest(r: &mut Regions) {
    if r.held == 0 {
        return;
    }
    let (at, size) = r.free[0];
    r.free.copy_within(1..r.held, 0);
    r.held -= 1;
    // Whole small pages inside the block.
    let (start, end) = (at.next_multiple_of(PAGE), (at + size) / PAGE * PAGE);
    if end > start {
        #[cfg(target_os = "linux")]
        // SAFETY: `start..end` lies inside a block of a region that no one holds (freed, and
        // now out of the list); dropping its pages only makes them read as zeros again.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// Maps a region of [`REGION`] bytes aligned to a huge page and advises huge pages over it;
/// `None` when the system refuses the mapping.
fn map_region() -> Option<usize> {
    #[cfg(target_os = "linux")]
    // SAFETY: a fresh anonymous private mapping, trimmed to its aligned part; nothing else
    // refers to the parts unmapped.
    unsafe {
        let len = REGION + HUGE;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return None;
        }
        let start = p as usize;
        let aligned = start.next_multiple_of(HUGE);
        if aligned > start {
            libc::munmap(p, aligned - start);
        }
        let end = start + len;
        if end > aligned + REGION {
            libc::munmap(
                (aligned + REGION) as *mut libc::c_void,
                end - aligned - REGION,
            );
        }
        advise(aligned as *mut u8, REGION);
        Some(aligned)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_medium_layouts_go_to_the_regions() {
        let size = |n: usize, align: usize| {
            block_size(Layout::from_size_align(n, align).expect("a layout"))
        };
        if !cfg!(target_os = "linux") {
            assert_eq!(size(MEDIUM, 8), None);
            return;
        }
        assert_eq!(size(MEDIUM - 1, 8), None);
        assert_eq!(size(MEDIUM, 8), Some(MEDIUM));
        assert_eq!(size(MEDIUM + 1, 64), Some(MEDIUM + GRAIN));
        assert_eq!(size(crate::huge_pages::THRESHOLD, 8), None);
        assert_eq!(size(MEDIUM, 128), None, "an alignment past a cache line");
    }

    /// Past the bound on freed bytes the oldest freed block leaves the list and its pages are
    /// given back (they read as zeros again); the others stay, in order, with their bytes.
    #[test]
    fn the_oldest_freed_blocks_are_given_back_past_the_bound() {
        if !cfg!(target_os = "linux") {
            eprintln!("skipped: regions of huge pages are made on Linux only");
            return;
        }
        // A region of this test's own and a list of its own (not the process's).
        let base = map_region().expect("a region");
        let mut r = Regions::EMPTY;
        let size = 4 * PAGE;
        let blocks: Vec<(usize, usize)> = (0..3).map(|i| (base + i * size, size)).collect();
        for &(at, n) in &blocks {
            // SAFETY: the block lies in the region mapped above, which nothing else uses.
            unsafe { std::ptr::write_bytes(at as *mut u8, 9, n) };
            keep_freed(&mut r, (at, n), 2 * size);
        }
        assert_eq!(
            &r.free[..r.held],
            &blocks[1..],
            "the oldest block was not the one given back"
        );
        let bytes = |(at, n): (usize, usize)| -> Vec<u8> {
            // SAFETY: as above; reading only.
            unsafe { std::slice::from_raw_parts(at as *const u8, n).to_vec() }
        };
        assert!(
            bytes(blocks[0]).iter().all(|&b| b == 0),
            "its pages were not given back"
        );
        assert!(
            bytes(blocks[1]).iter().all(|&b| b == 9),
            "a kept block lost its bytes"
        );
        // A full list gives back its oldest to take one more, whatever the bytes.
        r.held = FREE_SLOTS;
        keep_freed(&mut r, (base + 3 * size, size), usize::MAX);
        assert_eq!(
            (r.held, r.free[FREE_SLOTS - 1]),
            (FREE_SLOTS, (base + 3 * size, size))
        );
    }

    /// Blocks come out cache-line aligned, at different offsets in their pages, inside a huge-page aligned region, apart from each
    /// other; a freed one comes back for the next block of its size; a pointer not from the
    /// regions is refused.
    #[test]
    fn blocks_are_carved_apart_and_reused_by_size() {
        if !cfg!(target_os = "linux") {
            eprintln!("skipped: regions of huge pages are made on Linux only");
            return;
        }
        // Sizes no other test allocates (the regions are the process's).
        let a = Layout::from_size_align(MEDIUM + 3 * GRAIN + 5, 16).expect("a layout");
        let b = Layout::from_size_align(MEDIUM + 5 * GRAIN + 7, 16).expect("a layout");
        let p = alloc(a).expect("a block");
        let q = alloc(b).expect("a block");
        for x in [p, q] {
            assert_eq!(x as usize % 64, 0, "not cache-line aligned");
        }
        let (p0, q0) = (p as usize, q as usize);
        let apart =
            p0 + block_size(a).expect("medium") <= q0 || q0 + block_size(b).expect("medium") <= p0;
        assert!(apart, "blocks overlap: {p0:#x} and {q0:#x}");
        assert_ne!(
            p0 % PAGE,
            q0 % PAGE,
            "two blocks at one offset in their pages"
        );
        // SAFETY: each block holds its layout's bytes and is ours alone until freed.
        unsafe {
            std::ptr::write_bytes(p, 1, a.size());
            std::ptr::write_bytes(q, 2, b.size());
            assert!(
                (0..a.size()).all(|i| *p.add(i) == 1),
                "a block was overwritten"
            );
        }
        assert!(dealloc(p, a));
        assert_eq!(
            alloc(a),
            Some(p),
            "the freed block was not handed out again"
        );
        assert!(dealloc(p, a));
        assert!(dealloc(q, b));
        let mut elsewhere = vec![0u8; MEDIUM];
        assert!(
            !dealloc(
                elsewhere.as_mut_ptr(),
                Layout::from_size_align(MEDIUM, 1).expect("a layout")
            ),
            "a block of the system allocator was taken"
        );
    }
}
