//! One mechanism for every vectorised loop of the CPU back end: [`vectorized`] runs a closure
//! compiled for the widest vector extension the CPU has — AVX-512 with FMA, else AVX2 with
//! FMA, else the build's baseline — detected once at run time, so one binary runs anywhere and
//! uses what it finds.
//!
//! Mark the closure `#[inline(always)]`: its body, and the `#[inline(always)]` scalar
//! functions it calls (`vmath`, the op closures of `float_ops`), are then compiled inside each
//! copy and vectorise for it.
//!
//! Every copy rounds identically, so fused and unfused kernels agree bit for bit whichever copy
//! runs: plain `*` and `+` never become FMAs, and `mul_add` is one correctly rounded fused
//! multiply-add in all of them (an instruction, or libm's `fmaf` on a CPU without FMA).

/// The vector extensions a copy can be compiled for, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Baseline,
    Avx2Fma,
    Avx512,
}

/// The widest level this CPU supports; `KUAXIN_CPU_SIMD=baseline|avx2` caps it (to compare
/// copies, or to rule one out).
pub fn level() -> Level {
    use std::sync::OnceLock;
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var("KUAXIN_CPU_SIMD").as_deref() {
            Ok("baseline") => Level::Baseline,
            Ok("avx2") => Level::Avx2Fma,
            _ => Level::Avx512,
        };
        detected().min(cap)
    })
}

fn detected() -> Level {
    use std::sync::OnceLock;
    static DETECTED: OnceLock<Level> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        let avx512 = avx2
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512vl");
        if avx512 {
            return Level::Avx512;
        }
        if avx2 {
            return Level::Avx2Fma;
        }
    }
    Level::Baseline
}

/// Runs `f` compiled for [`level`].
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    at(level(), f)
}

/// Runs `f` compiled for `level`, which must not exceed what the CPU supports (a higher one
/// runs the baseline copy).
#[inline(always)]
pub fn at<R>(level: Level, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if level == Level::Avx512 && detected() == Level::Avx512 {
            // SAFETY: the CPU has every feature `avx512` is compiled for.
            return unsafe { avx512(f) };
        }
        if level >= Level::Avx2Fma && detected() >= Level::Avx2Fma {
            // SAFETY: the CPU has AVX2 and FMA, the features `avx2` is compiled for.
            return unsafe { avx2(f) };
        }
    }
    let _ = level;
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmath::{erf_f32, exp_f32};

    /// `f` over `xs` in the copy for `level`, as bits (`f` is called directly, so it is
    /// inlined into that copy).
    macro_rules! sweep {
        ($level:expr, $f:path, $xs:expr) => {
            at(
                $level,
                #[inline(always)]
                || $xs.iter().map(|&x| $f(x).to_bits()).collect::<Vec<u32>>(),
            )
        };
    }

    #[test]
    fn every_level_rounds_identically() {
        let xs: Vec<f32> = (0..200_001)
            .map(|i| -12.0 + 24.0 * i as f32 / 200_000.0)
            .chain([f32::NAN, f32::INFINITY, -f32::INFINITY, 0.0, -0.0, 1e-40])
            .collect();
        let levels = [Level::Baseline, Level::Avx2Fma, Level::Avx512];
        let exps: Vec<Vec<u32>> = levels.iter().map(|&l| sweep!(l, exp_f32, xs)).collect();
        let erfs: Vec<Vec<u32>> = levels.iter().map(|&l| sweep!(l, erf_f32, xs)).collect();
        for (i, level) in levels.iter().enumerate().skip(1) {
            if *level > detected() {
                eprintln!("skipped {level:?}: this CPU lacks it");
                continue;
            }
            assert!(
                exps[i] == exps[0],
                "exp: {level:?} differs from the baseline"
            );
            assert!(
                erfs[i] == erfs[0],
                "erf: {level:?} differs from the baseline"
            );
        }
    }
}
