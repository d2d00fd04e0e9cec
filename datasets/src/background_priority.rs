//! Background scheduling for loader threads: decoding only feeds the model, so when both want the
//! cores the model's threads should win.
//!
//! Why it matters: the model runs each layer as a fork-join over all cores, and a layer ends when
//! its slowest thread does. A decoding thread that the kernel schedules in the middle of a layer
//! stalls one of the model's threads and with it the whole layer, while the other cores wait.
//! With the loader threads at a lower priority the model's threads run undisturbed whenever they
//! have work, and decoding takes every core the model leaves idle (between batches, and while it
//! waits for the next one), so neither the model nor the decoder waits for the other's time slices.

/// How many nice levels loader threads sit below the thread that starts them: enough that the
/// model's threads are hardly ever preempted by them (the kernel's weight for ten levels down is
/// about a tenth), not so many that another busy process on the machine starves decoding entirely
/// (as nice 19 or `SCHED_IDLE` could).
pub const LOADER_NICENESS_STEP: i32 = 10;

/// The highest nice value (lowest priority) Linux has.
const LOWEST_PRIORITY: i32 = 19;

/// Lowers the calling thread's scheduling priority by [`LOADER_NICENESS_STEP`] nice levels
/// (Linux, where the nice value belongs to each thread; a thread spawned by another starts at its
/// nice value, so the loader ends up below the model's threads even when the whole process was
/// started with `nice`). Best effort: an environment that refuses it (or another operating
/// system) keeps the normal priority, which is only slower, never wrong.
pub fn run_in_background() {
    #[cfg(target_os = "linux")]
    {
        #[allow(unsafe_code)]
        // SAFETY: gettid, getpriority and setpriority take plain integers and touch no memory of
        // ours.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            let current = libc::getpriority(libc::PRIO_PROCESS, tid);
            let lower = current
                .saturating_add(LOADER_NICENESS_STEP)
                .min(LOWEST_PRIORITY);
            // A failure leaves the priority as it was; nothing to recover.
            let _ = libc::setpriority(libc::PRIO_PROCESS, tid, lower);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::sync::Arc;

    use rand::rngs::StdRng;

    use super::{LOADER_NICENESS_STEP, LOWEST_PRIORITY};
    use crate::{Dataset, Loader, LoaderOptions, Result};

    /// The nice value of the calling thread.
    fn own_niceness() -> i32 {
        #[allow(unsafe_code)]
        // SAFETY: plain integer arguments; no memory is shared.
        unsafe {
            libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
        }
    }

    /// Each sample is the nice value of the thread that loaded it.
    struct LoaderThreadNiceness(usize);

    impl Dataset for LoaderThreadNiceness {
        type Item = i32;
        fn len(&self) -> usize {
            self.0
        }
        fn get(&self, _index: usize, _rng: &mut StdRng) -> Result<i32> {
            Ok(own_niceness())
        }
    }

    #[test]
    fn loader_threads_decode_in_the_background_and_the_caller_keeps_its_priority() {
        let before = own_niceness();
        let options = LoaderOptions {
            batch_size: 3,
            workers: 2,
            ..LoaderOptions::default()
        };
        let seen: Vec<i32> = Loader::new(Arc::new(LoaderThreadNiceness(12)), &options)
            .unwrap()
            .flat_map(|b| b.unwrap().items.into_iter().map(|(_, nice)| nice))
            .collect();
        assert_eq!(seen.len(), 12);
        let expected = (before + LOADER_NICENESS_STEP).min(LOWEST_PRIORITY);
        assert!(seen.iter().all(|&n| n == expected), "{seen:?}");
        assert_eq!(own_niceness(), before);
    }
}
