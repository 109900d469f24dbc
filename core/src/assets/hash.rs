//! SHA-256 of files, and the check against a pinned hash.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::AssetError;

/// Lower-case hex SHA-256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String, AssetError> {
    let mut file = File::open(path).map_err(AssetError::io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(AssetError::io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// `Ok(())` when the file's SHA-256 is `expected` (case-insensitive hex), else `HashMismatch`.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<(), AssetError> {
    let actual = sha256_file(path)?;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(AssetError::HashMismatch {
            path: path.to_owned(),
            expected: expected.to_owned(),
            actual,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::testutil::scratch;

    #[test]
    fn sha256_known_answer_and_corruption() {
        let dir = scratch("hash");
        let path = dir.join("f.bin");
        std::fs::write(&path, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&path).unwrap(), abc);
        verify_sha256(&path, abc).unwrap();
        verify_sha256(&path, &abc.to_uppercase()).unwrap();

        std::fs::write(&path, b"abd").unwrap(); // one corrupted byte
        match verify_sha256(&path, abc) {
            Err(AssetError::HashMismatch {
                expected, actual, ..
            }) => {
                assert_eq!(expected, abc);
                assert_ne!(actual, abc);
            }
            other => panic!("expected HashMismatch, got {other:?}"),
        }
        assert!(matches!(
            verify_sha256(&dir.join("missing"), abc),
            Err(AssetError::Io { .. })
        ));
    }
}
