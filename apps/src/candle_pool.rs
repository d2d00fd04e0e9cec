//! candle's own worker pool for element-wise CPU operations.
//!
//! Besides the rayon pool our kernels run on, candle starts a pool of its own for element-wise
//! CPU operations (one worker per core but one, sized from the environment, not from `-j`),
//! whose workers spin for a while after each operation before they sleep. In a training step
//! autograd adds every gradient contribution through that pool, so its spinning worker takes a
//! core from the rayon workers multiplying the next convolution: with it, `bench --train -b 8
//! -j 2` took 1234-1413 ms on a 2-core machine; without it, 1192 ms in all three rounds.

/// Runs candle's element-wise CPU operations on the calling thread (`CANDLE_NUM_THREADS=1`)
/// unless the user set `CANDLE_NUM_THREADS`. Call first thing in `main`, before any thread
/// starts.
pub fn run_candle_elementwise_on_the_caller() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        #[allow(unsafe_code)]
        // SAFETY: called at the top of `main`, before this process starts any other thread, so
        // nothing reads the environment concurrently.
        unsafe {
            std::env::set_var("CANDLE_NUM_THREADS", "1")
        };
    }
}
