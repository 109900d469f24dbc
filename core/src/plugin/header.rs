//! The header every plugin library exports as `REFT_PLUGIN_HEADER`.
//!
//! It is plain `#[repr(C)]` data (no pointers), so the host can read it from a library built
//! by any compiler before trusting anything else in it.

/// Bumped whenever the contract between host and plugin changes: the header layout, the
/// registrar, or the `Intervention` trait.
pub const ABI_VERSION: u32 = 1;

/// First bytes of every header: tells a reft plugin from an unrelated symbol of that name.
pub const MAGIC: [u8; 8] = *b"REFTPLUG";

/// The exact build a plugin must match: reft version, rustc, candle, target, profile and
/// the features that change types (cuda). Rust has no stable ABI, so a plugin built by
/// another compiler or against another reft would lay out `Tensor` or the trait's vtable
/// differently; loading it would be undefined behaviour rather than an error.
pub const BUILD_ID: &str = env!("REFT_BUILD_ID");

/// Exported symbol names.
pub const HEADER_SYMBOL: &str = "REFT_PLUGIN_HEADER";
pub const REGISTER_SYMBOL: &str = "reft_plugin_register";

/// Room for the build id inside the header.
const BUILD_ID_CAPACITY: usize = 256;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PluginHeader {
    pub magic: [u8; 8],
    pub abi_version: u32,
    pub build_id_len: u32,
    pub build_id: [u8; BUILD_ID_CAPACITY],
}

impl PluginHeader {
    /// The header of this build. `reft_sdk::declare_plugin!` places it in the plugin as a
    /// `static`, so the values are those the plugin was compiled against.
    pub const fn current() -> PluginHeader {
        let id = BUILD_ID.as_bytes();
        assert!(id.len() <= BUILD_ID_CAPACITY, "build id longer than the header's field");
        let mut build_id = [0u8; BUILD_ID_CAPACITY];
        let mut i = 0;
        while i < id.len() {
            build_id[i] = id[i];
            i += 1;
        }
        PluginHeader { magic: MAGIC, abi_version: ABI_VERSION, build_id_len: id.len() as u32, build_id }
    }

    /// The build id as text, if the length field is sane and the bytes are UTF-8.
    pub fn build_id(&self) -> Option<&str> {
        let n = self.build_id_len as usize;
        self.build_id.get(..n).and_then(|b| std::str::from_utf8(b).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_header_round_trips_the_build_id() {
        let h = PluginHeader::current();
        assert_eq!(h.magic, MAGIC);
        assert_eq!(h.build_id(), Some(BUILD_ID));
        assert!(BUILD_ID.contains("rustc "), "{BUILD_ID}");
    }

    #[test]
    fn a_corrupt_length_reads_as_no_build_id() {
        let mut h = PluginHeader::current();
        h.build_id_len = 10_000;
        assert_eq!(h.build_id(), None);
    }
}
