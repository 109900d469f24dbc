//! Where reft's cache folder is (`$REFT_CACHE`, else `$XDG_CACHE_HOME/reft`, else
//! `~/.cache/reft`) and where ONNX Runtime sits in it. Recipes expand `${REFT_CACHE}` with
//! it and the runtime loads ONNX Runtime from it; filling the cache is the setup tool's job
//! (the `reft-assets` crate, `reft setup`), which lays out the rest of the folder.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Environment variable that overrides the cache location.
pub const CACHE_ENV: &str = "REFT_CACHE";

/// The ONNX Runtime version the cache holds.
pub const ONNXRUNTIME_VERSION: &str = "1.31.1";

/// `$REFT_CACHE` if set, else `$XDG_CACHE_HOME/reft`, else `$HOME/.cache/reft`
/// (empty variables count as unset; a relative `XDG_CACHE_HOME` is ignored, as the XDG spec says).
pub fn cache_dir() -> PathBuf {
    cache_dir_from(
        std::env::var_os(CACHE_ENV),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

fn cache_dir_from(
    reft: Option<OsString>,
    xdg: Option<OsString>,
    home: Option<OsString>,
) -> PathBuf {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(reft) {
        return dir;
    }
    if let Some(xdg) = set(xdg).filter(|p| p.is_absolute()) {
        return xdg.join("reft");
    }
    match set(home) {
        Some(home) => home.join(".cache").join("reft"),
        // No HOME at all (some sandboxes): a per-machine folder is still better than failing.
        None => std::env::temp_dir().join("reft-cache"),
    }
}

pub fn onnxruntime_dir(cache: &Path) -> PathBuf {
    cache.join("onnxruntime")
}

/// `onnxruntime/libonnxruntime.so.1.31.1`: what `ORT_DYLIB_PATH` / `ort::init_from` should get.
/// (`libonnxruntime.so` beside it is a symlink to it.)
pub fn onnxruntime_library(cache: &Path) -> PathBuf {
    onnxruntime_dir(cache).join(format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(s.into())
    }

    #[test]
    fn cache_dir_precedence() {
        assert_eq!(
            cache_dir_from(os("/r"), os("/x"), os("/h")),
            PathBuf::from("/r")
        );
        assert_eq!(
            cache_dir_from(None, os("/x"), os("/h")),
            PathBuf::from("/x/reft")
        );
        assert_eq!(
            cache_dir_from(os(""), os("/x"), os("/h")),
            PathBuf::from("/x/reft")
        );
        assert_eq!(
            cache_dir_from(None, None, os("/h")),
            PathBuf::from("/h/.cache/reft")
        );
        assert_eq!(
            cache_dir_from(None, os("rel"), os("/h")),
            PathBuf::from("/h/.cache/reft")
        );
        assert_eq!(
            cache_dir_from(None, os(""), os("/h")),
            PathBuf::from("/h/.cache/reft")
        );
    }
}
