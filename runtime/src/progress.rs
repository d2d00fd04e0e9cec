//! Progress of a long pass on stderr: an `indicatif` bar (count, images per second, ETA) when
//! stderr is a terminal, a plain line every ten seconds when it is not (logs, Slurm output files).
#![allow(clippy::print_stderr)]

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Progress of one phase (an epoch of training, a pass of evaluation or tagging), counted in
/// steps (batches) of images.
pub struct Progress {
    label: String,
    total: usize,
    done: usize,
    images: usize,
    started: Instant,
    last_print: Instant,
    /// The terminal bar; `None` when quiet or when stderr is not a terminal.
    bar: Option<ProgressBar>,
    quiet: bool,
}

/// Plain lines are at most this often.
const LINE_INTERVAL: Duration = Duration::from_secs(10);

impl Progress {
    /// Starts a phase of `total` steps; `quiet` shows nothing.
    pub fn new(label: impl Into<String>, total: usize, quiet: bool) -> Self {
        let label = label.into();
        let now = Instant::now();
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total as u64);
            // The template is a constant: it parses, and a failure would only lose the styling.
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} ETA {eta}",
            ) {
                bar.set_style(style);
            }
            bar.set_prefix(label.clone());
            bar
        });
        Self {
            label,
            total,
            done: 0,
            images: 0,
            started: now,
            last_print: now,
            bar,
            quiet,
        }
    }

    /// Images per second so far.
    pub fn rate(&self) -> f64 {
        self.images as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Records a finished step of `images` images, with extra text (loss, lr).
    pub fn step(&mut self, images: usize, extra: &str) {
        self.done += 1;
        self.images += images;
        if self.quiet {
            return;
        }
        let rate = if extra.is_empty() {
            format!("{:.1} img/s", self.rate())
        } else {
            format!("{extra} {:.1} img/s", self.rate())
        };
        if let Some(bar) = &self.bar {
            bar.set_message(rate.clone());
            bar.inc(1);
            if self.done >= self.total {
                // The bar stays as it ended; what the app prints next starts on a new line.
                bar.finish();
                eprintln!();
            }
            return;
        }
        if self.last_print.elapsed() >= LINE_INTERVAL || self.done == self.total {
            self.last_print = Instant::now();
            let elapsed = self.started.elapsed().as_secs_f64();
            let remaining = self.total.saturating_sub(self.done);
            let eta = elapsed / self.done as f64 * remaining as f64;
            eprintln!(
                "{} {}/{} {rate} ETA {}",
                self.label,
                self.done,
                self.total,
                format_duration(eta)
            );
        }
    }
}

impl Drop for Progress {
    /// A pass that stops early (an error, a stop request) leaves its bar where it got to.
    fn drop(&mut self) {
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.abandon();
        }
    }
}

/// `1h02m`, `3m05s`, `12s`.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}
