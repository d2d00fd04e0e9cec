//! Running a whole pass on the CPU worker pool instead of feeding it one layer at a time.
//!
//! Every convolution (and most element-wise kernels) splits its work over rayon's pool. Called
//! from a thread outside the pool, each of them hands the work over and puts the caller to sleep
//! until the pool is done: two thread wake-ups per layer, which in a virtual machine cost tens of
//! microseconds each, while the serial work between layers (candle's element-wise operations)
//! runs on the caller with the pool's workers going back to sleep. Run on one of the pool's own
//! workers instead, a pass keeps that worker busy from start to end and each layer only has to
//! wake the others. Measured on a 2-core VM (`bench -b 1`, TResNet-M @224, interleaved medians):
//! bf16 23.4 → 27.1 img/s, f32 15.7 → 16.8; batch 8 unchanged within noise
//! (`benchmarks/cpu-2026-12-04.md`).

use candle_core::Device;

/// Runs `pass` on one of rayon's worker threads when `device` is the CPU and the caller is not
/// already one (nested calls run inline); on other devices (whose contexts belong to the calling
/// thread) it runs on the caller. Blocks until `pass` returns and returns its result.
pub fn on_cpu_workers<R: Send>(device: &Device, pass: impl FnOnce() -> R + Send) -> R {
    if device.is_cpu() && rayon::current_thread_index().is_none() {
        rayon::scope(|_| pass())
    } else {
        pass()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_passes_run_on_a_pool_worker_and_nested_ones_inline() {
        assert!(rayon::current_thread_index().is_none());
        let (outer, inner) = on_cpu_workers(&Device::Cpu, || {
            let outer = rayon::current_thread_index();
            let inner = on_cpu_workers(&Device::Cpu, rayon::current_thread_index);
            (outer, inner)
        });
        assert!(outer.is_some());
        assert_eq!(inner, outer);
    }

    #[test]
    fn results_and_errors_come_back() {
        let ok: Result<u32, String> = on_cpu_workers(&Device::Cpu, || Ok(7));
        assert_eq!(ok, Ok(7));
        let err: Result<u32, String> = on_cpu_workers(&Device::Cpu, || Err("bad".into()));
        assert_eq!(err, Err("bad".to_string()));
    }
}
