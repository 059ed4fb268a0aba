//! The client cookie cache kept in a file across runs ([`NetBuilder::cookie_cache_file`]).
//!
//! [`NetBuilder::cookie_cache_file`]: crate::NetBuilder::cookie_cache_file

use std::io::Write as _;
use std::path::{Path, PathBuf};

use stack::fastopen::cache_file;
use stack::Stack;

use crate::net::Net;

/// Most warnings kept (a disk that stays full would otherwise add one per change).
pub(crate) const MAX_WARNINGS: usize = 16;

/// The file, kept by the runtime thread: the cache is copied out under the state lock, and
/// written (with its `fsync`) outside it.
#[derive(Debug)]
pub(crate) struct CookieFile {
    path: PathBuf,
    /// The cache generation last written (or loaded).
    saved: u64,
}

impl CookieFile {
    /// Load `path` into the stack's cache. A missing file is an empty cache; an unreadable or
    /// corrupt one is too, with a warning (the program runs on, without its old cookies).
    pub(crate) fn load(path: PathBuf, stack: &mut Stack) -> (CookieFile, Vec<String>) {
        let mut warnings = Vec::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let parsed = std::str::from_utf8(&bytes)
                    .map_err(|_| "not text".to_owned())
                    .and_then(|text| cache_file::from_text(text).map_err(|e| e.to_string()));
                match parsed {
                    Ok(entries) => {
                        for e in entries {
                            stack.insert_cookie(e);
                        }
                    }
                    Err(e) => warnings.push(format!(
                        "cookie cache {}: {e}; starting with an empty cache",
                        path.display()
                    )),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warnings.push(format!(
                "cookie cache {}: {e}; starting with an empty cache",
                path.display()
            )),
        }
        let file = CookieFile {
            path,
            saved: stack.cookie_cache_generation(),
        };
        (file, warnings)
    }

    /// The cache as text if it changed since the last save (under the state lock: a copy of
    /// a few lines).
    pub(crate) fn snapshot(&mut self, stack: &Stack) -> Option<String> {
        let generation = stack.cookie_cache_generation();
        if generation == self.saved {
            return None;
        }
        // Tried once per change: a failure is not retried until the cache changes again.
        self.saved = generation;
        Some(cache_file::to_text(&stack.cookie_cache()))
    }

    /// Write a snapshot (outside the lock). A failure is one warning line.
    pub(crate) fn write(&self, text: &str) -> Result<(), String> {
        write_atomically(&self.path, text.as_bytes())
            .map_err(|e| format!("cookie cache {}: cannot save: {e}", self.path.display()))
    }
}

/// Write `data` to a temporary file next to `path`, then rename it over `path`: a reader (or a
/// crash) sees the old file or the new one, never half of one.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl Net {
    /// Problems with the cookie cache file not reported yet: a file that could not be read or
    /// parsed at start (the cache then started empty), saves that failed. Each is handed out
    /// once. Empty when all went well or no file was given.
    pub fn take_cookie_cache_warnings(&self) -> Vec<String> {
        std::mem::take(&mut self.shared().lock().cookie_warnings)
    }
}
