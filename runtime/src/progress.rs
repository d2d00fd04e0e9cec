//! A progress line on stderr: step, loss, learning rate, images per second and ETA.
#![allow(clippy::print_stderr)]

use std::io::IsTerminal;
use std::time::Instant;

/// Progress of one phase (an epoch of training, a pass of evaluation).
pub struct Progress {
    label: String,
    total: usize,
    done: usize,
    images: usize,
    started: Instant,
    last_print: Instant,
    terminal: bool,
    quiet: bool,
}

impl Progress {
    /// Starts a phase of `total` steps.
    pub fn new(label: impl Into<String>, total: usize, quiet: bool) -> Self {
        let now = Instant::now();
        Self {
            label: label.into(),
            total,
            done: 0,
            images: 0,
            started: now,
            last_print: now,
            terminal: std::io::stderr().is_terminal(),
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
        let due = if self.terminal {
            self.last_print.elapsed().as_millis() >= 200
        } else {
            self.last_print.elapsed().as_secs() >= 10
        };
        if due || self.done == self.total {
            self.last_print = Instant::now();
            let elapsed = self.started.elapsed().as_secs_f64();
            let eta = elapsed / self.done as f64 * (self.total - self.done) as f64;
            let line = format!(
                "{} {}/{} {extra} {:.1} img/s ETA {}",
                self.label,
                self.done,
                self.total,
                self.rate(),
                format_duration(eta)
            );
            if self.terminal {
                eprint!("\r\x1b[2K{line}");
                if self.done == self.total {
                    eprintln!();
                }
            } else {
                eprintln!("{line}");
            }
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
