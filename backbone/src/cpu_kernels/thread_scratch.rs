//! Per-thread scratch buffers that stay sound when a thread re-enters a kernel.
//!
//! The kernels keep their packing and product buffers per thread, between calls. A rayon worker
//! that waits inside a kernel for its parallel loop steals other jobs meanwhile: another piece of
//! the same layer, or a whole pass that another thread handed to the pool
//! ([`crate::on_cpu_workers`]). Holding a `RefCell` borrow across that wait would turn the nested
//! use into an "already borrowed" panic; taking the buffer out of its slot for the call gives the
//! nested use an empty slot (and a buffer of its own) instead.

use std::cell::Cell;
use std::thread::LocalKey;

/// Runs `f` on this thread's buffer in `slot`, taken out of the slot for the call and put back
/// afterwards (a nested call in between starts from an empty buffer; what it leaves behind is
/// dropped when the outer buffer goes back).
pub(super) fn with_thread_scratch<T: Default, R>(
    slot: &'static LocalKey<Cell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut buffer = slot.take();
    let out = f(&mut buffer);
    slot.set(buffer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static SLOT: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    }

    #[test]
    fn a_nested_use_gets_its_own_buffer_and_the_outer_one_is_kept() {
        with_thread_scratch(&SLOT, |outer| {
            outer.extend([1, 2, 3]);
            with_thread_scratch(&SLOT, |inner| {
                assert!(inner.is_empty());
                inner.push(9);
            });
            assert_eq!(outer, &[1, 2, 3]);
        });
        with_thread_scratch(&SLOT, |again| assert_eq!(again, &[1, 2, 3]));
    }
}
