//! Human units in manifests: durations ("5s", "1m 30s") and sizes ("16MiB").

use std::time::Duration;

/// Why a manifest's duration or size was not understood; the message shows how to write it.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("`{text}` is not a duration ({source}); write it like \"500ms\", \"5s\" or \"2m\"")]
    Duration {
        text: String,
        source: humantime::DurationError,
    },
    /// `reason` is the size parser's own word on it.
    #[error("`{text}` is not a size ({reason}); write it like \"64KiB\" or \"16MiB\"")]
    Size { text: String, reason: String },
}

/// Parses a duration such as `"500ms"`, `"5s"` or `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    humantime::parse_duration(text.trim()).map_err(|source| UnitError::Duration {
        text: text.to_string(),
        source,
    })
}

/// Parses a size such as `"64KiB"`, `"16MiB"` or `"1GB"`.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|reason| UnitError::Size {
            text: text.to_string(),
            reason: reason.to_string(),
        })
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
