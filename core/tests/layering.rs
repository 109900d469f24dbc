//! The dependency rule of reft-core, enforced: every module (a "room": a top-level module of
//! `core/src`) sits on a floor, and code may name only rooms on lower floors (and its own).
//! The list below is the one `lib.rs` and docs/architecture.md describe; a new module must be
//! placed on it, and a `crate::` path that reaches up a floor fails this test with the file
//! and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// From the ground up. Rooms on one floor must not name each other either.
const FLOORS: &[&[&str]] = &[
    &["error"],
    &["io", "rng", "alloc", "device", "cache", "batch"],
    &["ops"],
    &["nn"],
    &["hooks"],
    &["onnx"],
    &["intervention"],
    &["plugin", "dist"],
    &["model"],
    &["deploy", "generate"],
    &["recipe"],
    &["data"],
    &["task"],
    &["collect", "adapter"],
    &["train"],
    &["export", "sweep"],
    &["runtime"],
];

fn floor_of(room: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&room))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The rooms a line of code names through `crate::room` or `crate::{room, …}`.
fn named_rooms(code: &str) -> Vec<String> {
    let mut rooms = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The group ends at its own closing brace, past any nested `{…}`.
            let mut depth = 0;
            let end = group
                .char_indices()
                .find(|&(_, ch)| {
                    match ch {
                        '{' => depth += 1,
                        '}' if depth == 0 => return true,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    false
                })
                .map_or(group.len(), |(k, _)| k);
            let inner = &group[..end];
            // Top-level items of each branch: `a::b`, `c` -> a, c (nested groups are inside a branch).
            let mut depth = 0;
            let mut start = 0;
            for (k, ch) in inner.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        rooms.push(first_segment(&inner[start..k]));
                        start = k + 1;
                    }
                    _ => {}
                }
            }
            rooms.push(first_segment(&inner[start..]));
        } else {
            rooms.push(first_segment(rest));
        }
    }
    rooms.retain(|r| !r.is_empty() && r.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && r != "self");
    rooms
}

fn first_segment(s: &str) -> String {
    s.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

#[test]
fn no_module_imports_a_module_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut unplaced = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let room = first.trim_end_matches(".rs").to_string();
        if room == "lib" {
            continue;
        }
        let Some(own) = floor_of(&room) else {
            unplaced.insert(room, rel.display().to_string());
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        // Multi-line `use crate::{…}` groups: join each statement onto one line first.
        let mut statement = String::new();
        let mut start_line = 0;
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if statement.is_empty() {
                start_line = n + 1;
            }
            statement.push_str(code);
            statement.push(' ');
            let open = statement.matches('{').count() > statement.matches('}').count();
            if statement.trim_start().starts_with("use crate::") && open {
                continue;
            }
            for target in named_rooms(&statement) {
                if target == room {
                    continue;
                }
                match floor_of(&target) {
                    Some(f) if f < own => {}
                    Some(f) => violations.push(format!(
                        "{}:{start_line}: `{room}` (floor {own}) names `{target}` (floor {f}): a module may import only from lower floors",
                        rel.display()
                    )),
                    None => unplaced.insert(target.clone(), format!("named at {}:{start_line}", rel.display())).map_or((), |_| ()),
                }
            }
            statement.clear();
        }
    }
    assert!(unplaced.is_empty(), "modules missing from the floor list (place them in FLOORS and in docs/architecture.md): {unplaced:?}");
    assert!(violations.is_empty(), "{} upward imports:\n{}", violations.len(), violations.join("\n"));
}

#[test]
fn the_scanner_sees_grouped_and_inline_paths() {
    assert_eq!(named_rooms("use crate::{hooks::Site, model::{Batch, Hooks}, error};"), ["hooks", "model", "error"]);
    assert_eq!(named_rooms("fn f(g: &mut crate::onnx::Graph) -> crate::Result<()>"), ["onnx"]);
    assert!(floor_of("runtime").unwrap() > floor_of("export").unwrap());
}
