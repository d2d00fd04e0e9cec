//! The largest batch size that fits in a device's memory: double until a step runs out of memory,
//! then bisect between the last size that fit and the first that did not (the paper's "max
//! train batch size" column).

use anyhow::Result;

/// What one trial step at a batch size did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trial {
    /// The step ran.
    Fits,
    /// The device could not allocate the step's memory.
    OutOfMemory,
}

/// Whether an error says the device ran out of memory (CUDA driver, runtime, cuBLAS or the
/// allocator), as opposed to any other failure, which a search must not swallow.
pub fn is_out_of_memory(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}").to_ascii_lowercase();
    [
        "out_of_memory",
        "out of memory",
        "alloc_failed",
        "cannot allocate",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// Runs one trial step and classifies the outcome: out-of-memory errors become
/// [`Trial::OutOfMemory`], other errors pass through.
pub fn trial(step: impl FnOnce() -> Result<()>) -> Result<Trial> {
    match step() {
        Ok(()) => Ok(Trial::Fits),
        Err(err) if is_out_of_memory(&err) => Ok(Trial::OutOfMemory),
        Err(err) => Err(err),
    }
}

/// The largest batch in `1..=limit` for which `try_batch` fits, assuming that a batch fits when
/// a larger one does. Tries `start`, doubles while it fits (capped at `limit`), then bisects.
/// `None` when not even batch 1 fits. Each size is tried at most once.
pub fn largest_batch(
    start: usize,
    limit: usize,
    mut try_batch: impl FnMut(usize) -> Result<Trial>,
) -> Result<Option<usize>> {
    let limit = limit.max(1);
    let mut fits = 0usize; // largest size known to fit (0: none yet)
    let mut next = start.clamp(1, limit);
    // Grow until a size fails (or the limit fits); that brackets the boundary.
    let mut fails = loop {
        match try_batch(next)? {
            Trial::Fits if next == limit => return Ok(Some(limit)),
            Trial::Fits => {
                fits = next;
                next = (next * 2).min(limit);
            }
            Trial::OutOfMemory => break next, // smallest size known not to fit
        }
    };
    while fails - fits > 1 {
        let mid = fits + (fails - fits) / 2;
        match try_batch(mid)? {
            Trial::Fits => fits = mid,
            Trial::OutOfMemory => fails = mid,
        }
    }
    Ok((fits > 0).then_some(fits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(start: usize, limit: usize, capacity: usize) -> (Option<usize>, Vec<usize>) {
        let mut tried = Vec::new();
        let found = largest_batch(start, limit, |b| {
            tried.push(b);
            Ok(if b <= capacity {
                Trial::Fits
            } else {
                Trial::OutOfMemory
            })
        })
        .unwrap();
        (found, tried)
    }

    #[test]
    fn finds_the_boundary_for_every_capacity() {
        for capacity in 0..=300 {
            for start in [1, 7, 64] {
                let (found, tried) = search(start, 256, capacity);
                let expected = match capacity {
                    0 => None,
                    c => Some(c.min(256)),
                };
                assert_eq!(found, expected, "capacity {capacity} start {start}");
                let mut unique = tried.clone();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique.len(), tried.len(), "a size tried twice: {tried:?}");
                assert!(tried.len() <= 20, "{} trials", tried.len());
            }
        }
    }

    #[test]
    fn other_errors_stop_the_search() {
        let err = largest_batch(4, 64, |b| {
            if b > 8 {
                anyhow::bail!("shape mismatch")
            }
            Ok(Trial::Fits)
        })
        .unwrap_err();
        assert!(err.to_string().contains("shape mismatch"));
    }

    #[test]
    fn out_of_memory_errors_are_recognised() {
        let oom = anyhow::anyhow!("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")");
        assert!(is_out_of_memory(&oom));
        let cublas = anyhow::anyhow!("cublas error: CUBLAS_STATUS_ALLOC_FAILED");
        assert!(is_out_of_memory(&cublas));
        assert!(!is_out_of_memory(&anyhow::anyhow!(
            "shape mismatch in conv2d"
        )));
        assert_eq!(
            trial(|| Err(oom)).unwrap(),
            Trial::OutOfMemory,
            "an OOM step is a trial outcome"
        );
        assert!(trial(|| anyhow::bail!("broken")).is_err());
    }
}
