//! `reft install --prefix DIR`: a working `reft` on the PATH in one command.
//!
//! `cargo install` copies the binary alone, but `reft` runs on two shared libraries that
//! run-time plugins share with it (libreft_sdk.so, and Rust's libstd, linked dynamically for
//! that reason). This copies the running binary to `DIR/bin/reft` and exactly the copies of
//! those libraries this process has loaded (read from `/proc/self/maps`, so never a stale
//! build from elsewhere) to `DIR/lib`, where the binary's `$ORIGIN/../lib` rpath finds them.
//! Every file is written under a temporary name and renamed, so an interrupted install never
//! leaves a half-written binary; it then runs `DIR/bin/reft --version` to prove it starts.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Install root: the binary goes to PREFIX/bin, its libraries to PREFIX/lib.
    #[arg(long, value_name = "PREFIX")]
    prefix: PathBuf,
}

/// File names of the shared libraries `reft` must carry: the SDK every plugin links, and
/// Rust's standard library.
fn is_runtime_library(name: &str) -> bool {
    (name.starts_with("libreft_sdk") || name.starts_with("libstd-")) && name.ends_with(".so")
}

/// The runtime libraries this process has mapped, each once.
fn loaded_libraries() -> anyhow::Result<Vec<PathBuf>> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("read /proc/self/maps (reft install needs Linux)")?;
    let mut libs: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5).filter(|p| p.starts_with('/')) else { continue };
        let path = PathBuf::from(path);
        let keep = path.file_name().and_then(|n| n.to_str()).is_some_and(is_runtime_library);
        if keep && !libs.contains(&path) {
            libs.push(path);
        }
    }
    if !libs.iter().any(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libreft_sdk"))) {
        bail!("this reft did not load libreft_sdk.so (built without the shared SDK?): nothing to install beside it");
    }
    Ok(libs)
}

/// Copy `from` to `dir/name` through a temporary file in `dir`, then rename.
fn install_file(from: &Path, dir: &Path, name: &str, mode: u32) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let to = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::copy(from, &tmp).with_context(|| format!("copy {} to {}", from.display(), tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", tmp.display()))?;
    std::fs::rename(&tmp, &to).with_context(|| format!("rename {} to {}", tmp.display(), to.display()))?;
    Ok(to)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("find the running reft binary")?;
    let libs = loaded_libraries()?;
    let bin_dir = args.prefix.join("bin");
    let lib_dir = args.prefix.join("lib");
    for d in [&bin_dir, &lib_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    for lib in &libs {
        let name = lib.file_name().and_then(|n| n.to_str()).expect("filtered on a UTF-8 file name");
        let to = install_file(lib, &lib_dir, name, 0o644)?;
        println!("installed {}", to.display());
    }
    let installed = install_file(&exe, &bin_dir, "reft", 0o755)?;
    let out = std::process::Command::new(&installed)
        .arg("--version")
        .output()
        .with_context(|| format!("run {}", installed.display()))?;
    if !out.status.success() {
        bail!(
            "{} was installed but does not start ({}): {}",
            installed.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    println!("installed {} ({})", installed.display(), String::from_utf8_lossy(&out.stdout).trim());
    let on_path = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d == bin_dir));
    if !on_path {
        println!("note: {} is not on your PATH; add it (export PATH=\"{}:$PATH\")", bin_dir.display(), bin_dir.display());
    }
    Ok(())
}
