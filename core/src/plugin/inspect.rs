//! What a plugin file says about itself, read from the file without loading it.
//!
//! dlopen runs a library's initialisers and resolves its data relocations before any check
//! of ours could run: a plugin from another build would run code against mismatched types,
//! and one linked against another build of libreft_sdk.so fails with a bare
//! `undefined symbol: _ZN11candle_core…`. Reading the ELF file first lets the loader refuse
//! both by name.

use super::header::{PluginHeader, HEADER_SYMBOL};
use object::{Object, ObjectSection, ObjectSymbol};

/// The parts of a plugin file the loader checks.
pub struct Inspected {
    /// The exported `REFT_PLUGIN_HEADER`, as plain bytes; None when the file has none.
    pub header: Option<PluginHeader>,
    /// Rust symbols the library needs from elsewhere (the SDK or Rust's standard library).
    pub needed_rust_symbols: Vec<String>,
}

/// Parse `bytes` as a shared library. Err when it is not an object file this platform loads.
pub fn inspect(bytes: &[u8]) -> std::result::Result<Inspected, String> {
    let file = object::File::parse(bytes).map_err(|e| e.to_string())?;
    let mut header = None;
    let mut needed_rust_symbols = Vec::new();
    for symbol in file.dynamic_symbols() {
        let Ok(name) = symbol.name() else { continue };
        if symbol.is_undefined() {
            // Weak references may stay unresolved; C symbols come from libc and friends.
            if !symbol.is_weak() && (name.starts_with("_ZN") || name.starts_with("_R")) {
                needed_rust_symbols.push(name.to_string());
            }
        } else if name == HEADER_SYMBOL {
            header = read_header(&file, &symbol);
        }
    }
    Ok(Inspected { header, needed_rust_symbols })
}

/// The header's bytes from the section that holds the symbol; None when they are not all there
/// (a truncated or hand-made file): the loader then reports a corrupt header.
fn read_header<'data>(file: &object::File<'data>, symbol: &object::Symbol<'data, '_>) -> Option<PluginHeader> {
    let size = std::mem::size_of::<PluginHeader>();
    let section = file.section_by_index(symbol.section_index()?).ok()?;
    let data = section.data().ok()?;
    let start = usize::try_from(symbol.address().checked_sub(section.address())?).ok()?;
    let bytes = data.get(start..start.checked_add(size)?)?;
    // SAFETY: PluginHeader is #[repr(C)] plain data (byte arrays and u32s): every bit pattern
    // is a valid value, and read_unaligned copies exactly its size from a slice that long.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<PluginHeader>()) })
}

/// The needed symbols this process cannot provide. The dynamic linker resolves a plugin's
/// Rust symbols against the libraries already loaded in the global scope (libreft_sdk.so and
/// Rust's libstd, which the host links too), so a symbol `dlsym` cannot find here is one
/// dlopen would fail on. None when this process does not link libreft_sdk.so dynamically
/// (a test binary with reft-core built in): then nothing can be said before dlopen.
pub fn missing_from_this_process(needed: &[String]) -> Option<Vec<String>> {
    if !links_the_sdk_dynamically() {
        return None;
    }
    let missing = needed
        .iter()
        .filter(|name| {
            let Ok(c) = std::ffi::CString::new(name.as_str()) else { return true };
            // SAFETY: dlsym with RTLD_DEFAULT only looks a name up; the result is not used.
            unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()).is_null() }
        })
        .cloned()
        .collect();
    Some(missing)
}

/// Whether a `libreft_sdk*.so` is mapped into this process.
fn links_the_sdk_dynamically() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .map(|maps| {
            maps.lines().filter_map(|l| l.rsplit('/').next()).any(|file| file.starts_with("libreft_sdk") && file.contains(".so"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_not_an_object_file() {
        assert!(inspect(b"this is not a shared library").is_err());
    }

    #[test]
    fn a_real_library_without_the_header_has_none_and_needs_no_rust() {
        let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("no libm to test with");
        let inspected = inspect(&std::fs::read(libm).unwrap()).unwrap();
        assert!(inspected.header.is_none());
        assert!(inspected.needed_rust_symbols.is_empty());
    }

    #[test]
    fn a_test_binary_with_reft_core_built_in_makes_no_claim() {
        // This unit-test binary links reft-core statically, not through libreft_sdk.so.
        assert_eq!(missing_from_this_process(&["_ZN4core3fmt5write17h0000000000000000E".into()]), None);
    }
}
