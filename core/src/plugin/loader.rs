//! Opening plugin libraries: check first, register second, never unload.

use super::header::{PluginHeader, ABI_VERSION, BUILD_ID, HEADER_SYMBOL, MAGIC, REGISTER_SYMBOL};
use super::inspect;
use super::registrar::Registrar;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A library that was loaded, with the plugins it registered.
#[derive(Debug, Clone)]
pub struct LoadedLibrary {
    pub path: PathBuf,
    pub plugins: Vec<&'static str>,
}

static LOADED: Mutex<Vec<LoadedLibrary>> = Mutex::new(Vec::new());

/// Every library loaded so far, in load order.
pub fn loaded_libraries() -> Vec<LoadedLibrary> {
    LOADED.lock().expect("plugin list poisoned").clone()
}

/// Load each library in turn (see [`load`]).
pub fn load_all<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<LoadedLibrary>> {
    paths.iter().map(|p| load(p.as_ref())).collect()
}

/// Load the plugin library at `path` and register its plugins.
///
/// Loading the same file twice is a no-op that returns the first load. Errors name the
/// file and what is wrong: missing, not a shared library, not a reft plugin, another ABI
/// or build, or a plugin name that is already taken.
pub fn load(path: &Path) -> Result<LoadedLibrary> {
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        Error::Plugin(format!("plugin library {}: {e}", path.display()))
    })?;
    let mut loaded = LOADED.lock().expect("plugin list poisoned");
    if let Some(done) = loaded.iter().find(|l| l.path == canonical) {
        return Ok(done.clone());
    }
    let fail = |what: String| Error::Plugin(format!("plugin library {}: {what}", canonical.display()));

    // Check the file before dlopen runs any of its code (initialisers included).
    let bytes = std::fs::read(&canonical).map_err(|e| fail(e.to_string()))?;
    let inspected = inspect::inspect(&bytes).map_err(|e| fail(format!("not a shared library: {e}")))?;
    drop(bytes);
    let header = inspected.header.ok_or_else(|| {
        fail(format!("not a reft plugin: it exports no `{HEADER_SYMBOL}` (a plugin declares itself with `reft_sdk::declare_plugin!`)"))
    })?;
    check_header(&header).map_err(fail)?;
    if let Some(missing) = inspect::missing_from_this_process(&inspected.needed_rust_symbols) {
        if !missing.is_empty() {
            return Err(fail(stale_sdk_message(&missing, inspected.needed_rust_symbols.len())));
        }
    }

    // SAFETY: opening a shared library runs its initialisers; the header above says it was
    // built by this compiler against this reft build, and every Rust symbol it needs is here.
    let library = unsafe { libloading::Library::new(&canonical) }.map_err(|e| fail(explain_open_error(&open_error_text(&e))))?;

    // SAFETY: the header proves the library was built by the same compiler against the same
    // reft build, so the Rust-ABI entry point has exactly this signature.
    let register = unsafe { library.get::<fn(&mut Registrar)>(REGISTER_SYMBOL.as_bytes()) }
        .map_err(|_| fail(format!("has a reft header but no `{REGISTER_SYMBOL}` entry point")))?;
    let mut registrar = Registrar::new(&canonical, &loaded);
    register(&mut registrar);
    let plugins = registrar.finish()?;
    if plugins.is_empty() {
        return Err(fail("registered no plugins".into()));
    }
    // Never unload: factories, vtables and the code of every intervention built from them
    // live in this library for the rest of the process.
    std::mem::forget(library);
    let entry = LoadedLibrary { path: canonical, plugins };
    loaded.push(entry.clone());
    Ok(entry)
}

/// Compare a plugin's header with this build's; the message says what differs.
fn check_header(h: &PluginHeader) -> std::result::Result<(), String> {
    if h.magic != MAGIC {
        return Err(format!("not a reft plugin: `{HEADER_SYMBOL}` does not start with the reft magic bytes"));
    }
    if h.abi_version != ABI_VERSION {
        return Err(format!(
            "plugin ABI version {} but this reft speaks ABI version {ABI_VERSION}; rebuild the plugin against this reft",
            h.abi_version
        ));
    }
    match h.build_id() {
        Some(id) if id == BUILD_ID => Ok(()),
        Some(id) => Err(format!(
            "built for another reft build; rebuild the plugin with the same toolchain and reft:\n  plugin: {id}\n  reft:   {BUILD_ID}"
        )),
        None => Err("its header's build id is corrupt".into()),
    }
}

/// A plugin whose header matches but whose symbols do not: it was linked against another
/// build of libreft_sdk.so (a `cargo build -p`, or an SDK rebuilt since with other features).
fn stale_sdk_message(missing: &[String], needed: usize) -> String {
    let examples: Vec<&str> = missing.iter().take(3).map(String::as_str).collect();
    format!(
        "was linked against another build of libreft_sdk.so: {} of the {needed} Rust symbols it needs are not in this \
         reft's (for example {}). Rebuild the plugin and reft together, in one `cargo build --release` of the workspace \
         with the plugin among its default-members (docs/plugins.md, \"The rule\")",
        missing.len(),
        examples.join(", ")
    )
}

/// libloading's message is a headline ("dlopen failed"); dlerror's text is its source.
fn open_error_text(e: &libloading::Error) -> String {
    match std::error::Error::source(e) {
        Some(detail) => detail.to_string(),
        None => e.to_string(),
    }
}

/// dlopen's messages are terse; add what they usually mean for a plugin.
fn explain_open_error(message: &str) -> String {
    if message.contains("undefined symbol") {
        format!(
            "cannot be loaded: {message}\n  (it was built against another build of libreft_sdk.so: build plugins in the same \
             `cargo build` as the reft binary, with the plugin among the workspace's default-members; see docs/plugins.md. \
             This reft: {BUILD_ID})"
        )
    } else if message.contains("invalid ELF header") || message.contains("file too short") || message.contains("not a dynamic") {
        format!("not a shared library: {message}")
    } else {
        format!("cannot be loaded: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_from_another_abi_is_refused_by_version() {
        let mut h = PluginHeader::current();
        h.abi_version = ABI_VERSION + 1;
        let e = check_header(&h).unwrap_err();
        assert!(e.contains(&format!("ABI version {}", ABI_VERSION + 1)), "{e}");
    }

    #[test]
    fn a_header_from_another_build_shows_both_ids() {
        let mut h = PluginHeader::current();
        h.build_id[0] ^= 1;
        let e = check_header(&h).unwrap_err();
        assert!(e.contains("another reft build") && e.contains(BUILD_ID), "{e}");
    }

    #[test]
    fn wrong_magic_is_not_a_plugin() {
        let mut h = PluginHeader::current();
        h.magic = *b"NOTAPLUG";
        assert!(check_header(&h).unwrap_err().contains("not a reft plugin"));
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = load(Path::new("/nonexistent/libnothing.so")).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/libnothing.so"), "{e}");
    }

    #[test]
    fn a_text_file_is_not_a_shared_library() {
        let dir = std::env::temp_dir().join(format!("reft-plugin-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("libfake.so");
        std::fs::write(&fake, "not an ELF file").unwrap();
        let e = load(&fake).unwrap_err().to_string();
        assert!(e.contains("libfake.so") && e.contains("not a shared library"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_shared_library_without_a_header_is_not_a_plugin() {
        // Any real shared library that is not a reft plugin: the C maths library.
        let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists());
        let Some(libm) = libm else { return };
        let e = load(libm).unwrap_err().to_string();
        assert!(e.contains("not a reft plugin") && e.contains("REFT_PLUGIN_HEADER"), "{e}");
    }
}
