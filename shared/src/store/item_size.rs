//! An item's size as DynamoDB bills it, for the writes whose units DynamoDB does not
//! report: a refused conditional write comes back as an error without `ConsumedCapacity`,
//! yet is billed (see [`super::capacity`]).
//!
//! DynamoDB's rule ("Item sizes and formats" in its developer guide): an item is the sum
//! of its attributes, each the UTF-8 length of its name plus its value:
//! - a string: its UTF-8 bytes; a binary: its raw bytes;
//! - a number: about 1 byte per two significant digits, plus 1 (see [`number_bytes`]);
//! - a boolean or null: 1 byte;
//! - a list or map: 3 bytes, plus each element's size and 1 byte per element (a map
//!   element's size includes its name);
//! - a set: its elements' sizes (the guide gives no overhead for sets; none is counted).
//!
//! A write bills 1 unit per started KB of that size, at least 1 ([`write_units`]).

use aws_sdk_dynamodb::types::AttributeValue;

use super::attributes::Item;

/// Bytes in a write unit.
const WRITE_UNIT_BYTES: usize = 1024;

/// The item's size in bytes: its attributes' names and values.
pub(crate) fn item_bytes(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_bytes(value))
        .sum()
}

/// Write units for writing (or refusing to write) an item of `bytes`: 1 per started KB,
/// at least 1.
pub(crate) fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(WRITE_UNIT_BYTES).max(1) as f64
}

/// The size of one value, its name aside.
fn value_bytes(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::N(number) => number_bytes(number),
        AttributeValue::B(blob) => blob.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(texts) => texts.iter().map(String::len).sum(),
        AttributeValue::Ns(numbers) => numbers.iter().map(|n| number_bytes(n)).sum(),
        AttributeValue::Bs(blobs) => blobs.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(values) => 3 + values.iter().map(|v| 1 + value_bytes(v)).sum::<usize>(),
        AttributeValue::M(entries) => {
            3 + entries
                .iter()
                .map(|(name, v)| 1 + name.len() + value_bytes(v))
                .sum::<usize>()
        }
        // A type newer than this code: its name is all it is known to take.
        _ => 0,
    }
}

/// A number's size: 1 byte per two significant digits (leading and trailing zeros
/// trimmed, sign, point and exponent not counted), plus 1. This is the guide's
/// approximation: DynamoDB pairs digits on either side of the decimal point, so a number
/// whose digits straddle it oddly (`1.5`) may take a byte more. deltacast's numbers are
/// whole, where the rule is exact up to that pairing.
fn number_bytes(number: &str) -> usize {
    let mantissa = number
        .split(['e', 'E'])
        .next()
        .unwrap_or_default()
        .trim_start_matches(['-', '+']);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.div_ceil(2) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::primitives::Blob;
    use std::collections::HashMap;

    fn item(attributes: &[(&str, AttributeValue)]) -> Item {
        attributes
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect()
    }

    #[test]
    fn strings_and_binaries_count_their_bytes_and_their_names() {
        let s = |v: &str| AttributeValue::S(v.into());
        assert_eq!(item_bytes(&item(&[("pk", s("h#chat:a"))])), 2 + 8);
        assert_eq!(
            item_bytes(&item(&[("name", s("é"))])),
            4 + 2,
            "UTF-8 bytes, not chars"
        );
        let blob = AttributeValue::B(Blob::new(vec![0u8; 10]));
        assert_eq!(item_bytes(&item(&[("b", blob)])), 1 + 10);
        assert_eq!(item_bytes(&Item::new()), 0);
    }

    #[test]
    fn numbers_take_a_byte_per_two_significant_digits_plus_one() {
        let n = |v: &str| number_bytes(v);
        assert_eq!(n("0"), 1);
        assert_eq!(n("7"), 2);
        assert_eq!(n("42"), 2);
        assert_eq!(n("123"), 3);
        assert_eq!(
            n("1764583200000"),
            1 + 4,
            "a Unix ms: 1764583200000 is 17645832"
        );
        assert_eq!(
            n("-00123.4500"),
            1 + 3,
            "sign, point and zeros trimmed: 12345"
        );
        assert_eq!(n("1.5E+10"), 2, "the exponent is not a digit");
        let whole = item(&[("seq", AttributeValue::N("12".into()))]);
        assert_eq!(item_bytes(&whole), 3 + 2);
    }

    #[test]
    fn booleans_nulls_lists_maps_and_sets_follow_the_guide() {
        let s = |v: &str| AttributeValue::S(v.into());
        assert_eq!(
            item_bytes(&item(&[
                ("ok", AttributeValue::Bool(true)),
                ("no", AttributeValue::Null(true))
            ])),
            3 + 3
        );
        assert_eq!(
            item_bytes(&item(&[("l", AttributeValue::L(vec![]))])),
            1 + 3
        );
        let list = AttributeValue::L(vec![s("ab"), AttributeValue::N("5".into())]);
        assert_eq!(item_bytes(&item(&[("l", list)])), 1 + 3 + (1 + 2) + (1 + 2));
        let map = AttributeValue::M(HashMap::from([
            ("k".to_string(), s("vv")),
            ("inner".to_string(), AttributeValue::M(HashMap::new())),
        ]));
        assert_eq!(
            item_bytes(&item(&[("m", map)])),
            1 + 3 + (1 + 1 + 2) + (1 + 5 + 3)
        );
        let set = AttributeValue::Ss(vec!["a".into(), "bcd".into()]);
        assert_eq!(item_bytes(&item(&[("ss", set)])), 2 + 4);
    }

    #[test]
    fn a_write_bills_a_unit_per_started_kb_and_at_least_one() {
        assert_eq!(write_units(0), 1.0);
        assert_eq!(write_units(1), 1.0);
        assert_eq!(write_units(1024), 1.0);
        assert_eq!(write_units(1025), 2.0);
        assert_eq!(write_units(2700), 3.0);
    }
}
