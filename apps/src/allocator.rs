//! Allocator tuning for tensor-heavy processes.
//!
//! Every candle operation allocates its output, and a training step frees gigabytes of
//! activations at its end. glibc and mimalloc's defaults hand freed blocks back to the kernel,
//! which must then zero fresh (often huge) pages for the next step: measured here at about a third
//! of a TResNet-M training step on the CPU. Keeping freed memory in the process removes that cost;
//! the price is that the peak footprint stays resident until the process ends.

use std::os::raw::c_int;

/// Makes mimalloc the binary's allocator; each binary states it (`tresnet_apps::use_mimalloc!();`
/// at its top level), so libraries linking the apps crate keep theirs.
#[macro_export]
macro_rules! use_mimalloc {
    () => {
        /// mimalloc reuses freed tensor buffers (see `tresnet_apps::allocator`).
        #[global_allocator]
        static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
    };
}

/// `mi_option_purge_delay` in the pinned libmimalloc-sys 0.1.49 (mimalloc v3's option enum).
const MI_OPTION_PURGE_DELAY: c_int = 15;

/// Tells mimalloc never to return freed memory to the operating system. Call once, early.
pub fn keep_freed_memory() {
    // SAFETY: mimalloc's option setter only stores a value; the index names the purge delay in the
    // pinned version (checked by a test below).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_index_names_the_purge_delay() {
        // mimalloc v3's default purge delay is 1000 ms (options.c); no neighbouring option
        // defaults to 1000.
        #[allow(unsafe_code)]
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert!(
            before == 1000 || before == -1,
            "option {MI_OPTION_PURGE_DELAY} is {before}"
        );
        keep_freed_memory();
        #[allow(unsafe_code)]
        let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(after, -1);
    }
}
