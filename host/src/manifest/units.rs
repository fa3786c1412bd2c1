//! Human units in manifests: durations ("5s", "1m 30s") and sizes ("16MiB").

use std::time::Duration;

/// Parses a duration such as `"500ms"`, `"5s"` or `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write it like \"500ms\", \"5s\" or \"2m\"")
    })
}

/// Parses a size such as `"64KiB"`, `"16MiB"` or `"1GB"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("`{text}` is not a size ({e}); write it like \"64KiB\" or \"16MiB\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_units() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("64 KiB").unwrap(), 64 << 10);
        assert!(parse_duration("fast").is_err());
        assert!(parse_size("lots").is_err());
    }
}
