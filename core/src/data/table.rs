//! Delimited files (TSV, CSV) and the text of any data file: read once, with every error
//! naming the file and the line. CSV follows RFC 4180 through the `csv` crate (quoted
//! fields may hold the delimiter, quotes and newlines); TSV has no quoting, as written by
//! most tools, so a `"` in a review stays a character.

use crate::error::{Error, Result};
use std::path::Path;

/// A data file's text. Invalid UTF-8 is an error naming the line it is on.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        Error::Other(format!("{}:{line}: not valid UTF-8 (save the file as UTF-8)", path.display()))
    })
}

/// A header and its rows, each row with the 1-based line it starts on.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<(usize, Vec<String>)>,
}

impl Table {
    pub fn read(path: &Path, content: &str, delimiter: u8) -> Result<Table> {
        let at = |line: u64, m: String| Error::Other(format!("{}:{line}: {m}", path.display()));
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .quoting(delimiter != b'\t')
            .has_headers(false)
            .flexible(true)
            .from_reader(content.as_bytes());
        let mut records = reader.records();
        let header: Vec<String> = match records.next() {
            None => return Err(at(1, "empty file: expected a header line".into())),
            Some(r) => r.map_err(|e| at(1, format!("header: {e}")))?.iter().map(|c| c.trim().to_string()).collect(),
        };
        for (i, name) in header.iter().enumerate() {
            if let Some(j) = header[..i].iter().position(|c| c == name) {
                return Err(at(1, format!("column `{name}` appears twice in the header (columns {} and {})", j + 1, i + 1)));
            }
        }
        let mut rows = Vec::new();
        for record in records {
            let record = record.map_err(|e| at(e.position().map_or(0, |p| p.line()), format!("{e}")))?;
            let line = record.position().map_or(0, |p| p.line()) as usize;
            if record.iter().all(|f| f.trim().is_empty()) {
                continue;
            }
            if record.len() != header.len() {
                return Err(at(line as u64, format!("expected {} fields (as the header has), found {}", header.len(), record.len())));
            }
            rows.push((line, record.iter().map(str::to_string).collect()));
        }
        if rows.is_empty() {
            return Err(at(2, "no examples: the file has a header line only".into()));
        }
        Ok(Table { header, rows })
    }

    /// The index of column `name`, or an error listing the header's columns.
    pub fn column(&self, path: &Path, name: &str) -> Result<usize> {
        self.header.iter().position(|c| c == name).ok_or_else(|| {
            Error::Other(format!("{}:1: no column `{name}` in the header (columns: {})", path.display(), self.header.join(", ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(content: &str, sep: u8) -> Result<Table> {
        Table::read(Path::new("d.csv"), content, sep)
    }

    #[test]
    fn quoted_csv_fields_may_hold_newlines_and_lines_are_counted_in_the_file() {
        let t = table("text,label\n\"two\nlines, one field\",1\nplain,0\n", b',').unwrap();
        assert_eq!(t.rows[0], (2, vec!["two\nlines, one field".to_string(), "1".to_string()]));
        assert_eq!(t.rows[1].0, 4);
    }

    #[test]
    fn malformed_tables_name_the_line() {
        let e = |c: &str, sep| table(c, sep).err().unwrap().to_string();
        assert!(e("text\tlabel\ttext\na\t1\tb\n", b'\t').contains("d.csv:1: column `text` appears twice"));
        assert!(e("text\tlabel\n", b'\t').contains("d.csv:2: no examples"));
        assert!(e("text\tlabel\na\t1\nb\n", b'\t').contains("d.csv:3: expected 2 fields"));
        assert!(e("", b',').contains("d.csv:1: empty file"));
        // A TSV has no quoting: a quote is text.
        assert_eq!(table("text\tlabel\n\"quoted\" word\t1\n", b'\t').unwrap().rows[0].1[0], "\"quoted\" word");
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let p = std::env::temp_dir().join(format!("reft-table-{}.tsv", std::process::id()));
        std::fs::write(&p, b"text\tlabel\nfine\t1\nbad \xff byte\t0\n").unwrap();
        let e = read_text(&p).unwrap_err().to_string();
        std::fs::remove_file(&p).unwrap();
        assert!(e.contains(":3: not valid UTF-8"), "{e}");
    }
}
