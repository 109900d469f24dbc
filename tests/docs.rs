//! The docs name only what exists: every relative link and every repository path in
//! backticks in README.md and docs/*.md resolves to a file or folder of this repository
//! (`.ci/doc_test --links-only`; CI also runs every command block with `.ci/doc_test`).

use std::process::Command;

#[test]
fn every_link_and_path_in_the_docs_exists_in_the_repository() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .current_dir(root)
        .args([".ci/doc_test", "--links-only"])
        .output()
        .expect("python3 runs .ci/doc_test");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("pages' links checked"), "{text}");
}
