//! The batch loader: a pool of worker threads that decode and transform samples ahead of the
//! model, delivering batches in a deterministic order. Each batch is split into one piece per
//! worker, so that all workers decode the batch the model needs next (the first batch arrives
//! sooner and the last one is not left to a single thread).

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::error::{DataError, Result};

/// Samples the loader can fetch from many threads.
pub trait Dataset: Send + Sync + 'static {
    /// What one sample is (e.g. CHW floats and a target).
    type Item: Send + 'static;

    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads sample `index`. `rng` is seeded from the loader's seed, the epoch and `index`, so a
    /// sample's random augmentation does not depend on which thread loads it.
    fn get(&self, index: usize, rng: &mut StdRng) -> Result<Self::Item>;
}

/// What to do with a sample that cannot be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadItemPolicy {
    /// Leave it out of its batch and report it in [`Batch::skipped`] (evaluation, tagging).
    #[default]
    SkipAndReport,
    /// Stop: the iterator yields the error (training on a curated set).
    Fail,
}

/// Loader settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderOptions {
    /// Samples per batch.
    pub batch_size: usize,
    /// Worker threads (0 loads on the calling thread). They run ten nice levels below the thread
    /// that creates the loader, so the consumer (the model) is not preempted by decoding.
    pub workers: usize,
    /// Batches loaded ahead of the one being consumed.
    pub prefetch_batches: usize,
    /// Shuffle the order with this seed (training); `None` keeps dataset order.
    pub shuffle_seed: Option<u64>,
    /// Seed of the per-sample random streams (augmentations).
    pub seed: u64,
    /// Epoch number, mixed into the shuffle and the per-sample streams.
    pub epoch: u64,
    /// Drop a last, incomplete batch.
    pub drop_last: bool,
    /// Policy for samples that fail to load.
    pub bad_items: BadItemPolicy,
    /// Skip this many batches at the start of the epoch (resuming a run mid-epoch; the batches
    /// after them are exactly those an uninterrupted epoch would give).
    pub start_batch: usize,
    /// Weighted sampling (class-balanced training): the epoch draws as many samples as the
    /// dataset holds, with replacement, sample `i` with probability `weights[i] / Σ weights`
    /// (seeded by `shuffle_seed` or `seed`, and the epoch). `None`: every sample once.
    pub sample_weights: Option<Arc<[f64]>>,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            prefetch_batches: 4,
            shuffle_seed: None,
            seed: 0,
            epoch: 0,
            drop_last: false,
            bad_items: BadItemPolicy::SkipAndReport,
            start_batch: 0,
            sample_weights: None,
        }
    }
}

/// One batch: the loaded samples with their dataset indices, and the ones that failed.
#[derive(Debug)]
pub struct Batch<T> {
    /// Position of this batch among those this loader yields (0, 1, 2, …; after `start_batch`).
    pub number: usize,
    /// `(dataset index, sample)` in batch order.
    pub items: Vec<(usize, T)>,
    /// `(dataset index, error)` for samples left out.
    pub skipped: Vec<(usize, DataError)>,
}

/// A piece of a batch to load: the batch's number, the piece's place among the batch's
/// `pieces`, and per sample `(dataset index, augmentation key)` (the key is the index, plus a
/// multiple of the dataset's length for a repeated draw of the same sample, so that each draw is
/// augmented on its own).
struct Job {
    number: usize,
    piece: usize,
    pieces: usize,
    samples: Vec<(usize, usize)>,
}

/// A loaded piece of a batch (its items and skipped samples in batch order).
struct Piece<T> {
    piece: usize,
    pieces: usize,
    batch: Batch<T>,
}

/// An iterator over the batches of one epoch; dropping it stops the workers.
pub struct Loader<T: Send + 'static> {
    batches: Vec<Vec<(usize, usize)>>,
    next_to_yield: usize,
    next_to_send: usize,
    prefetch: usize,
    jobs: Option<Sender<Job>>,
    results: Receiver<Piece<T>>,
    /// Whole batches, and the pieces of batches still being loaded, by batch number.
    ready: BTreeMap<usize, Batch<T>>,
    partial: BTreeMap<usize, Vec<Option<Batch<T>>>>,
    /// Pieces per batch (the worker count, at most the batch's size).
    split: usize,
    workers: Vec<JoinHandle<()>>,
    policy: BadItemPolicy,
    failed: bool,
    inline: Option<Box<dyn FnMut(Job) -> Piece<T> + Send>>,
}

/// Per-sample random stream: a 64-bit mix of seed, epoch and index (SplitMix64 finaliser).
fn sample_seed(seed: u64, epoch: u64, index: usize) -> u64 {
    let mut z = seed
        ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (index as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn load_job<D: Dataset>(dataset: &D, job: Job, seed: u64, epoch: u64) -> Piece<D::Item> {
    let mut batch = Batch {
        number: job.number,
        items: Vec::with_capacity(job.samples.len()),
        skipped: Vec::new(),
    };
    for (index, key) in job.samples {
        let mut rng = StdRng::seed_from_u64(sample_seed(seed, epoch, key));
        // A panic inside a decoder (a bug in it, set off by a hostile file) becomes this item's
        // error: the worker lives on and the batch still arrives.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dataset.get(index, &mut rng)
        }))
        .unwrap_or_else(|panic| {
            Err(DataError::Config(format!(
                "sample {index}: loading it panicked ({})",
                panic_message(&*panic)
            )))
        });
        match loaded {
            Ok(item) => batch.items.push((index, item)),
            Err(err) => batch.skipped.push((index, err)),
        }
    }
    Piece {
        piece: job.piece,
        pieces: job.pieces,
        batch,
    }
}

/// `len` draws with replacement, index `i` with probability `weights[i] / Σ weights`.
fn weighted_draws(weights: &[f64], len: usize, options: &LoaderOptions) -> Result<Vec<usize>> {
    if weights.len() != len {
        return Err(DataError::Config(format!(
            "{} sample weights for {len} samples",
            weights.len()
        )));
    }
    let mut cumulative = Vec::with_capacity(len);
    let mut total = 0.0;
    for (i, &w) in weights.iter().enumerate() {
        if !(w.is_finite() && w >= 0.0) {
            return Err(DataError::Config(format!(
                "sample weight {i} is {w}: weights must be finite and ≥ 0"
            )));
        }
        total += w;
        cumulative.push(total);
    }
    if len > 0 && !(total > 0.0 && total.is_finite()) {
        return Err(DataError::Config(
            "sample weights sum to zero (or overflow): nothing to draw".into(),
        ));
    }
    let seed = options.shuffle_seed.unwrap_or(options.seed);
    let mut rng = StdRng::seed_from_u64(sample_seed(seed, options.epoch, usize::MAX - 1));
    Ok((0..len)
        .map(|_| {
            let target = rng.random::<f64>() * total;
            // The first index whose running total passes the target (zero weights never do).
            cumulative.partition_point(|&c| c <= target).min(len - 1)
        })
        .collect())
}

/// The text of a panic payload (`panic!` with a string or a format), else a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

impl<T: Send + 'static> Loader<T> {
    /// Starts loading one epoch of `dataset`.
    pub fn new<D: Dataset<Item = T>>(dataset: Arc<D>, options: &LoaderOptions) -> Result<Self> {
        if options.batch_size == 0 {
            return Err(DataError::Config("batch size must be at least 1".into()));
        }
        let order = match &options.sample_weights {
            Some(weights) => weighted_draws(weights, dataset.len(), options)?,
            None => {
                let mut order: Vec<usize> = (0..dataset.len()).collect();
                if let Some(seed) = options.shuffle_seed {
                    order.shuffle(&mut StdRng::seed_from_u64(sample_seed(
                        seed,
                        options.epoch,
                        usize::MAX,
                    )));
                }
                order
            }
        };
        // Augmentation keys: a sample's k-th draw in the epoch gets index + k·len.
        let mut draws = vec![0usize; dataset.len()];
        let keyed: Vec<(usize, usize)> = order
            .into_iter()
            .map(|index| {
                let k = draws[index];
                draws[index] += 1;
                (index, index.saturating_add(k.saturating_mul(dataset.len())))
            })
            .collect();
        let mut batches: Vec<Vec<(usize, usize)>> = keyed
            .chunks(options.batch_size)
            .map(<[(usize, usize)]>::to_vec)
            .collect();
        if options.drop_last && batches.last().is_some_and(|b| b.len() < options.batch_size) {
            batches.pop();
        }
        batches.drain(..options.start_batch.min(batches.len()));
        let (seed, epoch) = (options.seed, options.epoch);
        let (result_tx, results) = channel::<Piece<T>>();
        let mut loader = Self {
            batches,
            next_to_yield: 0,
            next_to_send: 0,
            prefetch: options.prefetch_batches.max(1),
            jobs: None,
            results,
            ready: BTreeMap::new(),
            partial: BTreeMap::new(),
            split: options.workers.max(1),
            workers: Vec::new(),
            policy: options.bad_items,
            failed: false,
            inline: None,
        };
        if options.workers == 0 {
            let dataset = Arc::clone(&dataset);
            loader.inline = Some(Box::new(move |job| load_job(&*dataset, job, seed, epoch)));
            return Ok(loader);
        }
        let (job_tx, job_rx) = channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for w in 0..options.workers {
            let (dataset, job_rx, result_tx) =
                (Arc::clone(&dataset), Arc::clone(&job_rx), result_tx.clone());
            let handle = std::thread::Builder::new()
                .name(format!("loader-{w}"))
                .spawn(move || {
                    crate::background_priority::run_in_background();
                    loop {
                        let job = match job_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        if result_tx
                            .send(load_job(&*dataset, job, seed, epoch))
                            .is_err()
                        {
                            return;
                        }
                    }
                })
                .map_err(|e| DataError::Config(format!("cannot start a loader thread: {e}")))?;
            loader.workers.push(handle);
        }
        loader.jobs = Some(job_tx);
        Ok(loader)
    }

    /// Number of batches in this epoch.
    pub fn num_batches(&self) -> usize {
        self.batches.len()
    }

    fn dispatch(&mut self) {
        let limit = (self.next_to_yield + self.prefetch).min(self.batches.len());
        while self.next_to_send < limit {
            let number = self.next_to_send;
            let samples = std::mem::take(&mut self.batches[number]);
            if let Some(jobs) = &self.jobs {
                let per_piece = samples.len().div_ceil(self.split).max(1);
                let pieces = samples.len().div_ceil(per_piece).max(1);
                let mut samples = samples.into_iter();
                for piece in 0..pieces {
                    let samples = samples.by_ref().take(per_piece).collect();
                    let _ = jobs.send(Job {
                        number,
                        piece,
                        pieces,
                        samples,
                    });
                }
            } else if let Some(load) = self.inline.as_mut() {
                let piece = load(Job {
                    number,
                    piece: 0,
                    pieces: 1,
                    samples,
                });
                self.receive(piece);
            }
            self.next_to_send += 1;
        }
    }

    /// Files a loaded piece; a batch whose pieces are all in moves to `ready`, whole.
    fn receive(&mut self, piece: Piece<T>) {
        let number = piece.batch.number;
        let slots = self
            .partial
            .entry(number)
            .or_insert_with(|| (0..piece.pieces).map(|_| None).collect());
        if let Some(slot) = slots.get_mut(piece.piece) {
            *slot = Some(piece.batch);
        }
        if slots.iter().all(Option::is_some) {
            let mut whole = Batch {
                number,
                items: Vec::new(),
                skipped: Vec::new(),
            };
            for part in self.partial.remove(&number).into_iter().flatten().flatten() {
                whole.items.extend(part.items);
                whole.skipped.extend(part.skipped);
            }
            self.ready.insert(number, whole);
        }
    }
}

impl<T: Send + 'static> Iterator for Loader<T> {
    type Item = Result<Batch<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next_to_yield >= self.batches.len() {
            return None;
        }
        self.dispatch();
        let batch = loop {
            if let Some(batch) = self.ready.remove(&self.next_to_yield) {
                break batch;
            }
            match self.results.recv() {
                Ok(piece) => self.receive(piece),
                Err(_) => {
                    self.failed = true;
                    return Some(Err(DataError::Config(
                        "a loader thread stopped unexpectedly".into(),
                    )));
                }
            }
        };
        self.next_to_yield += 1;
        if self.policy == BadItemPolicy::Fail && !batch.skipped.is_empty() {
            self.failed = true;
            let (_, err) = batch.skipped.into_iter().next().expect("not empty");
            return Some(Err(err));
        }
        Some(Ok(batch))
    }
}

impl<T: Send + 'static> Drop for Loader<T> {
    fn drop(&mut self) {
        self.jobs = None; // closes the job queue: idle workers return
        // Drain so no worker stays blocked on a send.
        while self.results.try_recv().is_ok() {}
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Sample i is (i, a random number from its stream); multiples of 7 fail; loading takes a
    /// varying time so threads finish out of order.
    struct Numbers(usize);

    impl Dataset for Numbers {
        type Item = (usize, u32);
        fn len(&self) -> usize {
            self.0
        }
        fn get(&self, index: usize, rng: &mut StdRng) -> Result<(usize, u32)> {
            std::thread::sleep(std::time::Duration::from_micros(
                ((index * 37) % 11) as u64 * 100,
            ));
            if index % 7 == 6 {
                return Err(DataError::Config(format!("sample {index} is broken")));
            }
            Ok((index, rng.random()))
        }
    }

    /// (batch number, loaded items, skipped indices) of each batch.
    type Epoch = Vec<(usize, Vec<(usize, u32)>, Vec<usize>)>;

    fn run(options: &LoaderOptions) -> Epoch {
        Loader::new(Arc::new(Numbers(30)), options)
            .unwrap()
            .map(|b| {
                let b = b.unwrap();
                let items = b.items.into_iter().map(|(_, item)| item).collect();
                (
                    b.number,
                    items,
                    b.skipped.into_iter().map(|s| s.0).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn order_and_augmentation_streams_do_not_depend_on_threads() {
        let base = LoaderOptions {
            batch_size: 4,
            workers: 0,
            shuffle_seed: Some(3),
            seed: 9,
            ..LoaderOptions::default()
        };
        let inline = run(&base);
        let threaded = run(&LoaderOptions {
            workers: 3,
            prefetch_batches: 2,
            ..base.clone()
        });
        assert_eq!(inline, threaded);
        // Batches split into pieces of unequal size (5 = 3 + 2, 2 + 2 + 1, one per sample),
        // with failing samples among them, come back whole and in order.
        let odd = LoaderOptions {
            batch_size: 5,
            ..base.clone()
        };
        let whole = run(&odd);
        for workers in [2, 3, 5, 8] {
            let pieces = run(&LoaderOptions {
                workers,
                prefetch_batches: 1,
                ..odd.clone()
            });
            assert_eq!(whole, pieces, "{workers} workers");
        }
        assert_eq!(inline.len(), 8);
        let seen: usize = inline.iter().map(|b| b.1.len() + b.2.len()).sum();
        assert_eq!(seen, 30);
        let skipped: Vec<usize> = inline.iter().flat_map(|b| b.2.clone()).collect();
        assert_eq!(skipped.len(), 4, "6, 13, 20, 27 fail: {skipped:?}");
        // Another epoch reshuffles; no shuffle keeps dataset order.
        let next_epoch = run(&LoaderOptions {
            epoch: 1,
            ..base.clone()
        });
        assert_ne!(inline[0].1, next_epoch[0].1);
        let ordered = run(&LoaderOptions {
            shuffle_seed: None,
            ..base.clone()
        });
        assert_eq!(
            ordered[0].1.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn weighted_epochs_draw_by_weight_with_their_own_augmentation_per_draw() {
        // Samples 0..30 (every 7th broken); weight 0 on the even ones, 3 on 9, 1 elsewhere.
        let weights: Vec<f64> = (0..30)
            .map(|i| match i {
                9 => 3.0,
                i if i % 2 == 0 => 0.0,
                _ => 1.0,
            })
            .collect();
        let options = LoaderOptions {
            batch_size: 5,
            workers: 2,
            shuffle_seed: Some(4),
            sample_weights: Some(Arc::from(weights)),
            ..LoaderOptions::default()
        };
        let mut counts = [0usize; 30];
        let mut repeats_differ = false;
        for epoch in 0..40 {
            let epoch_options = LoaderOptions {
                epoch,
                ..options.clone()
            };
            let batches = run(&epoch_options);
            assert_eq!(batches, run(&epoch_options), "epoch {epoch} repeats");
            let drawn: Vec<usize> = batches
                .iter()
                .flat_map(|b| b.1.iter().map(|x| x.0).chain(b.2.iter().copied()))
                .collect();
            assert_eq!(drawn.len(), 30, "as many draws as samples");
            for &i in &drawn {
                counts[i] += 1;
            }
            // Two draws of one sample in an epoch get their own augmentation streams.
            let values: Vec<(usize, u32)> = batches.iter().flat_map(|b| b.1.clone()).collect();
            repeats_differ |= values
                .iter()
                .any(|a| values.iter().any(|b| a.0 == b.0 && a.1 != b.1));
        }
        assert!(repeats_differ);
        assert!((0..30).step_by(2).all(|i| counts[i] == 0), "{counts:?}");
        // 1200 draws over a total weight of 17: sample 9 expects 212, the others 71 each.
        assert!((150..280).contains(&counts[9]), "{counts:?}");
        assert!(
            (1..30)
                .step_by(2)
                .filter(|&i| i != 9)
                .all(|i| (35..110).contains(&counts[i]))
        );
        // Weights that cannot be drawn from are refused.
        for bad in [
            vec![1.0; 29],
            vec![0.0; 30],
            {
                let mut w = vec![1.0; 30];
                w[3] = f64::NAN;
                w
            },
            {
                let mut w = vec![1.0; 30];
                w[3] = -1.0;
                w
            },
        ] {
            let options = LoaderOptions {
                sample_weights: Some(Arc::from(bad)),
                ..options.clone()
            };
            assert!(Loader::new(Arc::new(Numbers(30)), &options).is_err());
        }
    }

    #[test]
    fn fail_policy_stops_at_the_first_bad_sample_and_drop_last_trims() {
        let options = LoaderOptions {
            batch_size: 4,
            workers: 2,
            bad_items: BadItemPolicy::Fail,
            ..LoaderOptions::default()
        };
        let results: Vec<_> = Loader::new(Arc::new(Numbers(30)), &options)
            .unwrap()
            .collect();
        assert_eq!(results.len(), 2, "batch 0 ok, batch 1 holds sample 6");
        assert!(
            results[1]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("sample 6")
        );
        let trimmed = LoaderOptions {
            batch_size: 4,
            workers: 2,
            drop_last: true,
            ..LoaderOptions::default()
        };
        assert_eq!(
            Loader::new(Arc::new(Numbers(30)), &trimmed)
                .unwrap()
                .num_batches(),
            7
        );
        // Dropping a loader early stops its threads.
        let mut early = Loader::new(Arc::new(Numbers(30)), &trimmed).unwrap();
        assert!(early.next().is_some());
        drop(early);
    }

    struct Panicky;

    impl Dataset for Panicky {
        type Item = usize;
        fn len(&self) -> usize {
            12
        }
        fn get(&self, index: usize, _rng: &mut StdRng) -> Result<usize> {
            if index == 5 {
                panic!("decoder bug on sample {index}");
            }
            Ok(index)
        }
    }

    #[test]
    fn a_panicking_sample_becomes_its_error_and_the_epoch_completes() {
        for workers in [0, 2] {
            let options = LoaderOptions {
                batch_size: 4,
                workers,
                ..LoaderOptions::default()
            };
            let batches: Vec<_> = Loader::new(Arc::new(Panicky), &options)
                .unwrap()
                .map(|b| b.unwrap())
                .collect();
            assert_eq!(batches.len(), 3);
            let skipped: Vec<_> = batches.iter().flat_map(|b| &b.skipped).collect();
            assert_eq!(skipped.len(), 1);
            assert_eq!(skipped[0].0, 5);
            assert!(skipped[0].1.to_string().contains("decoder bug on sample 5"));
            let loaded: usize = batches.iter().map(|b| b.items.len()).sum();
            assert_eq!(loaded, 11);
        }
    }
}
