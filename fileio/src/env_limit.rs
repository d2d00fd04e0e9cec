//! Input limits that a user can raise through the environment.
//!
//! Each reader has a limits struct with documented defaults (checkpoints, pickles, images); the
//! defaults read their `TRESNET_MAX_*` overrides through [`env_limit`].

/// The value of the environment variable `name` as a byte or object count, else `default`.
///
/// Accepts a plain integer or one with a binary suffix `K`, `M`, `G`, `T` (`16G` = 16 GiB). An
/// unset or unparsable value gives `default` (a malformed value never lowers a limit to zero).
pub fn env_limit(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| parse_limit(&v))
        .unwrap_or(default)
}

/// Parses `"4096"`, `"64M"`, `"16G"` into a count.
pub fn parse_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last()? {
        (i, 'K' | 'k') => (&text[..i], 10),
        (i, 'M' | 'm') => (&text[..i], 20),
        (i, 'G' | 'g') => (&text[..i], 30),
        (i, 'T' | 't') => (&text[..i], 40),
        _ => (text, 0),
    };
    let value: u64 = digits.trim().parse().ok()?;
    value.checked_mul(1u64 << shift).filter(|&v| v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_with_suffixes() {
        assert_eq!(parse_limit("4096"), Some(4096));
        assert_eq!(parse_limit("64M"), Some(64 << 20));
        assert_eq!(parse_limit(" 16g "), Some(16 << 30));
        assert_eq!(parse_limit("0"), None);
        assert_eq!(parse_limit("lots"), None);
        assert_eq!(parse_limit("99999999999T"), None);
    }
}
