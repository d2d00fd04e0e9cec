//! The multiply-add rate one core of this CPU reaches at best: a loop of independent AVX-512
//! FMAs (f32), bf16 dot products, or AMX tile products, timed. Kernel speeds mean little across the CPUs a
//! benchmark may land on; as a share of this figure, measured in the same run, they say how
//! much the hardware leaves (`op-bench --peak`).

use std::time::Instant;

/// Multiply-adds per second of one core, each with its instruction.
#[derive(Debug, Clone, Copy)]
pub struct PeakRates {
    /// f32 FMAs (`vfmadd231ps` zmm, 16 per instruction).
    pub f32_fma: f64,
    /// bf16 dot products (`vdpbf16ps` zmm, 32 per instruction); `None` without AVX-512 BF16.
    pub bf16_dot: Option<f64>,
    /// bf16 tile products (`tdpbf16ps`, 16·16·32 per instruction); `None` without AMX (or with
    /// `TRESNET_AMX=0`).
    pub amx_tile: Option<f64>,
}

/// Times both loops on the calling thread (about 0.2 s each); `None` without AVX-512 F.
pub fn peak_rates() -> Option<PeakRates> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        let steps = 20_000_000u64;
        let start = Instant::now();
        #[allow(unsafe_code)]
        // SAFETY: AVX-512 F is present (checked above).
        let sum = unsafe { avx512::fma_loop(std::hint::black_box(steps)) };
        let f32_fma = (steps * 16 * 16) as f64 / start.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        let bf16_dot = super::native_bf16().then(|| {
            let start = Instant::now();
            #[allow(unsafe_code)]
            // SAFETY: AVX-512 F and BF16 are present (`native_bf16`).
            let sum = unsafe { avx512::dot_loop(std::hint::black_box(steps)) };
            let rate = (steps * 16 * 32) as f64 / start.elapsed().as_secs_f64();
            std::hint::black_box(sum);
            rate
        });
        let amx_tile = super::amx_available().then(|| {
            let steps = steps / 16;
            let start = Instant::now();
            #[allow(unsafe_code)]
            // SAFETY: AMX is usable (`amx_available`).
            unsafe {
                super::amx::kernels::tile_loop(std::hint::black_box(steps))
            };
            (steps * 4 * 16 * 16 * 32) as f64 / start.elapsed().as_secs_f64()
        });
        return Some(PeakRates {
            f32_fma,
            bf16_dot,
            amx_tile,
        });
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Sixteen independent accumulators (more than the FMA's latency times its issue rate), each
    /// starting from its own value so that no two chains are the same computation.
    macro_rules! accumulators {
        () => {
            std::array::from_fn::<__m512, 16, _>(|i| _mm512_set1_ps(i as f32))
        };
    }

    /// `steps` rounds of sixteen FMAs; returns a sum of the results (kept alive by the caller).
    ///
    /// # Safety
    /// AVX-512 F present.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma_loop(steps: u64) -> f32 {
        let mut acc: [__m512; 16] = accumulators!();
        let a = _mm512_set1_ps(std::hint::black_box(1e-9));
        for _ in 0..steps {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(a, a, *v);
            }
        }
        acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }

    /// `steps` rounds of sixteen bf16 dot products.
    ///
    /// # Safety
    /// AVX-512 F and BF16 present.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn dot_loop(steps: u64) -> f32 {
        let mut acc: [__m512; 16] = accumulators!();
        // A pair of small bf16 values (about 2⁻³¹) in every word.
        let word = std::hint::black_box(0x3000_3000u32) as i32;
        // SAFETY: a bit-for-bit reinterpretation of sixteen words.
        let a: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(word)) };
        for _ in 0..steps {
            for v in acc.iter_mut() {
                *v = _mm512_dpbf16_ps(*v, a, a);
            }
        }
        acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }
}
