//! Seeds of a batch's random draws (Mixup / CutMix, stochastic depth) as a function of where the
//! batch is in the run, so a resumed run draws exactly what an uninterrupted one does.

/// What a seed is drawn for: each stream its own sequence.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    /// Mixup / CutMix.
    Mixing,
    /// Stochastic depth.
    DropPath,
}

/// One seed per (run seed, stream, epoch, batch): SplitMix64 steps over the values.
pub(crate) fn batch_seed(seed: u64, stream: Stream, epoch: usize, batch: usize) -> u64 {
    let salt = match stream {
        Stream::Mixing => 0x6d69_7875_705f_6d69,   // "mixup_mi"
        Stream::DropPath => 0x6472_6f70_5f70_6174, // "drop_pat"
    };
    let mut state = seed ^ salt;
    for value in [epoch as u64, batch as u64] {
        state = state
            .wrapping_add(value)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        state = z ^ (z >> 31);
    }
    state
}
