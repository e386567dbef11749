//! The one error every core's `Config::validate` returns.

/// A configuration field is out of its bounds. Every core's `Config::validate` returns this,
/// naming the field as it is spelled in the core's `Config`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {field} {reason}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// `field` is wrong for `reason`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }

    /// `Err(ConfigError::new(field, reason))`, for `validate` bodies.
    pub fn err<T>(field: &'static str, reason: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError::new(field, reason))
    }
}
