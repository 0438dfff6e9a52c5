//! Config files: format detection, finding and reading them.

use std::path::{Path, PathBuf};

use super::ConfigError;

/// The syntax of a config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// TOML.
    Toml,
    /// Ascend MemCache's `ock.mmc.*` key = value lines.
    Ock,
}

impl Format {
    /// A `.toml` file is TOML; otherwise the text is `ock` when its first non-blank, non-comment
    /// line starts with `ock.`, and TOML when it does not.
    pub fn detect(path: &Path, text: &str) -> Format {
        let is_toml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        if is_toml {
            return Format::Toml;
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'));
        match first {
            Some(l) if l.starts_with("ock.") => Format::Ock,
            _ => Format::Toml,
        }
    }
}

/// Reads a config file and detects its format ([`Format::detect`]). A read error names the path.
pub fn load_text(path: &Path) -> Result<(String, Format), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let format = Format::detect(path, &text);
    Ok((text, format))
}

/// The config file to read: `explicit` if given, else the path in environment variable `env_var`
/// (unset or empty = none).
pub fn config_path(explicit: Option<&Path>, env_var: &str) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    match std::env::var_os(env_var) {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => None,
    }
}

/// Finds the file ([`config_path`]), reads it ([`load_text`]) and hands its text and format to
/// `parse`; any error is returned naming the file. `Ok(None)` when there is no file to read.
pub fn load_config<T>(
    explicit: Option<&Path>,
    env_var: &str,
    parse: impl FnOnce(&str, Format) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    let Some(path) = config_path(explicit, env_var) else {
        return Ok(None);
    };
    let (text, format) = load_text(&path)?;
    tracing::debug!("reading config file {} ({format:?})", path.display());
    parse(&text, format).map(Some).map_err(|e| e.in_file(&path))
}

fn toml_error(e: toml::de::Error) -> ConfigError {
    ConfigError::Toml(e.to_string().trim_end().to_string())
}

/// Parses TOML text into `T` (a `deny_unknown_fields` schema), mapping errors to
/// [`ConfigError::Toml`].
pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(toml_error)
}
