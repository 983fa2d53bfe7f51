//! CloudWatch's units, the only values EMF allows in a metric's `Unit`, and what each
//! becomes on the `/metrics` page: a name suffix (Prometheus puts the unit in the name)
//! and histogram buckets that suit its scale.

use std::fmt;

/// A CloudWatch metric unit (EMF's `Unit`; `None` when a definition has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    /// `Seconds`.
    Seconds,
    /// `Microseconds`.
    Microseconds,
    /// `Milliseconds`.
    Milliseconds,
    /// `Bytes`.
    Bytes,
    /// `Kilobytes`.
    Kilobytes,
    /// `Megabytes`.
    Megabytes,
    /// `Gigabytes`.
    Gigabytes,
    /// `Terabytes`.
    Terabytes,
    /// `Bits`.
    Bits,
    /// `Kilobits`.
    Kilobits,
    /// `Megabits`.
    Megabits,
    /// `Gigabits`.
    Gigabits,
    /// `Terabits`.
    Terabits,
    /// `Percent`.
    Percent,
    /// `Count`.
    Count,
    /// `Bytes/Second`.
    BytesPerSecond,
    /// `Kilobytes/Second`.
    KilobytesPerSecond,
    /// `Megabytes/Second`.
    MegabytesPerSecond,
    /// `Gigabytes/Second`.
    GigabytesPerSecond,
    /// `Terabytes/Second`.
    TerabytesPerSecond,
    /// `Bits/Second`.
    BitsPerSecond,
    /// `Kilobits/Second`.
    KilobitsPerSecond,
    /// `Megabits/Second`.
    MegabitsPerSecond,
    /// `Gigabits/Second`.
    GigabitsPerSecond,
    /// `Terabits/Second`.
    TerabitsPerSecond,
    /// `Count/Second`.
    CountPerSecond,
    /// `None`, also what a definition without `Unit` means.
    None,
}

/// Every unit with its CloudWatch spelling and its Prometheus name suffix.
const UNITS: [(Unit, &str, &str); 27] = [
    (Unit::Seconds, "Seconds", "seconds"),
    (Unit::Microseconds, "Microseconds", "microseconds"),
    (Unit::Milliseconds, "Milliseconds", "milliseconds"),
    (Unit::Bytes, "Bytes", "bytes"),
    (Unit::Kilobytes, "Kilobytes", "kilobytes"),
    (Unit::Megabytes, "Megabytes", "megabytes"),
    (Unit::Gigabytes, "Gigabytes", "gigabytes"),
    (Unit::Terabytes, "Terabytes", "terabytes"),
    (Unit::Bits, "Bits", "bits"),
    (Unit::Kilobits, "Kilobits", "kilobits"),
    (Unit::Megabits, "Megabits", "megabits"),
    (Unit::Gigabits, "Gigabits", "gigabits"),
    (Unit::Terabits, "Terabits", "terabits"),
    (Unit::Percent, "Percent", "percent"),
    (Unit::Count, "Count", ""),
    (Unit::BytesPerSecond, "Bytes/Second", "bytes_per_second"),
    (
        Unit::KilobytesPerSecond,
        "Kilobytes/Second",
        "kilobytes_per_second",
    ),
    (
        Unit::MegabytesPerSecond,
        "Megabytes/Second",
        "megabytes_per_second",
    ),
    (
        Unit::GigabytesPerSecond,
        "Gigabytes/Second",
        "gigabytes_per_second",
    ),
    (
        Unit::TerabytesPerSecond,
        "Terabytes/Second",
        "terabytes_per_second",
    ),
    (Unit::BitsPerSecond, "Bits/Second", "bits_per_second"),
    (
        Unit::KilobitsPerSecond,
        "Kilobits/Second",
        "kilobits_per_second",
    ),
    (
        Unit::MegabitsPerSecond,
        "Megabits/Second",
        "megabits_per_second",
    ),
    (
        Unit::GigabitsPerSecond,
        "Gigabits/Second",
        "gigabits_per_second",
    ),
    (
        Unit::TerabitsPerSecond,
        "Terabits/Second",
        "terabits_per_second",
    ),
    (Unit::CountPerSecond, "Count/Second", "per_second"),
    (Unit::None, "None", ""),
];

/// Histogram buckets for durations in milliseconds: 1 ms to a minute.
const MILLISECOND_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
    30_000.0, 60_000.0,
];
/// Histogram buckets for durations in seconds: 1 ms to a minute.
const SECOND_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Histogram buckets for durations in microseconds: 0.1 ms to 10 s.
const MICROSECOND_BUCKETS: &[f64] = &[
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    25_000.0,
    50_000.0,
    100_000.0,
    250_000.0,
    1_000_000.0,
    10_000_000.0,
];
/// Histogram buckets for percentages.
const PERCENT_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 100.0];
/// Histogram buckets for everything else (counts, sizes, rates): 1 to a million.
const COUNT_BUCKETS: &[f64] = &[
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    50.0,
    100.0,
    200.0,
    500.0,
    1_000.0,
    2_000.0,
    5_000.0,
    10_000.0,
    100_000.0,
    1_000_000.0,
];

impl Unit {
    /// The unit CloudWatch spells `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        UNITS
            .iter()
            .find(|(_, spelling, _)| *spelling == text)
            .map(|(unit, _, _)| *unit)
    }

    /// CloudWatch's spelling, e.g. `Count/Second`.
    pub fn as_str(self) -> &'static str {
        self.entry().1
    }

    /// What Prometheus names add for it (`milliseconds`), empty for counts and `None`.
    pub fn suffix(self) -> &'static str {
        self.entry().2
    }

    /// The upper bounds of the histogram buckets for values in this unit (`+Inf` aside).
    pub fn buckets(self) -> &'static [f64] {
        match self {
            Unit::Milliseconds => MILLISECOND_BUCKETS,
            Unit::Seconds => SECOND_BUCKETS,
            Unit::Microseconds => MICROSECOND_BUCKETS,
            Unit::Percent => PERCENT_BUCKETS,
            _ => COUNT_BUCKETS,
        }
    }

    fn entry(self) -> &'static (Unit, &'static str, &'static str) {
        UNITS
            .iter()
            .find(|(unit, _, _)| *unit == self)
            .expect("every unit is listed")
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cloudwatch_spelling_reads_back_as_itself() {
        for (unit, spelling, _) in UNITS {
            assert_eq!(Unit::parse(spelling), Some(unit));
            assert_eq!(unit.as_str(), spelling);
        }
    }

    #[test]
    fn spellings_outside_cloudwatchs_list_are_not_units() {
        for text in [
            "",
            "count",
            "ms",
            "Millisecond",
            "Count/Minute",
            "Bytes/second",
        ] {
            assert_eq!(Unit::parse(text), None, "{text}");
        }
    }

    #[test]
    fn bucket_bounds_rise_strictly() {
        for (unit, _, _) in UNITS {
            let buckets = unit.buckets();
            assert!(buckets.windows(2).all(|pair| pair[0] < pair[1]), "{unit}");
        }
    }
}
