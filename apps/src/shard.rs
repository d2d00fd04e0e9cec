//! Which part of a photo collection one `tag` process takes: `--shard i/n` given outright, or
//! `--shard auto` read from the scheduler running the process — a Slurm job array or a Kubernetes
//! Indexed Job.

use anyhow::{Context, Result, bail};

/// The environment variable a Kubernetes Indexed Job sets to the number of shards (the Job's
/// `spec.completions`): Kubernetes gives each pod its `JOB_COMPLETION_INDEX` but not the count.
pub const SHARD_COUNT_VAR: &str = "TAG_SHARD_COUNT";

/// Shard `index` of `count` (0-based): photo number `k` of the sorted list belongs to it when
/// `k % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process's part, `0 ≤ index < count`.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

impl Shard {
    /// Parses `--shard`: `i/n`, or `auto` to read the scheduler's variables through `env`.
    pub fn parse(spec: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        if spec == "auto" {
            return Self::from_scheduler(env);
        }
        let (i, n) = spec
            .split_once('/')
            .with_context(|| format!("--shard {spec}: expected i/n (0-based) or auto"))?;
        let number = |t: &str| {
            t.trim()
                .parse::<usize>()
                .with_context(|| format!("--shard {spec}: `{t}` is not a whole number"))
        };
        Self::new(number(i)?, number(n)?).with_context(|| format!("--shard {spec}"))
    }

    fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            bail!("shard {index} of {count}: need 0 <= index < count");
        }
        Ok(Self { index, count })
    }

    /// The shard a Slurm job array task (`SLURM_ARRAY_TASK_ID` within `SLURM_ARRAY_TASK_MIN`,
    /// `SLURM_ARRAY_TASK_STEP` and `SLURM_ARRAY_TASK_COUNT`, so `--array=1-8` and `--array=0-14:2`
    /// both work) or a Kubernetes Indexed Job pod (`JOB_COMPLETION_INDEX`, with the count in
    /// [`SHARD_COUNT_VAR`]) is.
    pub fn from_scheduler(env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let number = |name: &str| -> Result<Option<usize>> {
            env(name)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .with_context(|| format!("--shard auto: {name}={v} is not a whole number"))
                })
                .transpose()
        };
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            let min = number("SLURM_ARRAY_TASK_MIN")?.context(
                "--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_MIN is not",
            )?;
            let count = number("SLURM_ARRAY_TASK_COUNT")?.context(
                "--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not",
            )?;
            let step = number("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            let offset = id.checked_sub(min).with_context(|| {
                format!(
                    "--shard auto: SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}"
                )
            })?;
            if offset % step != 0 {
                bail!(
                    "--shard auto: SLURM_ARRAY_TASK_ID {id} is not on the array's step {step} from {min}"
                );
            }
            return Self::new(offset / step, count).context(
                "--shard auto: the Slurm array is not a plain range (use --shard i/n for a list)",
            );
        }
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let count = number(SHARD_COUNT_VAR)?.with_context(|| {
                format!(
                    "--shard auto: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but \
                     {SHARD_COUNT_VAR} is not; set it to the Job's completions"
                )
            })?;
            return Self::new(index, count).context("--shard auto: the Indexed Job");
        }
        bail!(
            "--shard auto: neither a Slurm job array (SLURM_ARRAY_TASK_ID) nor a Kubernetes \
             Indexed Job (JOB_COMPLETION_INDEX with {SHARD_COUNT_VAR}) is set; give --shard i/n"
        )
    }

    /// Whether photo number `position` of the sorted list belongs to this shard.
    pub fn takes(&self, position: usize) -> bool {
        position % self.count == self.index
    }

    /// The default output of this shard: `tags.<i>-of-<n>.<extension>`.
    pub fn output_name(&self, extension: &str) -> String {
        format!("tags.{}-of-{}.{extension}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn explicit_shards_parse_and_bad_ones_say_why() {
        let none = env_of(&[]);
        assert_eq!(
            Shard::parse("1/3", &none).unwrap(),
            Shard { index: 1, count: 3 }
        );
        for (spec, needle) in [
            ("3/3", "index < count"),
            ("1", "i/n"),
            ("a/2", "whole number"),
        ] {
            let err = format!("{:#}", Shard::parse(spec, &none).unwrap_err());
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn slurm_arrays_number_their_tasks_from_the_minimum() {
        // sbatch --array=1-8: tasks 1..=8.
        let env = env_of(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]);
        assert_eq!(
            Shard::parse("auto", env).unwrap(),
            Shard { index: 2, count: 8 }
        );
        // --array=0-14:2: tasks 0, 2, …, 14.
        let env = env_of(&[
            ("SLURM_ARRAY_TASK_ID", "14"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]);
        assert_eq!(
            Shard::parse("auto", env).unwrap(),
            Shard { index: 7, count: 8 }
        );
        // --array=1,5,9 (a list): the count is 3 but the ids go past it.
        let env = env_of(&[
            ("SLURM_ARRAY_TASK_ID", "9"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        let err = format!("{:#}", Shard::parse("auto", env).unwrap_err());
        assert!(err.contains("not a plain range"), "{err}");
    }

    #[test]
    fn indexed_jobs_need_the_count_and_nothing_set_is_an_error() {
        let env = env_of(&[("JOB_COMPLETION_INDEX", "0"), (SHARD_COUNT_VAR, "4")]);
        assert_eq!(
            Shard::parse("auto", env).unwrap(),
            Shard { index: 0, count: 4 }
        );
        let err = format!(
            "{:#}",
            Shard::parse("auto", env_of(&[("JOB_COMPLETION_INDEX", "0")])).unwrap_err()
        );
        assert!(err.contains(SHARD_COUNT_VAR), "{err}");
        let err = format!("{:#}", Shard::parse("auto", env_of(&[])).unwrap_err());
        assert!(err.contains("Slurm") && err.contains("Kubernetes"), "{err}");
    }

    #[test]
    fn shards_cover_the_list_once_and_name_their_outputs() {
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        for k in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.takes(k)).count(), 1);
        }
        assert_eq!(shards[1].output_name("jsonl"), "tags.1-of-3.jsonl");
    }
}
