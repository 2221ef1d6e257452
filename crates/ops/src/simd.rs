//! The x86 vector extensions fkd's own loops run with, chosen once at run time.
//!
//! A release build targets baseline x86-64 (SSE2), so a loop of fkd's own runs four f32 lanes
//! wide even on a CPU with AVX-512, while the `gemm` crate it calls picks its kernels at run
//! time. [`dispatch`] runs a closure inside a function compiled for AVX-512 or AVX2 + FMA when
//! the CPU has them, so that whatever LLVM inlines into it (the closure, and the
//! `#[inline(always)]` loops it calls) is vectorised for the wider registers, keeping the
//! baseline path for every other CPU. The conv forward's epilogue (bias, ReLU, 2×2 pool), the
//! batch norm's passes and the optimiser's and weight average's loops run through it; im2col
//! and the Winograd transforms, which are not inlined into it, stay baseline (inlining them
//! measured no faster on a Zen 4).
//!
//! The results do not depend on the level: Rust never contracts a multiply and an add into an
//! FMA nor reorders a float reduction on its own, so each level computes the same operations in
//! the same order, only more lanes at a time (the tests of each op compare every level's result
//! bit for bit with the baseline's).
//!
//! The level is the widest the CPU supports, or the one `FKD_SIMD=baseline|avx2|avx512` asks
//! for (never above the CPU's), or [`set_level`]'s.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set level for fkd's own loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Baseline code for the target (SSE2 on x86-64; everything on other architectures).
    Baseline,
    /// AVX2 and FMA (256-bit registers).
    Avx2,
    /// AVX-512 F, BW, DQ and VL (512-bit registers).
    Avx512,
}

impl Level {
    /// The level's name, as `FKD_SIMD` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Baseline => "baseline",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// Parses `FKD_SIMD`'s spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "baseline" | "none" | "sse2" => Some(Level::Baseline),
            "avx2" => Some(Level::Avx2),
            "avx512" | "avx-512" => Some(Level::Avx512),
            _ => None,
        }
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(c: u8) -> Self {
        match c {
            2 => Level::Avx2,
            3 => Level::Avx512,
            _ => Level::Baseline,
        }
    }
}

/// The widest level this CPU runs.
pub fn supported() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// The chosen level's code, 0 before the first [`level`] call.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The level the loops run at: the CPU's widest, or `FKD_SIMD`'s if lower; read once.
pub fn level() -> Level {
    let c = LEVEL.load(Ordering::Relaxed);
    if c != 0 {
        return Level::from_code(c);
    }
    let cpu = supported();
    let asked = std::env::var("FKD_SIMD")
        .ok()
        .and_then(|s| Level::parse(&s));
    let l = asked.map_or(cpu, |a| a.min(cpu));
    // Only the first reader stores it, so that a `set_level` made meanwhile is not undone.
    match LEVEL.compare_exchange(0, l.code(), Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => l,
        Err(set) => Level::from_code(set),
    }
}

/// Makes the loops run at `want`, or the CPU's widest level if that is lower; returns the
/// level set. For benchmarks and tests: every level gives the same results.
pub fn set_level(want: Level) -> Level {
    let l = want.min(supported());
    LEVEL.store(l.code(), Ordering::Relaxed);
    l
}

/// Runs `f` compiled for the current [`level`]: whatever is inlined into `f` (give the closure
/// and the loops it calls `#[inline(always)]`) is vectorised for that level's registers.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match level() {
        // SAFETY: `level()` is never above `supported()`, which checked the CPU for every
        // feature the function enables.
        Level::Avx512 => unsafe { avx512(f) },
        // SAFETY: as above, for AVX2 and FMA.
        Level::Avx2 => unsafe { avx2(f) },
        Level::Baseline => f(),
    }
    #[cfg(not(target_arch = "x86_64"))]
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

/// For tests: runs `f` at each level this CPU supports (baseline first) and returns the
/// results, holding a lock so that no other such test changes the level meanwhile; the level
/// is restored afterwards.
#[doc(hidden)]
pub fn at_each_level<R>(mut f: impl FnMut() -> R) -> Vec<(Level, R)> {
    /// Puts the level back when dropped, also when `f` panics.
    struct Restore(Level);
    impl Drop for Restore {
        fn drop(&mut self) {
            set_level(self.0);
        }
    }
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _restore = Restore(level());
    let mut out = Vec::new();
    for want in [Level::Baseline, Level::Avx2, Level::Avx512] {
        if want <= supported() {
            set_level(want);
            out.push((want, f()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_levels_never_exceed_the_cpu() {
        for l in [Level::Baseline, Level::Avx2, Level::Avx512] {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::parse("AVX512"), Some(Level::Avx512));
        assert_eq!(Level::parse("sse9"), None);
        let seen = at_each_level(|| (level(), dispatch(|| 2 + 2)));
        assert_eq!(seen[0].0, Level::Baseline);
        for (want, (got, four)) in seen {
            assert_eq!(want, got);
            assert!(got <= supported());
            assert_eq!(four, 4);
        }
    }

    #[test]
    fn a_vectorised_loop_gives_the_baseline_bits() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let runs = at_each_level(|| {
            dispatch(
                #[inline(always)]
                || {
                    x.iter()
                        .map(|&v| v / (v.abs().sqrt() + 1e-3) * 0.5 + v * v)
                        .collect::<Vec<f32>>()
                },
            )
        });
        for (l, y) in &runs[1..] {
            let same = y
                .iter()
                .zip(&runs[0].1)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{l:?} differs from the baseline");
        }
    }
}
