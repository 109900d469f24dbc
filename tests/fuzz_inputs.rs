//! Property tests: the recipe parser, the planner and the model/tokenizer loaders never
//! panic on bad input, and every failure is an `Err` with a non-empty message.
//!
//! Recipes are checked against a tiny BERT folder (`common::tiny_model`), so each case
//! costs microseconds. A guarding global allocator aborts the binary (with a message) if
//! any input makes the code ask for more than 1 GiB at once: sizes read from files must be
//! bounded before they are allocated.

mod common;

use common::tiny_model;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reft_core::candle_core::{DType, Device};
use reft_core::model::{self, tokenizer::TextTokenizer, NoHooks};
use reft_core::recipe::{LoadedRecipe, Plan};
use reft_core::Error;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------
// Allocation guard

const ALLOC_LIMIT: usize = 1 << 30;

struct Guard;

thread_local! {
    /// What the current thread is working on, printed if it asks for a huge allocation.
    static CURRENT: RefCell<String> = const { RefCell::new(String::new()) };
}

fn note(what: &str) {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        c.clear();
        c.push_str(&what[..what.floor_char_boundary_compat(4000)]);
    });
}

trait FloorBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}
impl FloorBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        if i >= self.len() {
            return self.len();
        }
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

fn check_size(size: usize) {
    if size <= ALLOC_LIMIT {
        return;
    }
    // No allocation from here on: write raw bytes, then abort (an allocator must not unwind).
    use std::io::Write;
    let mut digits = [0u8; 20];
    let (mut n, mut i) = (size, digits.len());
    while n > 0 {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"\nfuzz_inputs: an input made the code request ");
    let _ = err.write_all(&digits[i..]);
    let _ = err.write_all(b" bytes at once (a size read from a file was not bounded before allocating). Input:\n");
    let _ = CURRENT.try_with(|c| {
        if let Ok(c) = c.try_borrow() {
            let _ = err.write_all(c.as_bytes());
        }
    });
    let _ = err.write_all(b"\n");
    std::process::abort();
}

unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check_size(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GUARD: Guard = Guard;

// ---------------------------------------------------------------------------------------
// Shared helpers

/// The tiny model folder, written once per build into cargo's per-target temp dir (files
/// are written under a temporary name and renamed, so concurrent test binaries agree).
fn tiny_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-inputs-tiny-bert");
        std::fs::create_dir_all(&dir).unwrap();
        let staging = dir.join(format!(".staging-{}", std::process::id()));
        tiny_model::write(&staging);
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::rename(staging.join(f), dir.join(f)).unwrap();
        }
        let _ = std::fs::remove_dir(&staging);
        dir
    })
}

/// A scratch model folder with the tiny model's files; tests overwrite one of them.
fn scratch_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(tiny_dir().join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    }
}

/// Run `test` on `cases` values of `strategy`; panic with the (shrunk) failing input.
fn run<S: Strategy>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: Debug,
{
    // `FUZZ_INPUTS_SCALE=20 cargo test --release --test fuzz_inputs` for a longer hunt.
    let scale = std::env::var("FUZZ_INPUTS_SCALE").ok().and_then(|s| s.parse::<u32>().ok()).unwrap_or(1);
    let cases = cases.saturating_mul(scale.max(1));
    let start = std::time::Instant::now();
    let mut runner = TestRunner::new(config(cases));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name}: {e}");
    }
    eprintln!("{name}: {cases} cases in {:.2?}", start.elapsed());
}

/// Every failure must be an error with something to say, and no trace of a panic.
fn check_error(e: &Error) -> Result<String, TestCaseError> {
    let shown = e.to_string();
    prop_assert!(!shown.trim().is_empty(), "empty error message: {e:?}");
    prop_assert!(!shown.contains("panicked"), "{shown}");
    Ok(shown)
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    errors: AtomicUsize,
}

impl Tally {
    fn count<T, E>(&self, r: &Result<T, E>) {
        let c = if r.is_ok() { &self.ok } else { &self.errors };
        c.fetch_add(1, Ordering::Relaxed);
    }
    fn show(&self, what: &str) {
        eprintln!(
            "  {what}: {} ok, {} errors",
            self.ok.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed)
        );
    }
}

/// Random edits of a text: the generic half of every mutation strategy.
#[derive(Debug, Clone)]
enum TextEdit {
    /// Replace a line's value (after `: ` or `- `) with a dictionary entry.
    SetValue(Index, &'static str),
    /// Insert a dictionary fragment at a character position.
    Insert(Index, &'static str),
    InsertChar(Index, char),
    DeleteChars(Index, u8),
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    InsertLine(Index, &'static str),
    Indent(Index, i8),
    /// XOR one byte (the result is read back as lossy UTF-8).
    FlipByte(Index, u8),
    Truncate(Index),
}

fn text_edit(values: &'static [&'static str], lines: &'static [&'static str]) -> impl Strategy<Value = TextEdit> {
    let junk = prop_oneof![
        select(&[':', '-', '[', ']', '{', '}', '"', '\'', '\n', ' ', '\t', '#', '&', '*', '!', '|', '>', '%', '@', '`', ',', '?', '\\', '\0', '\u{feff}', 'é', '字', '🦀', '\u{202e}'][..]),
        any::<char>(),
    ];
    prop_oneof![
        10 => (any::<Index>(), select(values)).prop_map(|(i, v)| TextEdit::SetValue(i, v)),
        2 => (any::<Index>(), select(values)).prop_map(|(i, v)| TextEdit::Insert(i, v)),
        2 => (any::<Index>(), junk).prop_map(|(i, c)| TextEdit::InsertChar(i, c)),
        2 => (any::<Index>(), 1u8..12).prop_map(|(i, n)| TextEdit::DeleteChars(i, n)),
        1 => any::<Index>().prop_map(TextEdit::DeleteLine),
        1 => any::<Index>().prop_map(TextEdit::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| TextEdit::SwapLines(a, b)),
        3 => (any::<Index>(), select(lines)).prop_map(|(i, l)| TextEdit::InsertLine(i, l)),
        1 => (any::<Index>(), -4i8..5).prop_map(|(i, n)| TextEdit::Indent(i, n)),
        2 => (any::<Index>(), 1u8..=255).prop_map(|(i, b)| TextEdit::FlipByte(i, b)),
        1 => any::<Index>().prop_map(TextEdit::Truncate),
    ]
}

fn char_pos(text: &str, i: &Index) -> usize {
    let n = text.chars().count();
    text.char_indices().nth(i.index(n + 1)).map_or(text.len(), |(p, _)| p)
}

fn apply(text: &str, edit: &TextEdit) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let pick = |i: &Index, lines: &Vec<String>| i.index(lines.len().max(1));
    match edit {
        TextEdit::SetValue(i, v) => {
            let candidates: Vec<usize> = (0..lines.len())
                .filter(|&k| lines[k].contains(": ") || lines[k].trim_start().starts_with("- "))
                .collect();
            if candidates.is_empty() {
                return format!("{text}{v}");
            }
            let k = candidates[i.index(candidates.len())];
            let line = &lines[k];
            let cut = line.find(": ").map(|p| p + 2).unwrap_or_else(|| line.find("- ").unwrap() + 2);
            lines[k] = format!("{}{v}", &line[..cut]);
        }
        TextEdit::Insert(i, v) => {
            let p = char_pos(text, i);
            return format!("{}{v}{}", &text[..p], &text[p..]);
        }
        TextEdit::InsertChar(i, c) => {
            let p = char_pos(text, i);
            return format!("{}{c}{}", &text[..p], &text[p..]);
        }
        TextEdit::DeleteChars(i, n) => {
            let p = char_pos(text, i);
            let end = text[p..].char_indices().nth(*n as usize).map_or(text.len(), |(q, _)| p + q);
            return format!("{}{}", &text[..p], &text[end..]);
        }
        TextEdit::DeleteLine(i) => {
            if !lines.is_empty() {
                let k = pick(i, &lines);
                lines.remove(k);
            }
        }
        TextEdit::DuplicateLine(i) => {
            if !lines.is_empty() {
                let k = pick(i, &lines);
                lines.insert(k, lines[k].clone());
            }
        }
        TextEdit::SwapLines(a, b) => {
            if !lines.is_empty() {
                let (a, b) = (pick(a, &lines), pick(b, &lines));
                lines.swap(a, b);
            }
        }
        TextEdit::InsertLine(i, l) => {
            let k = i.index(lines.len() + 1);
            lines.insert(k, l.to_string());
        }
        TextEdit::Indent(i, n) => {
            if !lines.is_empty() {
                let k = pick(i, &lines);
                let line = &lines[k];
                lines[k] = if *n >= 0 {
                    format!("{}{line}", " ".repeat(*n as usize))
                } else {
                    let strip = line.len() - line.trim_start_matches(' ').len();
                    line[strip.min(n.unsigned_abs() as usize)..].to_string()
                };
            }
        }
        TextEdit::FlipByte(i, b) => {
            let mut bytes = text.as_bytes().to_vec();
            if !bytes.is_empty() {
                let k = i.index(bytes.len());
                bytes[k] ^= b;
            }
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        TextEdit::Truncate(i) => {
            let p = char_pos(text, i);
            return text[..p].to_string();
        }
    }
    lines.join("\n")
}

// ---------------------------------------------------------------------------------------
// Recipes

/// Valid recipes for the tiny model (2 layers, hidden 8, intermediate 16); `MODEL` is its folder.
const RECIPES: &[&str] = &[
    "model:\n  path: MODEL\n  dtype: f32\n  device: cpu\ntask:\n  kind: classification\n  num_labels: 2\n  pooling: mean\n  labels: [neg, pos]\ninterventions:\n  - kind: loreft\n    hooks: \"layers[0,1].block_output\"\n    positions: f1+l1\n    rank: 4\n    dropout: 0.05\n    activation: linear\ntrain:\n  epochs: 3\n  batch_size: 8\n  lr: 2.0e-3\n  seed: 42\n",
    "model:\n  path: MODEL\ninterventions:\n  - kind: mlp\n    hooks: [\"layers[-1].mlp_output\", \"embeddings\"]\n    positions: l2\n    hidden: 4\n    activation: gelu\n    residual: false\n  - kind: linear\n    hooks: layers[*].attention_output\n    name: lin\n",
    // (A BERT model cannot carry `causal_lm`: tests/causal_lm.rs checks that refusal.)
    "model: {path: MODEL, dtype: bf16}\ntask: {kind: classification, num_labels: 3}\ninterventions: [{kind: noreft, hooks: \"layers[0..2].block_input\", rank: 2, add_bias: true}, {kind: direft, hooks: [\"layers[1].mlp_activation\"], rank: 16, act_fn: relu}]\n",
    "# a linear probe\nmodel:\n  path: MODEL\ndata:\n  train: train.tsv\n  eval: dev.tsv\n  format: tsv\n  text: sentence\n  label: label\n  max_length: 32\ninterventions: []\ntrain:\n  max_steps: 10\n  weight_decay: 0.01\n  warmup_ratio: 0.1\n  max_grad_norm: 1.0\n  bucket_by_length: true\nexport:\n  dir: out\nplugins: []\n",
    "model:\n  path: MODEL\ninterventions:\n  - kind: consreft\n    hooks: layers[0..=1].attention_value_output\n    low_rank_dimension: 1\n  - kind: lobireft\n    hooks:\n      - layers[0].block_output\n      - layers[-2].block_output\n    positions: f3\n    rank: 8\n  - kind: nodireft\n    hooks: layers[1].block_input\n    rank: 3\n",
];

/// Plausible and implausible values for any scalar slot.
const VALUES: &[&str] = &[
    // hooks
    "layers[*].block_output", "layers[0..3,5].mlp_output", "layers[-1].block_output", "layers[-3].block_output",
    "layers[99999999999999999999].block_output", "layers[9223372036854775807].block_output",
    "layers[-9223372036854775808].block_output", "layers[0..=9223372036854775807].block_output",
    "layers[1..=", "layers[", "layers[]", "layers[*]", "layers[*].", "layers[0].", "layers[0]..block_output",
    "layers[0,,1].block_output", "layers[1..0].block_output", "layers[-1..-1].block_output", "layers[0..-1].mlp_output",
    "layers[ 0 , 1 ].block_output", "layers[*].attention.query", "layers[0].attention.output", "layers[0].mlp.gate",
    "layers[0].mlp.up", "layers[*].mlp.down", "embeddings", "layers[0].embeddings", "block_output", "layers[0].block_ouput",
    "layérs[0].block_output", "layers[０].block_output", "layers[0].block_output\u{0}", "\u{202e}layers[0]", "🦀[0].🦀",
    "\"layers[0].block_output\"", "'layers[1].mlp_activation'",
    // kinds
    "loreft", "noreft", "consreft", "lobireft", "direft", "nodireft", "linear", "mlp", "loreftt", "LOREFT", "lora", "\"\"",
    // positions
    "all", "f1", "l1", "f1+l1", "f2+l5", "f0", "l0", "f0+l0", "f-1", "f", "f1+", "+l1", "f1+f2", "f99999999999999999999",
    "f18446744073709551615", "l18446744073709551615+f18446744073709551615", "first", "ALL",
    // numbers
    "0", "1", "2", "4", "8", "9", "-1", "1e300", "-1e300", "1e-300", ".nan", ".inf", "-.inf", "0.5", "1.0", "0x10", "0o7",
    "18446744073709551615", "18446744073709551616", "99999999999", "4294967296", "1048577", "9223372036854775808",
    "-9223372036854775809", "1_000", "+4", "007",
    // structures and YAML oddities
    "{a: 1}", "[1, 2]", "[]", "{}", "null", "~", "true", "no", "[[[[]]]]", "{kind: loreft}", "!!binary aGk=", "!!int x",
    "&a 4", "*a", "*undefined", "|", ">-", "\"unterminated", "'", "\"\\u0000\"", "\"\\xff\"", "? x", "- - -", ": :",
    "[a, {b: [c, {d: e}]}]", "!custom {x: 1}", "<<: {rank: 4}",
    // strings and paths
    "", " ", "\t", "MODEL", "MODEL/..", "MODEL/config.json", "/nonexistent/model", "relative/model", "~", "~/x", "$HOME",
    "${REFT_CACHE}/models/none", "${UNCLOSED", "$", "${}", "${NOT_SET_ANYWHERE_FUZZ}/x", "/", "/dev/null", "/proc/self",
    "f32", "bf16", "f16", "f64", "cpu", "cuda:0", "cuda:99", "metal", "classification", "causal_lm", "cls", "mean",
    "gelu", "relu", "tanh", "silu", "sigmoid", "linear", "swish", "tsv", "csv", "jsonl", "parquet",
];

/// Whole lines to insert.
const LINES: &[&str] = &[
    "    rank: 4", "    rank: 99999999999999999999", "    rank: 0", "    hidden: 99999999999", "    hidden: 4294967296",
    "    hidden: 1e300", "    hidden: 1048577", "    dropout: .nan", "    dropout: 1.5", "    add_bias: true", "    rnak: 4",
    "    positions: f1", "    name: x", "    name: [a]", "    hooks: []", "    hooks: [\"\"]", "    kind: mlp", "    residual: maybe",
    "  - kind: mlp\n    hooks: layers[0].block_output\n    hidden: 18446744073709551615",
    "  - kind: linear\n    hooks: layers[*].block_output\n    extra: {a: 1}",
    "  - {kind: loreft, hooks: \"layers[*].block_output\", rank: 8}", "  -", "  - null", "  - []",
    "interventions: []", "interventions: {}", "interventions: null", "interventions: 3",
    "task: {num_labels: 18446744073709551615}", "task: {num_labels: 0, labels: []}", "task: {kind: regression}",
    "train: {epochs: -1}", "train: {lr: .nan, seed: 18446744073709551616}", "train: {epocs: 3}",
    "data: {train: x.tsv, max_length: 0}", "data: {}", "export: {dir: out}", "export: null", "plugins: [/nonexistent.so]",
    "modle: {path: x}", "model: {path: /nonexistent}", "model: null", "model:", "model: [a]", "model: {path: MODEL, dtype: f64}",
    "a: &x [*x]", "base: &b {kind: loreft, rank: 4}", "<<: *b", "? [complex, key]\n: value", "!!map {}", "---", "...", "--- !tag",
    "%YAML 1.2", "%TAG ! tag:x,2000:", "# comment", "\t", "key: \"\\", "\u{feff}", "[", "]", "{", "}", "&", "*",
];

fn recipe_path() -> PathBuf {
    tiny_dir().join("recipes").join("fuzz.yaml")
}

/// Planning errors without a line:column (on text yaml-rust2 could not index).
static UNLOCATED: AtomicUsize = AtomicUsize::new(0);

/// Parse and plan one recipe text; any failure must be a located recipe error.
fn try_recipe(text: &str, tally: &[Tally; 2]) -> Result<(), TestCaseError> {
    note(text);
    let path = recipe_path();
    let parsed = LoadedRecipe::parse(&path, text);
    tally[0].count(&parsed);
    let loaded = match parsed {
        Ok(r) => r,
        Err(e) => {
            check_error(&e)?;
            prop_assert!(matches!(&e, Error::Recipe { file, .. } if *file == path), "{e:?}");
            return Ok(());
        }
    };
    // yaml-rust2 (which indexes positions) is stricter than serde_yaml (which parses); only
    // where it gave up may a planning error lack its line:column.
    let indexed = loaded.source.is_complete();
    let plan = Plan::new(loaded);
    tally[1].count(&plan);
    match plan {
        Ok(plan) => {
            let _ = plan.total_trainable();
            let _ = plan.head_parameters();
            for p in &plan.interventions {
                prop_assert!(!p.name.is_empty());
            }
        }
        Err(e) => {
            let shown = check_error(&e)?;
            let Error::Recipe { file, location, message } = &e else {
                return Err(TestCaseError::fail(format!("not a recipe error: {e:?}")));
            };
            prop_assert_eq!(file, &path);
            prop_assert!(!message.trim().is_empty(), "{shown}");
            if location.is_none() {
                prop_assert!(!indexed, "a planning error without a line:column: {shown}\n--- recipe:\n{text}");
                UNLOCATED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

fn mutated_recipe() -> impl Strategy<Value = String> {
    let model = tiny_dir().display().to_string();
    // Mostly one edit, so that many mutants still parse and reach the planner.
    let edits = prop_oneof![
        3 => prop::collection::vec(text_edit(VALUES, LINES), 1..2),
        1 => prop::collection::vec(text_edit(VALUES, LINES), 2..6),
    ];
    (select(RECIPES), edits).prop_map(move |(base, edits)| {
        let mut text = base.replace("MODEL", &model);
        for e in &edits {
            text = apply(&text, e);
        }
        text.replace("MODEL", &model)
    })
}

#[test]
fn mutated_recipes_never_panic() {
    let tally: [Tally; 2] = Default::default();
    run("mutated recipes", 20_000, mutated_recipe(), |text| try_recipe(&text, &tally));
    tally[0].show("parse");
    tally[1].show("plan");
    eprintln!("  planning errors without line:column (text yaml-rust2 rejects): {}", UNLOCATED.load(Ordering::Relaxed));
    // The mutations must leave enough recipes valid to exercise the planner.
    assert!(tally[1].ok.load(Ordering::Relaxed) > 1_000, "too few mutated recipes planned");
}

/// Recipes assembled from parts: many are valid, so the plugin builds run too.
fn assembled_recipe() -> impl Strategy<Value = String> {
    let keys = select(&["rank", "low_rank_dimension", "hidden", "dropout", "activation", "act_fn", "add_bias", "residual", "rnak", "name"][..]);
    let option = (keys, select(VALUES));
    let hooks = prop_oneof![
        select(VALUES).prop_map(|h| format!("\"{}\"", h.replace('\\', "\\\\").replace('"', "\\\""))),
        prop::collection::vec(select(VALUES), 0..4).prop_map(|v| format!("{v:?}")),
    ];
    let kind = select(&["loreft", "noreft", "consreft", "lobireft", "direft", "nodireft", "linear", "mlp", "lorefft"][..]);
    let positions = prop::option::of(select(&["all", "f1", "l1", "f1+l1", "f0", "l99", "x"][..]));
    let entry = (kind, hooks, positions, prop::collection::vec(option, 0..4));
    let model = tiny_dir().display().to_string();
    (prop::collection::vec(entry, 0..4), any::<bool>(), select(&["2", "0", "18446744073709551615", "-3"][..])).prop_map(
        move |(entries, flow, labels)| {
            let mut s = format!("model:\n  path: {model}\ntask:\n  num_labels: {labels}\ninterventions:");
            if entries.is_empty() {
                s.push_str(" []");
            }
            for (kind, hooks, positions, options) in entries {
                let mut fields = vec![format!("kind: {kind}"), format!("hooks: {hooks}")];
                if let Some(p) = positions {
                    fields.push(format!("positions: {p}"));
                }
                for (k, v) in options {
                    fields.push(format!("{k}: {v}"));
                }
                if flow {
                    s.push_str(&format!("\n  - {{{}}}", fields.join(", ")));
                } else {
                    s.push_str(&format!("\n  - {}", fields.join("\n    ")));
                }
            }
            s.push('\n');
            s
        },
    )
}

#[test]
fn assembled_recipes_never_panic() {
    let tally: [Tally; 2] = Default::default();
    run("assembled recipes", 3_000, assembled_recipe(), |text| try_recipe(&text, &tally));
    tally[0].show("parse");
    tally[1].show("plan");
    assert!(tally[1].ok.load(Ordering::Relaxed) > 100, "too few assembled recipes planned");
}

#[test]
fn pathological_recipes_are_errors() {
    let model = tiny_dir().display().to_string();
    let deep_flow = format!("model: {{path: {model}}}\ninterventions: {}{}\n", "[".repeat(50_000), "]".repeat(50_000));
    let deep_block = format!("model:\n  path: {model}\ntrain:\n{}", (1..3000).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect::<String>());
    let laughs = {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            s.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        s.push_str(&format!("model: {{path: {model}}}\ninterventions: *a11\n"));
        s
    };
    let long_hook = format!(
        "model: {{path: {model}}}\ninterventions: [{{kind: loreft, rank: 1, hooks: \"layers[{}].block_output\"}}]\n",
        vec!["0"; 100_000].join(",")
    );
    let long_range = format!(
        "model: {{path: {model}}}\ninterventions: [{{kind: loreft, rank: 1, hooks: \"layers[{}].block_output\"}}]\n",
        vec!["-2..2"; 20_000].join(",")
    );
    let texts = [
        deep_flow,
        deep_block,
        laughs,
        long_hook,
        long_range,
        "\0\0\0".into(),
        "\u{feff}model: {path: x}".into(),
        "---\n---\n---\n".into(),
        "model: {path: x}\n---\nmodel: {path: y}\n".into(),
        "model: !!binary aGk=\n".into(),
        format!("model:\n  path: {model}\n{}", "# c\n".repeat(100_000)),
        "x".repeat(1_000_000),
    ];
    let tally: [Tally; 2] = Default::default();
    for text in &texts {
        if let Err(e) = try_recipe(text, &tally) {
            panic!("{e}\n--- recipe (first 300 bytes): {:?}", &text[..text.floor_char_boundary_compat(300)]);
        }
    }
    tally[0].show("pathological parse");
    tally[1].show("pathological plan");
}

// ---------------------------------------------------------------------------------------
// Weight files

#[derive(Debug, Clone)]
enum WeightEdit {
    Truncate(Index),
    Flip(Index, u8),
    FlipPrefix(u8, u8),
    FlipHeader(Index, u8),
    SetPrefix(u64),
    /// Rewrite one tensor's entry in the JSON header (the prefix is kept consistent).
    Header(Index, HeaderEdit),
    Append(Vec<u8>),
}

#[derive(Debug, Clone)]
enum HeaderEdit {
    Shape(Vec<u64>),
    Offsets(u64, u64),
    Dtype(&'static str),
    Remove,
    Rename(&'static str),
    Value(&'static str),
}

const BIG: &[u64] = &[0, 1, 2, 7, 8, 16, 50, 51, 1 << 20, 1 << 31, 1 << 32, (1 << 32) + 1, 1 << 62, u64::MAX, u64::MAX / 4];

fn weight_edit() -> impl Strategy<Value = WeightEdit> {
    let header = prop_oneof![
        prop::collection::vec(select(BIG), 0..4).prop_map(HeaderEdit::Shape),
        (select(BIG), select(BIG)).prop_map(|(a, b)| HeaderEdit::Offsets(a, b)),
        (0u64..20_000, 0u64..20_000).prop_map(|(a, b)| HeaderEdit::Offsets(a, b)),
        select(&["F32", "F16", "BF16", "F64", "I64", "I8", "U8", "BOOL", "F8_E4M3", "F4", "XYZ", ""][..]).prop_map(HeaderEdit::Dtype),
        Just(HeaderEdit::Remove),
        select(&["bert.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight", "pooler.dense.weight", "encoder.layer.5.output.dense.weight", "", "__metadata__", "x"][..]).prop_map(HeaderEdit::Rename),
        select(&["null", "1", "[]", "\"x\"", "{\"dtype\":\"F32\"}", "{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}", "{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}"][..]).prop_map(HeaderEdit::Value),
    ];
    prop_oneof![
        2 => any::<Index>().prop_map(WeightEdit::Truncate),
        3 => (any::<Index>(), 1u8..=255).prop_map(|(i, b)| WeightEdit::Flip(i, b)),
        2 => (0u8..8, 1u8..=255).prop_map(|(i, b)| WeightEdit::FlipPrefix(i, b)),
        3 => (any::<Index>(), 1u8..=255).prop_map(|(i, b)| WeightEdit::FlipHeader(i, b)),
        1 => prop_oneof![select(BIG), any::<u64>()].prop_map(WeightEdit::SetPrefix),
        4 => (any::<Index>(), header).prop_map(|(i, h)| WeightEdit::Header(i, h)),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(WeightEdit::Append),
    ]
}

fn header_len(bytes: &[u8]) -> usize {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    n.min(bytes.len() - 8)
}

fn apply_weight_edit(mut bytes: Vec<u8>, edit: &WeightEdit) -> Vec<u8> {
    match edit {
        WeightEdit::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
        WeightEdit::Flip(i, b) if !bytes.is_empty() => {
            let k = i.index(bytes.len());
            bytes[k] ^= b;
        }
        WeightEdit::FlipPrefix(i, b) if bytes.len() > *i as usize => bytes[*i as usize] ^= b,
        WeightEdit::FlipHeader(i, b) if bytes.len() > 8 => {
            let n = header_len(&bytes).max(1);
            let k = 8 + i.index(n).min(bytes.len() - 9);
            bytes[k] ^= b;
        }
        WeightEdit::SetPrefix(v) if bytes.len() >= 8 => bytes[..8].copy_from_slice(&v.to_le_bytes()),
        WeightEdit::Header(i, h) if bytes.len() >= 8 => {
            let n = header_len(&bytes);
            let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_slice::<serde_json::Value>(&bytes[8..8 + n]) else {
                return bytes;
            };
            let names: Vec<String> = obj.keys().cloned().collect();
            if names.is_empty() {
                return bytes;
            }
            let name = names[i.index(names.len())].clone();
            let mut set = |field: &str, v: serde_json::Value| {
                if let Some(entry) = obj.get_mut(&name).and_then(|e| e.as_object_mut()) {
                    entry.insert(field.to_string(), v);
                }
            };
            match h {
                HeaderEdit::Shape(s) => set("shape", serde_json::json!(s)),
                HeaderEdit::Offsets(a, b) => set("data_offsets", serde_json::json!([a, b])),
                HeaderEdit::Dtype(d) => set("dtype", serde_json::json!(d)),
                HeaderEdit::Remove => {
                    obj.remove(&name);
                }
                HeaderEdit::Rename(to) => {
                    let v = obj.remove(&name).unwrap();
                    obj.insert(to.to_string(), v);
                }
                HeaderEdit::Value(v) => obj[&name] = serde_json::from_str(v).unwrap(),
            }
            let header = serde_json::to_vec(&obj).unwrap();
            let mut out = (header.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&header);
            out.extend_from_slice(&bytes[8 + n..]);
            return out;
        }
        WeightEdit::Append(extra) => bytes.extend_from_slice(extra),
        _ => {}
    }
    bytes
}

/// A forward pass of a loaded model on a tiny batch: must be Ok or Err, never a panic.
fn forward_tiny(backbone: &dyn model::Backbone) -> Result<(), TestCaseError> {
    let batch = model::tokenizer::batch_from_ids(&[vec![2, 5, 7, 49, 3], vec![2, 8, 3]], 0, &Device::Cpu).unwrap();
    if let Err(e) = backbone.forward(&batch, &NoHooks) {
        check_error(&e)?;
    }
    Ok(())
}

#[test]
fn corrupt_weight_files_never_panic() {
    let dir = scratch_model();
    let weights = dir.path().join("model.safetensors");
    let clean = tiny_model::weights_bytes();
    let tally: [Tally; 2] = Default::default();
    run("weight files", 3_000, prop::collection::vec(weight_edit(), 1..4), |edits| {
        let mut bytes = clean.clone();
        for e in &edits {
            bytes = apply_weight_edit(bytes, e);
        }
        note(&format!("weight edits {edits:?}"));
        std::fs::write(&weights, &bytes).unwrap();
        let info = model::inspect(dir.path());
        tally[0].count(&info);
        if let Err(e) = &info {
            check_error(e)?;
        }
        let loaded = model::load(dir.path(), DType::F32, &Device::Cpu);
        tally[1].count(&loaded);
        match loaded {
            Ok(m) => forward_tiny(m.as_ref())?,
            Err(e) => {
                let shown = check_error(&e)?;
                prop_assert!(shown.contains("model.safetensors"), "the error does not name the file: {shown}");
            }
        }
        Ok(())
    });
    tally[0].show("inspect");
    tally[1].show("load");
}

// ---------------------------------------------------------------------------------------
// config.json

#[derive(Debug, Clone)]
enum ConfigEdit {
    Set(&'static str, &'static str),
    Remove(&'static str),
    Text(TextEdit),
}

const CONFIG_KEYS: &[&str] = &[
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "model_type", "pad_token_id", "architectures", "extra",
];

const CONFIG_VALUES: &[&str] = &[
    "0", "1", "2", "3", "7", "8", "16", "50", "-1", "1152921504606846976", "18446744073709551615", "18446744073709551616",
    "16777216", "16777217", "4294967296", "1e300", "1e400", "-1e300", "1.5", "0.0", "\"8\"", "null", "[]", "{}", "true",
    "\"gelu\"", "\"relu\"", "\"gelu_new\"", "\"swish\"", "\"bert\"", "\"llama\"", "\"\"", "[8]", "{\"a\": 1}", "1e-12", "-1e-12",
];

fn config_edit() -> impl Strategy<Value = ConfigEdit> {
    prop_oneof![
        6 => (select(CONFIG_KEYS), select(CONFIG_VALUES)).prop_map(|(k, v)| ConfigEdit::Set(k, v)),
        1 => select(CONFIG_KEYS).prop_map(ConfigEdit::Remove),
        3 => text_edit(CONFIG_VALUES, &["}", "{", ",", "\"vocab_size\": 2,"]).prop_map(ConfigEdit::Text),
    ]
}

#[test]
fn corrupt_configs_never_panic() {
    let dir = scratch_model();
    let path = dir.path().join("config.json");
    let clean = tiny_model::config_json();
    let tally: [Tally; 2] = Default::default();
    run("config.json", 2_000, prop::collection::vec(config_edit(), 1..4), |edits| {
        let mut text = clean.clone();
        for e in &edits {
            text = match e {
                ConfigEdit::Text(t) => apply(&text, t),
                ConfigEdit::Set(k, v) => match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(serde_json::Value::Object(mut obj)) => {
                        let v = serde_json::from_str(v).unwrap_or(serde_json::Value::String(v.to_string()));
                        obj.insert(k.to_string(), v);
                        serde_json::Value::Object(obj).to_string()
                    }
                    // Raw text edit when the JSON is already broken.
                    _ => text.replace(k, v),
                },
                ConfigEdit::Remove(k) => match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(serde_json::Value::Object(mut obj)) => {
                        obj.remove(*k);
                        serde_json::Value::Object(obj).to_string()
                    }
                    _ => text.replace(k, ""),
                },
            };
        }
        note(&text);
        std::fs::write(&path, &text).unwrap();
        let info = model::inspect(dir.path());
        tally[0].count(&info);
        if let Err(e) = &info {
            let shown = check_error(e)?;
            prop_assert!(shown.contains("config.json"), "the error does not name the file: {shown}");
        }
        let loaded = model::load(dir.path(), DType::F32, &Device::Cpu);
        tally[1].count(&loaded);
        match loaded {
            Ok(m) => forward_tiny(m.as_ref())?,
            Err(e) => {
                check_error(&e)?;
            }
        }
        Ok(())
    });
    tally[0].show("inspect");
    tally[1].show("load");
}

#[test]
fn huge_config_sizes_are_refused_before_allocating() {
    let dir = scratch_model();
    let path = dir.path().join("config.json");
    for (key, value) in [
        ("vocab_size", serde_json::json!(1u64 << 60)),
        ("vocab_size", serde_json::json!(u64::MAX)),
        ("hidden_size", serde_json::json!(1u64 << 40)),
        ("intermediate_size", serde_json::json!(1u64 << 33)),
        ("num_hidden_layers", serde_json::json!(1u64 << 32)),
        ("max_position_embeddings", serde_json::json!(1u64 << 50)),
        ("type_vocab_size", serde_json::json!(1u64 << 62)),
        ("num_attention_heads", serde_json::json!(0)),
        ("num_attention_heads", serde_json::json!(3)),
        ("hidden_size", serde_json::json!(0)),
        ("hidden_size", serde_json::json!(-8)),
        ("hidden_size", serde_json::json!("8")),
    ] {
        let mut obj: serde_json::Value = serde_json::from_str(&tiny_model::config_json()).unwrap();
        obj[key] = value.clone();
        std::fs::write(&path, obj.to_string()).unwrap();
        note(&format!("{key} = {value}"));
        for r in [model::inspect(dir.path()).map(|_| ()), model::load(dir.path(), DType::F32, &Device::Cpu).map(|_| ())] {
            let e = r.expect_err(&format!("{key} = {value} was accepted"));
            let shown = e.to_string();
            assert!(shown.contains("config.json"), "{shown}");
            assert!(shown.contains(key) || shown.contains("invalid"), "{key} = {value}: {shown}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// tokenizer.json

#[derive(Debug, Clone)]
enum TokEdit {
    Set(&'static str, &'static str),
    Remove(&'static str),
    Text(TextEdit),
}

const TOK_POINTERS: &[&str] = &[
    "/model/type", "/model/unk_token", "/model/vocab/[UNK]", "/model/vocab/[CLS]", "/model/vocab/##s", "/model/vocab",
    "/model/continuing_subword_prefix", "/model/max_input_chars_per_word", "/model", "/normalizer", "/normalizer/type",
    "/normalizer/lowercase", "/normalizer/strip_accents", "/pre_tokenizer", "/pre_tokenizer/type", "/post_processor",
    "/post_processor/type", "/post_processor/single/0", "/post_processor/single", "/post_processor/special_tokens/[CLS]/ids/0",
    "/post_processor/special_tokens/[CLS]/ids", "/post_processor/special_tokens/[SEP]", "/post_processor/special_tokens",
    "/decoder", "/decoder/type", "/added_tokens", "/added_tokens/0/id", "/added_tokens/1/content", "/added_tokens/2/special",
    "/truncation", "/padding", "/version",
];

const TOK_VALUES: &[&str] = &[
    "null", "0", "1", "-1", "4294967295", "4294967296", "9007199254740993", "1e300", "\"\"", "\"WordPiece\"", "\"BPE\"",
    "\"Unigram\"", "\"WordLevel\"", "\"[UNK]\"", "\"[NOPE]\"", "\"##\"", "\"\\u0000\"", "[]", "{}", "true", "[1, 2]",
    "{\"type\": \"Sequence\", \"normalizers\": []}", "{\"type\": \"Whitespace\"}", "{\"type\": \"ByteLevel\"}",
    "{\"type\": \"BertProcessing\", \"sep\": [\"[SEP]\", 3], \"cls\": [\"[CLS]\", 2]}",
    "{\"type\": \"BertProcessing\", \"sep\": [\"[SEP]\", 99999], \"cls\": [\"[CLS]\", 4294967295]}",
    "{\"type\": \"TemplateProcessing\", \"single\": [], \"pair\": [], \"special_tokens\": {}}",
    "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"[NOPE]\", \"type_id\": 0}}], \"pair\": [], \"special_tokens\": {}}",
    "{\"SpecialToken\": {\"id\": \"[X]\", \"type_id\": 4294967295}}", "{\"Sequence\": {\"id\": \"B\", \"type_id\": 0}}",
    "{\"id\": \"[CLS]\", \"ids\": [], \"tokens\": [\"[CLS]\"]}", "{\"id\": \"[SEP]\", \"ids\": [3, 3], \"tokens\": []}",
    "{\"max_length\": 0, \"strategy\": \"LongestFirst\", \"stride\": 0}", "{\"max_length\": 2, \"stride\": 5, \"strategy\": \"OnlyFirst\"}",
    "{\"strategy\": {\"Fixed\": 0}, \"direction\": \"Left\", \"pad_to_multiple_of\": 0, \"pad_id\": 4294967295, \"pad_type_id\": 0, \"pad_token\": \"[NOPE]\"}",
    "{\"strategy\": \"BatchLongest\", \"direction\": \"Right\", \"pad_to_multiple_of\": null, \"pad_id\": 0, \"pad_type_id\": 0, \"pad_token\": \"[PAD]\"}",
    "{\"type\": \"WordPiece\", \"vocab\": {}, \"unk_token\": \"[UNK]\"}", "{\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}, \"unk_token\": \"[UNK]\", \"continuing_subword_prefix\": \"##\", \"max_input_chars_per_word\": 0}",
    "{\"type\": \"WordLevel\", \"vocab\": {\"a\": 0}, \"unk_token\": \"[UNK]\"}", "{\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a a\"]}",
    "{\"type\": \"Unigram\", \"unk_id\": 5, \"vocab\": [[\"a\", 0.0]]}", "{\"type\": \"Unigram\", \"unk_id\": null, \"vocab\": []}",
    "[{\"id\": 0, \"content\": \"\", \"special\": true, \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false}]",
];

fn tok_edit() -> impl Strategy<Value = TokEdit> {
    prop_oneof![
        8 => (select(TOK_POINTERS), select(TOK_VALUES)).prop_map(|(p, v)| TokEdit::Set(p, v)),
        2 => select(TOK_POINTERS).prop_map(TokEdit::Remove),
        1 => text_edit(TOK_VALUES, &["}", "{", "],", "\"x\": 1,"]).prop_map(TokEdit::Text),
    ]
}

fn json_set(root: &mut serde_json::Value, pointer: &str, value: Option<serde_json::Value>) {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let Some(target) = root.pointer_mut(parent) else { return };
    match (target, value) {
        (serde_json::Value::Object(o), Some(v)) => {
            o.insert(last.to_string(), v);
        }
        (serde_json::Value::Object(o), None) => {
            o.remove(last);
        }
        (serde_json::Value::Array(a), v) => {
            if let Ok(i) = last.parse::<usize>() {
                if i < a.len() {
                    match v {
                        Some(v) => a[i] = v,
                        None => {
                            a.remove(i);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn tok_texts() -> impl Strategy<Value = Vec<(String, Option<usize>)>> {
    let text = prop_oneof![
        "\\PC{0,40}",
        ".{0,20}",
        select(&["", " ", "hi", "the cat sat on the mat!", "unloved dogs", "[CLS] [SEP] [PAD]", "\0", "字字字", "a\u{301}", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"][..]).prop_map(str::to_string),
    ];
    let max = prop::option::of(prop_oneof![0usize..4, Just(64), Just(usize::MAX)]);
    prop::collection::vec((text, max), 1..4)
}

#[test]
fn corrupt_tokenizers_never_panic() {
    let dir = scratch_model();
    let path = dir.path().join("tokenizer.json");
    let clean = tiny_model::tokenizer_json();
    let tally: [Tally; 2] = Default::default();
    run("tokenizer.json", 3_000, (prop::collection::vec(tok_edit(), 1..3), tok_texts()), |(edits, texts)| {
        let mut text = clean.clone();
        for e in &edits {
            text = match e {
                TokEdit::Text(t) => apply(&text, t),
                TokEdit::Set(p, v) => match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(mut root) => {
                        json_set(&mut root, p, Some(serde_json::from_str(v).unwrap()));
                        serde_json::to_string_pretty(&root).unwrap()
                    }
                    Err(_) => format!("{text}{v}"),
                },
                TokEdit::Remove(p) => match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(mut root) => {
                        json_set(&mut root, p, None);
                        serde_json::to_string_pretty(&root).unwrap()
                    }
                    Err(_) => text,
                },
            };
        }
        note(&format!("{text}\n--- texts: {texts:?}"));
        std::fs::write(&path, &text).unwrap();
        let loaded = TextTokenizer::load(&path);
        tally[0].count(&loaded);
        let tok = match loaded {
            Ok(t) => t,
            Err(e) => {
                let shown = check_error(&e)?;
                prop_assert!(shown.contains("tokenizer.json"), "the error does not name the file: {shown}");
                return Ok(());
            }
        };
        for (t, max) in &texts {
            let r = tok.encode(t, *max);
            tally[1].count(&r);
            if let Err(e) = r {
                check_error(&e)?;
            }
        }
        let refs: Vec<&str> = texts.iter().map(|(t, _)| t.as_str()).collect();
        if let Err(e) = tok.batch(&refs, texts[0].1, &Device::Cpu) {
            check_error(&e)?;
        }
        Ok(())
    });
    tally[0].show("load");
    tally[1].show("encode");
}

/// Inputs that crashed the `tokenizers` crate before `TextTokenizer::load` checked for them.
#[test]
fn known_tokenizer_crashes_are_errors() {
    let dir = scratch_model();
    let path = dir.path().join("tokenizer.json");
    let clean: serde_json::Value = serde_json::from_str(&tiny_model::tokenizer_json()).unwrap();
    let with = |pointer: &str, value: Option<serde_json::Value>| {
        let mut v = clean.clone();
        json_set(&mut v, pointer, value);
        v.to_string()
    };
    let cases = [
        // A JSON syntax error inside `decoder` (tokenizers: `expect("Helper")`).
        ("decoder syntax", clean.to_string().replace("\"cleanup\":true", "\"cleanup\":true,,"), "line 1 column"),
        // A template naming a special token it does not define (tokenizers: map index).
        ("undefined special token", with("/post_processor/special_tokens/[SEP]", None), "`[SEP]`"),
        // A single-text template using sequence B (tokenizers: `encodings[1]`).
        (
            "single uses B",
            with("/post_processor/single/1", Some(serde_json::json!({"Sequence": {"id": "B", "type_id": 0}}))),
            "sequence `B`",
        ),
        // BPE merges shorter than the subword prefix (tokenizers: slice index).
        (
            "bpe prefix",
            with(
                "/model",
                Some(serde_json::json!({"type": "BPE", "vocab": {"a": 0, "aa": 1}, "merges": ["a a"], "continuing_subword_prefix": "##"})),
            ),
            "tokenizers library failed",
        ),
    ];
    for (what, text, expect) in cases {
        std::fs::write(&path, &text).unwrap();
        let e = TextTokenizer::load(&path).err().unwrap_or_else(|| panic!("{what}: accepted"));
        let shown = e.to_string();
        assert!(shown.contains("tokenizer.json") && shown.contains(expect), "{what}: {shown}");
    }
}

/// Config values that pass validation but once made `load` reserve memory up front.
#[test]
fn many_layers_in_config_do_not_preallocate() {
    let dir = scratch_model();
    let mut obj: serde_json::Value = serde_json::from_str(&tiny_model::config_json()).unwrap();
    obj["num_hidden_layers"] = serde_json::json!(1 << 24);
    std::fs::write(dir.path().join("config.json"), obj.to_string()).unwrap();
    note("num_hidden_layers = 2^24");
    let e = model::load(dir.path(), DType::F32, &Device::Cpu).err().expect("16M layers accepted");
    assert!(e.to_string().contains("encoder.layer.2."), "{e}");
}

/// Text libyaml (serde_yaml) accepts but yaml-rust2 (the position index) reads differently.
#[test]
fn recipes_the_position_index_reads_differently() {
    let model = tiny_dir().display().to_string();
    let bad_hook = "interventions:\n  - kind: loreft\n    hooks: layers[0].block_ouput\n    rank: 4\n";
    for (text, at) in [
        // A byte-order mark at the start, and at the start of a later line.
        (format!("\u{feff}model:\n  path: {model}\n{bad_hook}"), (5, 12)),
        (format!("model:\n  path: {model}\n\u{feff}\n{bad_hook}"), (6, 12)),
        // A quoted scalar continued at column 0: the error points at the enclosing entry.
        (
            format!("model:\n  path: {model}\ninterventions:\n  - kind: loreft\n    rank: 4\n    hooks: \"layers[0]\n.block_output\"\n"),
            (4, 5),
        ),
    ] {
        let loaded = LoadedRecipe::parse(&recipe_path(), &text).unwrap_or_else(|e| panic!("{e}\n{text:?}"));
        let e = Plan::new(loaded).err().expect("accepted");
        let Error::Recipe { location: Some(l), .. } = &e else { panic!("no location: {e}\n{text}") };
        assert_eq!((l.line, l.column), at, "{e}\n{text}");
    }
}

#[test]
fn tiny_model_is_valid() {
    // The fixture the fuzzers mutate must itself load and run.
    let dir = tiny_dir();
    let info = model::inspect(dir).unwrap();
    assert_eq!(reft_core::hooks::HookSurface::num_layers(&info.config), tiny_model::LAYERS);
    let m = model::load(dir, DType::F32, &Device::Cpu).unwrap();
    let tok = model::load_tokenizer(dir).unwrap();
    let batch = tok.batch(&["the cat sat on the mat", "hi"], Some(16), &Device::Cpu).unwrap();
    let h = m.forward(&batch, &NoHooks).unwrap();
    assert_eq!(h.dims(), &[2, 8, tiny_model::HIDDEN]);
    assert_eq!(tok.encode("the cats", None).unwrap(), vec![2, 5, 7, 34, 3]);
    assert_eq!(tok.encode("the cats", Some(3)).unwrap(), vec![2, 5, 3]);
    assert_eq!(tok.encode("the cats", Some(2)).unwrap(), vec![2, 3]);
    // Shorter than the special tokens: an error (`tokenizers` itself would overflow).
    let e = tok.encode("the cats", Some(1)).unwrap_err().to_string();
    assert!(e.contains("max_length 1 is too small"), "{e}");
    for r in RECIPES {
        let text = r.replace("MODEL", &dir.display().to_string());
        let plan = Plan::new(LoadedRecipe::parse(&recipe_path(), &text).unwrap()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(!plan.interventions.is_empty() || text.contains("interventions: []"));
    }
}
