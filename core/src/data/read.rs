//! Readers for the data formats a recipe may name. Errors say the file and line.

use super::Example;
use crate::error::{Error, Result};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tsv,
    Csv,
    Jsonl,
}

impl Format {
    /// From the recipe's `format`, else the file's extension.
    pub fn of(path: &Path, declared: Option<crate::recipe::DataFormat>) -> Result<Format> {
        use crate::recipe::DataFormat as D;
        if let Some(d) = declared {
            return Ok(match d {
                D::Tsv => Format::Tsv,
                D::Csv => Format::Csv,
                D::Jsonl => Format::Jsonl,
            });
        }
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("tsv") | Some("tab") => Ok(Format::Tsv),
            Some("csv") => Ok(Format::Csv),
            Some("jsonl") | Some("ndjson") | Some("json") => Ok(Format::Jsonl),
            _ => Err(Error::Other(format!(
                "{}: cannot tell the data format from the extension; set `data.format` to tsv, csv or jsonl",
                path.display()
            ))),
        }
    }
}

/// Read `(text, label)` examples. A label is an integer id, or one of `label_names`.
pub fn read_examples(
    path: &Path,
    format: Format,
    text_col: &str,
    label_col: &str,
    num_labels: usize,
    label_names: Option<&[String]>,
) -> Result<Vec<Example>> {
    let content = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let at = |line: usize, m: String| Error::Other(format!("{}:{line}: {m}", path.display()));
    let parse_label = |line: usize, raw: &str| -> Result<usize> {
        let raw = raw.trim();
        if let Ok(id) = raw.parse::<i64>() {
            if id >= 0 && (id as usize) < num_labels {
                return Ok(id as usize);
            }
            return Err(at(line, format!("label {id} is outside 0..{num_labels}")));
        }
        if let Some(i) = label_names.and_then(|n| n.iter().position(|x| x == raw)) {
            return Ok(i);
        }
        Err(at(line, format!("label `{raw}` is neither an id in 0..{num_labels} nor one of the recipe's `task.labels`")))
    };
    let mut out = Vec::new();
    match format {
        Format::Tsv | Format::Csv => {
            let sep = if format == Format::Tsv { '\t' } else { ',' };
            let mut lines = content.lines().enumerate();
            let (_, header) = lines.next().ok_or_else(|| at(1, "empty file: expected a header line".into()))?;
            let cols: Vec<String> = split_row(header, sep).into_iter().map(|c| c.trim().to_string()).collect();
            let find = |name: &str| {
                cols.iter().position(|c| c == name).ok_or_else(|| {
                    at(1, format!("no column `{name}` in the header (columns: {})", cols.join(", ")))
                })
            };
            let (ti, li) = (find(text_col)?, find(label_col)?);
            for (n, line) in lines {
                if line.trim().is_empty() {
                    continue;
                }
                let fields = split_row(line, sep);
                let get = |i: usize| {
                    fields.get(i).ok_or_else(|| at(n + 1, format!("expected {} fields, found {}", cols.len(), fields.len())))
                };
                out.push(Example {
                    text: get(ti)?.to_string(),
                    label: parse_label(n + 1, get(li)?)?,
                });
            }
        }
        Format::Jsonl => {
            for (n, line) in content.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| at(n + 1, format!("not JSON: {e}")))?;
                let text = v
                    .get(text_col)
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| at(n + 1, format!("no string field `{text_col}`")))?;
                let label = match v.get(label_col) {
                    Some(serde_json::Value::Number(x)) => x.to_string(),
                    Some(serde_json::Value::String(s)) => s.clone(),
                    _ => return Err(at(n + 1, format!("no field `{label_col}`"))),
                };
                out.push(Example {
                    text: text.to_string(),
                    label: parse_label(n + 1, &label)?,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Other(format!("{}: no examples", path.display())));
    }
    Ok(out)
}

/// Split one delimited row; CSV fields may be double-quoted with `""` escapes.
pub(super) fn split_row(line: &str, sep: char) -> Vec<String> {
    if sep == '\t' {
        return line.split('\t').map(str::to_string).collect();
    }
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            c if c == sep && !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, content: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("reft-read-{}-{name}", std::process::id()));
        std::fs::write(&p, content).unwrap();
        p
    }

    #[test]
    fn reads_each_format() {
        let names = vec!["neg".to_string(), "pos".to_string()];
        let t = write("a.tsv", "id\tlabel\ttext\n1\t1\tgood film\n2\t0\tbad\n");
        let c = write("a.csv", "text,label\n\"great, really\",pos\nmeh,0\n");
        let j = write("a.jsonl", "{\"text\": \"fine\", \"label\": 1}\n\n{\"text\": \"no\", \"label\": \"neg\"}\n");
        let ex = |p: &Path, f| read_examples(p, f, "text", "label", 2, Some(&names)).unwrap();
        assert_eq!(ex(&t, Format::Tsv)[0], Example { text: "good film".into(), label: 1 });
        assert_eq!(ex(&c, Format::Csv)[0], Example { text: "great, really".into(), label: 1 });
        assert_eq!(ex(&j, Format::Jsonl)[1].label, 0);
    }

    #[test]
    fn errors_name_file_and_line() {
        let t = write("b.tsv", "id\tlabel\ttext\n1\t1\tok\n2\t7\tbad label\n");
        let e = read_examples(&t, Format::Tsv, "text", "label", 2, None).unwrap_err().to_string();
        assert!(e.contains("b.tsv:3") && e.contains("label 7"), "{e}");
        let e = read_examples(&t, Format::Tsv, "sentence", "label", 2, None).unwrap_err().to_string();
        assert!(e.contains("no column `sentence`"), "{e}");
    }
}
