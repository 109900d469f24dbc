//! SHA-256 of files, and the check against a pinned hash.

use std::path::Path;

use super::AssetError;

/// Lower-case hex SHA-256 of a file's bytes ([`reft_core::io::sha256_file`]).
pub fn sha256_file(path: &Path) -> Result<String, AssetError> {
    reft_core::io::sha256_file(path).map_err(AssetError::io("read", path))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::scratch;

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
