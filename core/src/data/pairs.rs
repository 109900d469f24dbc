//! Instruction/response pairs for causal-LM training, read by the columns (or JSON fields)
//! a recipe names. Errors say the file and line.

use super::read::Format;
use super::table::{read_text, Table};
use crate::error::{Error, Result};
use std::path::Path;

/// One training pair: the prompt the model sees and the response it learns to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub prompt: String,
    pub response: String,
    /// 1-based line of the file it came from (for messages about this pair).
    pub line: usize,
}

/// Read `(prompt, response)` pairs from the fields `prompt_col` and `response_col`.
/// JSONL is the natural format (responses may span lines); TSV/CSV work too, with a header.
pub fn read_pairs(path: &Path, format: Format, prompt_col: &str, response_col: &str) -> Result<Vec<Pair>> {
    let content = read_text(path)?;
    let at = |line: usize, m: String| Error::Other(format!("{}:{line}: {m}", path.display()));
    let mut out = Vec::new();
    match format {
        Format::Jsonl => {
            for (n, line) in content.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(n + 1, format!("not JSON: {e}")))?;
                let field = |name: &str| {
                    v.get(name).and_then(|t| t.as_str()).map(str::to_string).ok_or_else(|| {
                        let keys = v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_default();
                        at(n + 1, format!("no string field `{name}` (fields: {keys}); set `data.prompt` / `data.response` to the names used"))
                    })
                };
                out.push(Pair { prompt: field(prompt_col)?, response: field(response_col)?, line: n + 1 });
            }
        }
        Format::Tsv | Format::Csv => {
            let table = Table::read(path, &content, format.delimiter())?;
            let (pi, ri) = (table.column(path, prompt_col)?, table.column(path, response_col)?);
            for (line, fields) in &table.rows {
                out.push(Pair { prompt: fields[pi].clone(), response: fields[ri].clone(), line: *line });
            }
        }
    }
    if let Some(p) = out.iter().find(|p| p.prompt.trim().is_empty()) {
        return Err(at(p.line, "the prompt is empty".into()));
    }
    if let Some(p) = out.iter().find(|p| p.response.trim().is_empty()) {
        return Err(at(p.line, "the response is empty: a pair without one teaches nothing".into()));
    }
    if out.is_empty() {
        return Err(Error::Other(format!("{}: no examples", path.display())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, content: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("reft-pairs-{}-{name}", std::process::id()));
        std::fs::write(&p, content).unwrap();
        p
    }

    #[test]
    fn reads_pairs_and_names_bad_lines() {
        let j = write("a.jsonl", "{\"instruction\": \"Hi\", \"response\": \"👋\"}\n\n{\"q\": \"x\", \"a\": \"y\"}\n");
        let e = read_pairs(&j, Format::Jsonl, "instruction", "response").unwrap_err().to_string();
        assert!(e.contains("a.jsonl:3") && e.contains("no string field `instruction`") && e.contains("fields: a, q"), "{e}");
        let j = write("b.jsonl", "{\"q\": \"Hi\", \"a\": \"line one\\nline two\"}\n");
        let p = read_pairs(&j, Format::Jsonl, "q", "a").unwrap();
        assert_eq!(p, vec![Pair { prompt: "Hi".into(), response: "line one\nline two".into(), line: 1 }]);
        let t = write("c.tsv", "instruction\tresponse\nHi\t👋\nBye\t\n");
        let e = read_pairs(&t, Format::Tsv, "instruction", "response").unwrap_err().to_string();
        assert!(e.contains("c.tsv:3") && e.contains("response is empty"), "{e}");
        let e = read_pairs(&write("d.jsonl", "{\"instruction\": 3"), Format::Jsonl, "instruction", "response").unwrap_err().to_string();
        assert!(e.contains("d.jsonl:1") && e.contains("not JSON"), "{e}");
    }
}
