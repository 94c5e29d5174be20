//! Durations as users write them in specs: `30s`, `5m`, `1h30m`, `7d`, `250ms`.

use std::time::Duration;

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string does not match `<number><unit>` repeated.
    #[error("`{0}` is not a duration such as 30s, 5m, 1h30m or 7d")]
    Malformed(String),
    /// The value does not fit in 64 bits of milliseconds.
    #[error("`{0}` is too long a duration")]
    Overflow(String),
}

/// Writes `duration` in whole seconds the way [`parse_duration`] reads it:
/// `1h2m3s`, `45s`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut text = String::new();
    for (value, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if value > 0 {
            text.push_str(&format!("{value}{unit}"));
        }
    }
    if text.is_empty() {
        text.push_str("0s");
    }
    text
}

/// Parses a duration made of `<digits><unit>` parts, unit one of ms, s, m, h, d.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let malformed = || DurationError::Malformed(text.to_string());
    let overflow = || DurationError::Overflow(text.to_string());
    if text.is_empty() {
        return Err(malformed());
    }
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(malformed());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| overflow())?;
        rest = &rest[digits..];
        let (unit_ms, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.as_bytes().first() {
                Some(b's') => (1_000, 1),
                Some(b'm') => (60_000, 1),
                Some(b'h') => (3_600_000, 1),
                Some(b'd') => (86_400_000, 1),
                _ => return Err(malformed()),
            }
        };
        rest = &rest[unit_len..];
        let part = value.checked_mul(unit_ms).ok_or_else(overflow)?;
        total_ms = total_ms.checked_add(part).ok_or_else(overflow)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// A duration field of a spec, read once when the object is read: the text
/// as the user wrote it (written back unchanged) and what it stands for.
/// The schema admits only well-formed text (`DURATION_PATTERN`), so the
/// one error it can hold is a value too long for 64 bits of milliseconds,
/// which validation reports under the field's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecDuration {
    text: String,
    read: Result<Duration, DurationError>,
}

impl SpecDuration {
    /// What the user wrote.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The duration it stands for.
    pub fn get(&self) -> Result<Duration, &DurationError> {
        self.read.as_ref().copied()
    }

    /// The duration, or none when it cannot be read (validation has then
    /// refused the object already).
    pub fn ok(&self) -> Option<Duration> {
        self.get().ok()
    }
}

impl From<&str> for SpecDuration {
    fn from(text: &str) -> Self {
        Self {
            text: text.to_string(),
            read: parse_duration(text),
        }
    }
}

impl std::fmt::Display for SpecDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for SpecDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for SpecDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Self::from(text.as_str()))
    }
}

impl schemars::JsonSchema for SpecDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SpecDuration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": crate::common::DURATION_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_it_reads() {
        for text in ["1h2m3s", "45s", "0s", "2h"] {
            let parsed = parse_duration(text).expect("valid");
            assert_eq!(format_duration(parsed), text);
        }
    }

    #[test]
    fn reads_compound_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in ["", "5", "m", "5x", "1h 30m", "-5s", "5sm"] {
            assert!(
                matches!(parse_duration(bad), Err(DurationError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn a_spec_duration_keeps_its_text_and_reads_once() {
        let read: SpecDuration = serde_json::from_str("\"1h30m\"").expect("a string");
        assert_eq!(read.get(), Ok(Duration::from_secs(5400)));
        assert_eq!(
            serde_json::to_string(&read).expect("serializes"),
            "\"1h30m\""
        );
        let too_long = SpecDuration::from("99999999999999999999d");
        assert_eq!(
            too_long.get(),
            Err(&DurationError::Overflow("99999999999999999999d".into()))
        );
        assert_eq!(too_long.ok(), None);
    }

    proptest::proptest! {
        /// Whatever the CRD's pattern lets through, the operator can read.
        #[test]
        fn reads_whatever_the_schema_pattern_accepts(text in "([0-9]{1,6}(ms|s|m|h|d)){1,4}") {
            proptest::prop_assert!(parse_duration(&text).is_ok());
        }

        /// And it reads nothing the pattern refuses.
        #[test]
        fn refuses_whatever_the_schema_pattern_refuses(text in "[0-9a-z ]{0,8}") {
            let pattern = regex::Regex::new(crate::common::DURATION_PATTERN).expect("pattern compiles");
            proptest::prop_assert_eq!(parse_duration(&text).is_ok(), pattern.is_match(&text));
        }
    }
}
