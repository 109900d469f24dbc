//! Reading members out of wheels (zip) and sdists (tar.gz).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

use super::AssetError;

/// Extracts every file of the zip whose name starts with `prefix` into `dest`.
/// With `flatten`, a member lands as `dest/<file name>`; otherwise as `dest/<name minus prefix>`.
/// Returns the written paths; `MissingMember` when nothing matched.
pub(crate) fn extract_zip(
    archive: &Path,
    prefix: &str,
    dest: &Path,
    flatten: bool,
) -> Result<Vec<PathBuf>, AssetError> {
    let file = File::open(archive).map_err(AssetError::io("open", archive))?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file))
        .map_err(|e| AssetError::archive(archive)(e.to_string()))?;
    let mut written = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| AssetError::archive(archive)(e.to_string()))?;
        let name = entry.name().to_owned();
        if entry.is_dir() || !name.starts_with(prefix) {
            continue;
        }
        let rel = if flatten {
            PathBuf::from(name.rsplit('/').next().unwrap_or_default())
        } else {
            PathBuf::from(&name[prefix.len()..])
        };
        if !is_safe_relative(&rel) {
            return Err(AssetError::archive(archive)(format!(
                "unsafe member path {name:?}"
            )));
        }
        let out = dest.join(&rel);
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(AssetError::io("create folder", parent))?;
        }
        let mut w = BufWriter::new(File::create(&out).map_err(AssetError::io("create", &out))?);
        io::copy(&mut entry, &mut w)
            .map_err(|e| AssetError::archive(archive)(format!("member {name}: {e}")))?;
        w.into_inner()
            .map_err(|e| AssetError::io("write", &out)(e.into_error()))?;
        #[cfg(unix)]
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            let perm = fs::Permissions::from_mode((mode & 0o755) | 0o644);
            fs::set_permissions(&out, perm).map_err(AssetError::io("set permissions of", &out))?;
        }
        written.push(out);
    }
    if written.is_empty() {
        return Err(AssetError::MissingMember {
            archive: archive.to_owned(),
            member: format!("{prefix}*"),
        });
    }
    Ok(written)
}

/// A non-empty relative path with only normal components (no `..`, no root).
fn is_safe_relative(p: &Path) -> bool {
    p.components().next().is_some() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Reads into memory the members of a gzip-compressed tar stream whose path satisfies `want`.
/// Returns (path, bytes) in archive order.
pub(crate) fn tar_gz_members(
    reader: impl Read,
    archive: &Path,
    mut want: impl FnMut(&str) -> bool,
) -> Result<Vec<(String, Vec<u8>)>, AssetError> {
    let err = |e: io::Error| AssetError::archive(archive)(e.to_string());
    let mut tar = tar::Archive::new(GzDecoder::new(reader));
    let mut found = Vec::new();
    for entry in tar.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(err)?.to_string_lossy().into_owned();
        if want(&path) {
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes).map_err(err)?;
            found.push((path, bytes));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{scratch, write_tar_gz, write_zip};

    #[test]
    fn zip_prefix_extraction() {
        let dir = scratch("zip");
        let wheel = dir.join("w.whl");
        write_zip(
            &wheel,
            &[
                ("pkg/model/a.json", b"{}"),
                ("pkg/model/sub/b.txt", b"b"),
                ("pkg/other.py", b"x"),
            ],
        );
        let out = dir.join("out");
        let mut got = extract_zip(&wheel, "pkg/model/", &out, false).unwrap();
        got.sort();
        assert_eq!(got, vec![out.join("a.json"), out.join("sub/b.txt")]);
        assert_eq!(fs::read(out.join("sub/b.txt")).unwrap(), b"b");

        let flat = dir.join("flat");
        extract_zip(&wheel, "pkg/model/sub/b", &flat, true).unwrap();
        assert!(flat.join("b.txt").is_file());

        let err = extract_zip(&wheel, "nothing/", &flat, false).unwrap_err();
        assert!(matches!(err, AssetError::MissingMember { .. }), "{err}");
        assert!(extract_zip(&dir.join("absent.whl"), "", &flat, false).is_err());
    }

    #[test]
    fn tar_gz_member_reading() {
        let dir = scratch("targz");
        let path = dir.join("t.tar.gz");
        write_tar_gz(
            &path,
            &[("a/x_GroundTruth.txt", b"1\t1\thi"), ("a/readme", b"r")],
        );
        let got = tar_gz_members(File::open(&path).unwrap(), &path, |p| {
            p.ends_with("_GroundTruth.txt")
        })
        .unwrap();
        assert_eq!(
            got,
            vec![("a/x_GroundTruth.txt".to_string(), b"1\t1\thi".to_vec())]
        );
        assert!(tar_gz_members(&b"not gzip"[..], &path, |_| true).is_err());
    }
}
