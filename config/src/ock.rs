//! Ascend MemCache's `ock.mmc.*` key = value files: the syntax. Which keys mean what is in the
//! key tables ([`super::table`]).

use super::ConfigError;

/// A parsed `key = value` file (Ascend MemCache's `mmc-meta.conf` / `mmc-local.conf`).
///
/// Syntax: one `key = value` per line; blank lines and lines starting with `#` are ignored; a `#`
/// at the start of a value or after whitespace starts a trailing comment; keys and values are
/// trimmed; a value in matching single or double quotes has them removed (and may then contain
/// `#`). When a key appears more than once the last one wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OckFile {
    /// (key, value, 1-based line number), in file order.
    entries: Vec<(String, String, usize)>,
}

impl OckFile {
    /// Parses the text of a key = value file. A malformed line is an error naming its number.
    pub fn parse(text: &str) -> Result<OckFile, ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let syntax = |reason| ConfigError::Syntax {
                line,
                reason,
                text: t.to_string(),
            };
            let (key, rest) = t
                .split_once('=')
                .ok_or_else(|| syntax("expected `key = value`"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(syntax("missing key before `=`"));
            }
            if key.contains(|c: char| c.is_whitespace() || c == '#' || c == '"' || c == '\'') {
                return Err(syntax("invalid key"));
            }
            let value = parse_ock_value(rest.trim()).map_err(syntax)?;
            entries.push((key.to_string(), value, line));
        }
        Ok(OckFile { entries })
    }

    /// The value of `key` (the last one if it appears more than once).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|(_, v, _)| v.as_str())
    }

    /// The line `key` is set on (the last one if it appears more than once).
    pub fn line(&self, key: &str) -> Option<usize> {
        self.entry(key).map(|(_, _, l)| *l)
    }

    fn entry(&self, key: &str) -> Option<&(String, String, usize)> {
        self.entries.iter().rev().find(|(k, _, _)| k == key)
    }

    /// Every key in file order (a key set twice appears twice).
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|(k, _, _)| k.as_str())
    }

    /// Every `(key, value, line)` in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, usize)> + '_ {
        self.entries
            .iter()
            .map(|(k, v, l)| (k.as_str(), v.as_str(), *l))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file sets nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parses the value of `key` with `parse`, if the key is present; an error names the key.
    pub fn parse_key<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        self.get(key)
            .map(|v| parse(v).map_err(|e| e.for_key(key)))
            .transpose()
    }

    /// Sets `*target` from `key` when present (see [`OckFile::parse_key`]).
    pub fn set<T>(
        &self,
        key: &str,
        target: &mut T,
        parse: impl FnOnce(&str) -> Result<T, ConfigError>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = self.parse_key(key, parse)? {
            *target = v;
        }
        Ok(())
    }

    /// The keys (with their line) for which `is_known` is false, in file order.
    pub fn unknown_keys(&self, is_known: impl Fn(&str) -> bool) -> Vec<(&str, usize)> {
        self.entries
            .iter()
            .filter(|(k, _, _)| !is_known(k))
            .map(|(k, _, l)| (k.as_str(), *l))
            .collect()
    }

    /// Logs a warning for each key not in `known`, naming it and the closest known key (`what`
    /// names the reader, as in "meta service"); returns how many there were. The closest key is
    /// only looked for when warnings are logged.
    pub fn warn_unknown(&self, what: &str, known: &[&str]) -> usize {
        let unknown = self.unknown_keys(|k| known.contains(&k));
        if !tracing::enabled!(tracing::Level::WARN) {
            return unknown.len();
        }
        for (key, line) in &unknown {
            let closest = super::table::closest(key, known.iter().copied()).unwrap_or("");
            tracing::warn!(
                key,
                line,
                closest,
                "{what} config: ignoring unknown key `{key}` (line {line}); the closest known key is `{closest}`"
            );
        }
        unknown.len()
    }
}

/// The value part of a `key = value` line (already trimmed): quotes removed, comment stripped.
fn parse_ock_value(v: &str) -> Result<String, &'static str> {
    if let Some(q) = v.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let inner = &v[1..];
        let end = inner.find(q).ok_or("unterminated quote")?;
        let after = inner[end + 1..].trim_start();
        if !(after.is_empty() || after.starts_with('#')) {
            return Err("unexpected text after the closing quote");
        }
        return Ok(inner[..end].to_string());
    }
    let bytes = v.as_bytes();
    let end = (0..bytes.len())
        .find(|&i| bytes[i] == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()))
        .unwrap_or(bytes.len());
    Ok(v[..end].trim_end().to_string())
}
