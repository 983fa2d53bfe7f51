//! What can be wrong with a template: unreadable, not YAML, or missing something the local
//! stack needs. Every part of the reader reports through this one type.

/// The template could not be read or does not describe a deltacast stack.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not YAML.
    #[error("template is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// Something the local stack needs is missing or of an unexpected shape.
    #[error("template: {0}")]
    Shape(String),
}

pub(super) fn shape(message: impl Into<String>) -> TemplateError {
    TemplateError::Shape(message.into())
}
