//! Units written in the configuration: durations (`30s`, `5m`) and byte
//! sizes (`500MB`, `10GiB`), parsed once when the file is read. A leaf: every
//! component's raw configuration may use them, and they use nothing of the
//! project.

use std::time::Duration;

use serde::Deserialize;

/// A duration written the human way: `30s`, `5m`, `1h 30m`, `250ms`.
#[derive(Debug, Clone, Copy)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|err| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a duration like 30s or 5m: {err}"
                ))
            })
    }
}

/// A [`HumanDuration`] that must be longer than zero.
#[derive(Debug, Clone, Copy)]
pub struct Timeout(pub Duration);

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let HumanDuration(duration) = HumanDuration::deserialize(d)?;
        if duration.is_zero() {
            return Err(serde::de::Error::custom("must be longer than 0s"));
        }
        Ok(Timeout(duration))
    }
}

/// A byte count written `1048576`, `500MB`, `10GiB` (k/M/G/T: powers of
/// 1000; Ki/Mi/Gi/Ti: powers of 1024; a trailing `B` is optional).
#[derive(Debug, Clone, Copy)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses the forms above.
    pub fn parse(text: &str) -> Option<u64> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().ok()?;
        let unit = unit.trim().to_ascii_lowercase();
        let unit = unit.strip_suffix('b').unwrap_or(&unit);
        let factor: u64 = match unit {
            "" => 1,
            "k" => 1_000,
            "m" => 1_000_000,
            "g" => 1_000_000_000,
            "t" => 1_000_000_000_000,
            "ki" => 1 << 10,
            "mi" => 1 << 20,
            "gi" => 1 << 30,
            "ti" => 1 << 40,
            _ => return None,
        };
        let bytes = number * factor as f64;
        (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(ByteSize(n)),
            Either::Text(text) => ByteSize::parse(&text).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!("`{text}` is not a size like 500MB or 10GiB"))
            }),
        }
    }
}
