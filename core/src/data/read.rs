//! Readers for the data formats a recipe may name. Errors say the file and line.

use super::table::{read_text, Table};
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
    /// The field delimiter of a delimited format (JSONL has none).
    pub fn delimiter(self) -> u8 {
        if self == Format::Csv {
            b','
        } else {
            b'\t'
        }
    }

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
    let content = read_text(path)?;
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
            let table = Table::read(path, &content, format.delimiter())?;
            let (ti, li) = (table.column(path, text_col)?, table.column(path, label_col)?);
            for (line, fields) in &table.rows {
                out.push(Example { text: fields[ti].clone(), label: parse_label(*line, &fields[li])? });
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
        return Err(Error::Other(format!("{}: no examples (every line is empty)", path.display())));
    }
    Ok(out)
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
