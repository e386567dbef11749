//! The seed helper: which seeds a randomised test runs, and the seed of a failure.

use std::panic::{self, AssertUnwindSafe};

/// The environment variable that chooses the seeds of randomised tests.
pub const SEEDS_ENV: &str = "PEERLAB_SEEDS";

/// Most seeds one [`SEEDS_ENV`] value may name: a mistyped range (`1..10000000000`) fails
/// at once instead of allocating gigabytes or running for days.
pub const MAX_SEEDS: usize = 100_000;

/// Why a [`SEEDS_ENV`] value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedsError {
    /// A part is neither a number nor a range of numbers.
    #[error("`{0}` is not a seed or a range of seeds (try 7, 1,5,9, 1..100 or 1..=100)")]
    Malformed(String),
    /// A range is empty or runs backwards.
    #[error("`{0}` names no seed")]
    Empty(String),
    /// More than [`MAX_SEEDS`] seeds.
    #[error("more than {MAX_SEEDS} seeds")]
    TooMany,
}

/// Parses a seed list: comma-separated parts, each a seed (`7`), a half-open range
/// (`1..100`) or an inclusive one (`1..=100`). Whitespace around parts is ignored; seeds
/// keep the order written.
pub fn parse_seeds(text: &str) -> Result<Vec<u64>, SeedsError> {
    let mut seeds = Vec::new();
    for part in text.split(',').map(str::trim) {
        let number = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| SeedsError::Malformed(part.to_string()))
        };
        // Both ends inclusive, so that `u64::MAX` is a seed like any other.
        let (lo, hi) = if let Some((a, b)) = part.split_once("..=") {
            (number(a)?, number(b)?)
        } else if let Some((a, b)) = part.split_once("..") {
            let (a, b) = (number(a)?, number(b)?);
            (
                a,
                b.checked_sub(1)
                    .ok_or(SeedsError::Empty(part.to_string()))?,
            )
        } else {
            let s = number(part)?;
            (s, s)
        };
        if lo > hi {
            return Err(SeedsError::Empty(part.to_string()));
        }
        if hi - lo >= (MAX_SEEDS - seeds.len()) as u64 {
            return Err(SeedsError::TooMany);
        }
        seeds.extend(lo..=hi);
    }
    Ok(seeds)
}

/// The seeds to run: those [`SEEDS_ENV`] names if it is set, else `default`.
///
/// # Panics
///
/// If [`SEEDS_ENV`] is set but cannot be read: a mistyped replay must not quietly run the
/// default seeds and pass.
pub fn seeds(default: impl IntoIterator<Item = u64>) -> Vec<u64> {
    match std::env::var(SEEDS_ENV) {
        Ok(text) => match parse_seeds(&text) {
            Ok(seeds) => seeds,
            Err(e) => panic!("{SEEDS_ENV}={text}: {e}"),
        },
        Err(_) => default.into_iter().collect(),
    }
}

/// Runs `check` once per seed — [`SEEDS_ENV`]'s seeds if it is set, else `default` — and,
/// when a check panics, fails with a message that names the seed and how to replay it.
///
/// The failing check's own panic message is kept in the new one, so an `assert!` under
/// `for_each_seed` reads as `seed 3 failed (replay: PEERLAB_SEEDS=3): <assertion>`. Seeds
/// after a failing one are not run.
pub fn for_each_seed(default: impl IntoIterator<Item = u64>, mut check: impl FnMut(u64)) {
    for seed in seeds(default) {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| check(seed))) {
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            panic!("seed {seed} failed (replay: {SEEDS_ENV}={seed}): {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges_parse_in_order() {
        assert_eq!(parse_seeds("7"), Ok(vec![7]));
        assert_eq!(parse_seeds("3, 1,2"), Ok(vec![3, 1, 2]));
        assert_eq!(parse_seeds("1..4"), Ok(vec![1, 2, 3]));
        assert_eq!(parse_seeds("1..=4,9"), Ok(vec![1, 2, 3, 4, 9]));
        assert_eq!(parse_seeds(" 5 .. 7 "), Ok(vec![5, 6]));
        assert_eq!(parse_seeds("18446744073709551615"), Ok(vec![u64::MAX]));
    }

    #[test]
    fn bad_values_are_refused_not_ignored() {
        assert!(matches!(parse_seeds(""), Err(SeedsError::Malformed(_))));
        assert!(matches!(parse_seeds("x"), Err(SeedsError::Malformed(_))));
        assert!(matches!(parse_seeds("1,,2"), Err(SeedsError::Malformed(_))));
        assert!(matches!(parse_seeds("-1"), Err(SeedsError::Malformed(_))));
        assert!(matches!(parse_seeds("1..x"), Err(SeedsError::Malformed(_))));
        assert!(matches!(parse_seeds("5..5"), Err(SeedsError::Empty(_))));
        assert!(matches!(parse_seeds("9..=3"), Err(SeedsError::Empty(_))));
        assert_eq!(parse_seeds("0..100001"), Err(SeedsError::TooMany));
        assert_eq!(parse_seeds("0..50000,0..50001"), Err(SeedsError::TooMany));
        assert_eq!(
            parse_seeds("0..=18446744073709551615"),
            Err(SeedsError::TooMany)
        );
        assert_eq!(parse_seeds("0..100000").map(|s| s.len()), Ok(MAX_SEEDS));
    }
}
