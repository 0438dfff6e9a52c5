//! Small file helpers for the binaries.

use std::io;
use std::path::Path;

/// Write `contents` to `path` so that readers see either nothing or all of it (write a sibling
/// temporary file, then rename it into place).
pub fn write_atomically(path: &Path, contents: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}
