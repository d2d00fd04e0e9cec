//! The CPU's per-core L2 cache size, which sets how much work a convolution tile holds.

use std::sync::OnceLock;

/// What a tile is sized for when the cache cannot be read (1 MiB, a common per-core L2).
const FALLBACK_L2_BYTES: usize = 1 << 20;

/// Bytes of the first core's level-2 data (or unified) cache, read once from Linux's
/// `/sys/devices/system/cpu/cpu0/cache`; [`FALLBACK_L2_BYTES`] elsewhere or when unreadable.
pub fn l2_cache_bytes() -> usize {
    static L2: OnceLock<usize> = OnceLock::new();
    *L2.get_or_init(|| read_l2_from_sysfs().unwrap_or(FALLBACK_L2_BYTES))
}

fn read_l2_from_sysfs() -> Option<usize> {
    let root = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
        let level = read("level")?;
        let kind = read("type")?;
        if level.trim() != "2" || kind.trim() == "Instruction" {
            continue;
        }
        return parse_cache_size(read("size")?.trim());
    }
    None
}

/// `"512K"`, `"2048K"`, `"2M"` or plain bytes → bytes.
fn parse_cache_size(text: &str) -> Option<usize> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let value: usize = digits.parse().ok()?;
    let factor = match unit.trim() {
        "" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        _ => return None,
    };
    value.checked_mul(factor).filter(|&b| b > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_sizes_parse() {
        assert_eq!(parse_cache_size("512K"), Some(512 * 1024));
        assert_eq!(parse_cache_size("2048K"), Some(2 << 20));
        assert_eq!(parse_cache_size("2M"), Some(2 << 20));
        assert_eq!(parse_cache_size("65536"), Some(65536));
        assert_eq!(parse_cache_size("0K"), None);
        assert_eq!(parse_cache_size("big"), None);
    }

    #[test]
    fn the_cache_size_is_plausible() {
        let l2 = l2_cache_bytes();
        assert!((64 << 10..=64 << 20).contains(&l2), "{l2}");
    }
}
