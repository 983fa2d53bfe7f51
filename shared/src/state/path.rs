//! Paths into a state document: JSON Pointers (RFC 6901) that address object members
//! only. Arrays are values, replaced whole (as RFC 7396 merge patches treat them), so a
//! path never indexes into one; `""` is the whole document.

use std::fmt;

use thiserror::Error;

/// Most members a path may descend through.
pub const MAX_PATH_DEPTH: usize = 16;
/// Longest member name in a path, bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// Why a path was refused; each names the rule.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Not a JSON Pointer.
    #[error("path must be a JSON Pointer: \"\" or starting with \"/\" (got {0:?})")]
    NotAPointer(String),
    /// Too deep.
    #[error("path is {depth} members deep; at most {MAX_PATH_DEPTH}")]
    TooDeep {
        /// Members in the path.
        depth: usize,
    },
    /// A member name is empty or too long.
    #[error("path member {index} must be 1 to {MAX_KEY_BYTES} bytes (got {len})")]
    BadKey {
        /// Which member, from 0.
        index: usize,
        /// Its length, bytes.
        len: usize,
    },
    /// An escape other than `~0` and `~1`.
    #[error(
        "path member {index} has a `~` not followed by 0 or 1 (write `~0` for `~`, `~1` for `/`)"
    )]
    BadEscape {
        /// Which member, from 0.
        index: usize,
    },
}

/// A checked path: the member names from the root down.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path(Vec<String>);

impl Path {
    /// The whole document.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// Parses and checks a JSON Pointer.
    pub fn parse(pointer: &str) -> Result<Self, PathError> {
        if pointer.is_empty() {
            return Ok(Self::root());
        }
        let Some(rest) = pointer.strip_prefix('/') else {
            return Err(PathError::NotAPointer(pointer.chars().take(64).collect()));
        };
        let raw: Vec<&str> = rest.split('/').collect();
        if raw.len() > MAX_PATH_DEPTH {
            return Err(PathError::TooDeep { depth: raw.len() });
        }
        let mut keys = Vec::with_capacity(raw.len());
        for (index, part) in raw.into_iter().enumerate() {
            let key = unescape(part).ok_or(PathError::BadEscape { index })?;
            if key.is_empty() || key.len() > MAX_KEY_BYTES {
                return Err(PathError::BadKey {
                    index,
                    len: key.len(),
                });
            }
            keys.push(key);
        }
        Ok(Self(keys))
    }

    /// The path of these member names (already checked, or derived from a checked path).
    pub fn from_keys(keys: &[String]) -> Self {
        Self(keys.to_vec())
    }

    /// The member names from the root down.
    pub fn keys(&self) -> &[String] {
        &self.0
    }

    /// Members deep (0: the root).
    pub fn depth(&self) -> usize {
        self.0.len()
    }

    /// This path with `key` appended (for the leaves of a merge patch); the depth is the
    /// caller's to check.
    pub fn child(&self, key: &str) -> Self {
        let mut keys = self.0.clone();
        keys.push(key.to_owned());
        Self(keys)
    }

    /// Whether `self` is `other` or lies above it.
    pub fn contains(&self, other: &Path) -> bool {
        other.0.starts_with(&self.0)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for key in &self.0 {
            write!(f, "/{}", key.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

/// `~1` → `/`, `~0` → `~`; `None` for any other `~`.
fn unescape(part: &str) -> Option<String> {
    let mut out = String::with_capacity(part.len());
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_parse_to_member_names_and_print_back() {
        let path = Path::parse("/votes/a~1b/c~0d").unwrap();
        assert_eq!(path.keys(), ["votes", "a/b", "c~d"]);
        assert_eq!(path.to_string(), "/votes/a~1b/c~0d");
        assert_eq!(Path::parse("").unwrap(), Path::root());
        assert_eq!(Path::root().to_string(), "");
    }

    #[test]
    fn bad_pointers_are_refused_naming_the_rule() {
        assert!(matches!(
            Path::parse("votes"),
            Err(PathError::NotAPointer(_))
        ));
        assert_eq!(
            Path::parse("/a//b"),
            Err(PathError::BadKey { index: 1, len: 0 })
        );
        assert_eq!(Path::parse("/a~2"), Err(PathError::BadEscape { index: 0 }));
        let deep = "/k".repeat(MAX_PATH_DEPTH + 1);
        assert_eq!(
            Path::parse(&deep),
            Err(PathError::TooDeep {
                depth: MAX_PATH_DEPTH + 1
            })
        );
        assert!(Path::parse(&"/k".repeat(MAX_PATH_DEPTH)).is_ok());
        let long = format!("/{}", "x".repeat(MAX_KEY_BYTES + 1));
        assert!(
            Path::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("1 to 128 bytes")
        );
    }

    #[test]
    fn a_path_contains_itself_and_what_lies_below() {
        let a = Path::parse("/a").unwrap();
        let ab = Path::parse("/a/b").unwrap();
        let ax = Path::parse("/ax").unwrap();
        assert!(a.contains(&a) && a.contains(&ab) && Path::root().contains(&ab));
        assert!(!ab.contains(&a) && !a.contains(&ax));
    }
}
