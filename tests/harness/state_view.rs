//! What a subscriber of a state channel sees, kept the way a client keeps it: the
//! snapshot (`state`), then each `patch` applied (RFC 7396) when it leads from the version
//! held; a patch from any other version is a gap.

use serde_json::Value;

/// A client's copy of a state channel's document.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateView {
    /// The version held (`None` before the snapshot).
    pub version: Option<u64>,
    /// The value held.
    pub value: Value,
    /// Patches applied.
    pub patches: usize,
}

/// A patch that does not follow the version held.
#[derive(Debug, PartialEq)]
pub struct Gap {
    /// The version held.
    pub held: Option<u64>,
    /// The patch's version.
    pub patch: u64,
}

impl StateView {
    /// Takes a `state` or `patch` frame; other frames are ignored. A patch at or below the
    /// version held is ignored (the snapshot had it).
    pub fn take(&mut self, frame: &Value) -> Result<(), Gap> {
        let version = frame["version"].as_u64();
        match (frame["type"].as_str(), version) {
            // A snapshot (asked for, or sent instead of several patches) unless older.
            (Some("state"), Some(version)) => {
                if self.version.is_none_or(|held| version > held) {
                    self.version = Some(version);
                    self.value = frame["value"].clone();
                }
                Ok(())
            }
            (Some("patch"), Some(version)) => match self.version {
                Some(held) if version <= held => Ok(()),
                Some(held) if version == held + 1 => {
                    json_patch::merge(&mut self.value, &frame["patch"]);
                    self.version = Some(version);
                    self.patches += 1;
                    Ok(())
                }
                held => Err(Gap {
                    held,
                    patch: version,
                }),
            },
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn applies_patches_in_order_and_reports_a_gap() {
        let mut view = StateView::default();
        assert!(
            view.take(&json!({"type": "patch", "version": 1, "patch": {}}))
                .is_err()
        );
        view.take(&json!({"type": "state", "version": 1, "value": {"a": 1, "b": 2}}))
            .unwrap();
        view.take(&json!({"type": "patch", "version": 1, "patch": {"a": 9}}))
            .unwrap();
        view.take(&json!({"type": "patch", "version": 2, "patch": {"a": 3, "b": null}}))
            .unwrap();
        assert_eq!((view.version, &view.value), (Some(2), &json!({"a": 3})));
        let gap = view
            .take(&json!({"type": "patch", "version": 4, "patch": {}}))
            .unwrap_err();
        assert_eq!(
            gap,
            Gap {
                held: Some(2),
                patch: 4
            }
        );
    }
}
