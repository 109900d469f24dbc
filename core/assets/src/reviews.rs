//! The labelled sentence data: parsing Hutto & Gilbert's (ICWSM 2014) ground-truth files,
//! labelling by the sign of the mean rating, the movie-review split, and the TSV files.
//!
//! What the files really are (vaderSentiment 3.3.2 sdist, `hutto_ICWSM_2014.tar.gz`):
//! - All four `*_GroundTruth.txt` are valid UTF-8 (movie reviews hold 337 non-ASCII characters,
//!   e.g. `é`, `–`, `’`; tweets 2; amazon and nyt are pure ASCII). Decoding still falls back to
//!   Latin-1 (lossless, byte = code point) should a file not be UTF-8.
//! - CRLF line endings, and the last line has no line ending.
//! - `id<TAB>mean rating<TAB>text`; ids are integers 1..=N in the movie and tweet files, but
//!   `<doc>_<sentence>` strings (e.g. `309_8`) in the amazon and nyt files, so ids stay strings.
//! - Some texts carry leading/trailing spaces (amazon 11, tweets 1): trimmed. The movie texts keep
//!   the Pang & Lee tokenisation quirks (`''Conan''` for quotes, `co writer`): left as they are.
//! - Movie reviews: 10,605 lines, 5,242 positive, 5,326 negative, 37 zero (dropped).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use super::AssetError;

/// The movie-review ground-truth file's name inside the ICWSM 2014 archive.
pub const MOVIE_REVIEWS_SOURCE: &str = "movieReviewSnippets_GroundTruth.txt";

/// The other domains, kept unsplit for transfer tests: (folder name under `data/`, source file).
pub const TRANSFER_DOMAINS: [(&str, &str); 3] = [
    ("tweets", "tweets_GroundTruth.txt"),
    ("amazon", "amazonReviewSnippets_GroundTruth.txt"),
    ("nyt", "nytEditorialSnippets_GroundTruth.txt"),
];

/// The TSV header line (without newline).
pub const TSV_HEADER: &str = "id\tlabel\ttext";

/// One labelled sentence.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub id: String,
    /// 1 = positive (mean rating > 0), 0 = negative (< 0).
    pub label: u8,
    pub text: String,
}

/// A parsed ground-truth file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroundTruth {
    /// Sentences with a non-zero mean rating, in file order.
    pub examples: Vec<Example>,
    /// Sentences with mean rating exactly 0 (no polarity), left out.
    pub dropped_neutral: usize,
    /// The file was not UTF-8 and was read as Latin-1.
    pub latin1: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Dev,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Dev, Split::Test];

    /// `"train"`, `"dev"`, `"test"`: also the TSV file stem.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }

    /// The movie-review split rule: id % 10 == 0 → test, id % 10 == 1 → dev, else train.
    pub fn of_id(id: u64) -> Split {
        match id % 10 {
            0 => Split::Test,
            1 => Split::Dev,
            _ => Split::Train,
        }
    }
}

/// Positive and negative counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pos: usize,
    pub neg: usize,
}

impl Counts {
    pub fn of(examples: &[Example]) -> Counts {
        let pos = examples.iter().filter(|e| e.label == 1).count();
        Counts {
            pos,
            neg: examples.len() - pos,
        }
    }
    pub fn total(self) -> usize {
        self.pos + self.neg
    }
}

/// The movie-review split sizes every documented figure rests on (train, dev, test).
pub const MOVIE_SPLIT_COUNTS: [(Split, Counts); 3] = [
    (
        Split::Train,
        Counts {
            pos: 4172,
            neg: 4285,
        },
    ),
    (Split::Dev, Counts { pos: 537, neg: 520 }),
    (Split::Test, Counts { pos: 533, neg: 521 }),
];

/// UTF-8 if valid, else Latin-1. Returns the text and whether Latin-1 was used.
pub fn decode(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.trim_start_matches('\u{feff}').to_owned(), false),
        Err(_) => (bytes.iter().map(|&b| b as char).collect(), true),
    }
}

/// Parses `id<TAB>rating<TAB>text` lines (any line ending; blank lines skipped).
/// `source` names the file in errors.
pub fn parse_ground_truth(bytes: &[u8], source: &Path) -> Result<GroundTruth, AssetError> {
    let (text, latin1) = decode(bytes);
    let mut out = GroundTruth {
        latin1,
        ..Default::default()
    };
    for (i, line) in text.split('\n').enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let bad =
            |what: &str| AssetError::data(source, format!("line {}: {what}: {line:?}", i + 1));
        let mut fields = line.splitn(3, '\t');
        let (Some(id), Some(rating), Some(sentence)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("expected id<TAB>rating<TAB>text"));
        };
        let rating: f64 = rating
            .trim()
            .parse()
            .map_err(|_| bad("rating is not a number"))?;
        if !rating.is_finite() {
            return Err(bad("rating is not finite"));
        }
        if rating == 0.0 {
            out.dropped_neutral += 1;
            continue;
        }
        out.examples.push(Example {
            id: id.trim().to_owned(),
            label: u8::from(rating > 0.0),
            text: clean_text(sentence),
        });
    }
    Ok(out)
}

/// Tabs, CR and LF become spaces; surrounding whitespace is trimmed.
pub fn clean_text(s: &str) -> String {
    s.replace(['\t', '\r', '\n'], " ").trim().to_owned()
}

/// Splits movie reviews by [`Split::of_id`]; ids must be unique non-negative integers.
/// Returns train, dev, test (in that order), each in file order.
pub fn split_movie_reviews(
    examples: &[Example],
    source: &Path,
) -> Result<[Vec<Example>; 3], AssetError> {
    let mut parts: [Vec<Example>; 3] = Default::default();
    let mut seen = HashSet::new();
    for e in examples {
        let id: u64 = e
            .id
            .parse()
            .map_err(|_| AssetError::data(source, format!("id {:?} is not an integer", e.id)))?;
        if !seen.insert(id) {
            return Err(AssetError::data(source, format!("id {id} appears twice")));
        }
        let slot = Split::ALL
            .iter()
            .position(|&s| s == Split::of_id(id))
            .unwrap();
        parts[slot].push(e.clone());
    }
    Ok(parts)
}

/// Checks split sizes against [`MOVIE_SPLIT_COUNTS`].
pub fn check_movie_split(parts: &[Vec<Example>; 3], source: &Path) -> Result<(), AssetError> {
    for ((split, want), part) in MOVIE_SPLIT_COUNTS.iter().zip(parts) {
        let got = Counts::of(part);
        if got != *want {
            return Err(AssetError::data(
                source,
                format!(
                    "{} split has {} pos / {} neg, expected {} / {}",
                    split.name(),
                    got.pos,
                    got.neg,
                    want.pos,
                    want.neg
                ),
            ));
        }
    }
    Ok(())
}

/// Writes `id\tlabel\ttext` with a header line.
pub fn write_tsv(path: &Path, examples: &[Example]) -> Result<(), AssetError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(AssetError::io("create folder", parent))?;
    }
    let io = AssetError::io("write", path);
    let write = || -> std::io::Result<()> {
        let mut w = BufWriter::new(File::create(path)?);
        writeln!(w, "{TSV_HEADER}")?;
        for e in examples {
            writeln!(
                w,
                "{}\t{}\t{}",
                clean_text(&e.id),
                e.label,
                clean_text(&e.text)
            )?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    write().map_err(io)
}

/// Reads a TSV written by [`write_tsv`].
pub fn read_tsv(path: &Path) -> Result<Vec<Example>, AssetError> {
    let text = fs::read_to_string(path).map_err(AssetError::io("read", path))?;
    let mut lines = text.lines();
    if lines.next() != Some(TSV_HEADER) {
        return Err(AssetError::data(
            path,
            format!("first line is not the header {TSV_HEADER:?}"),
        ));
    }
    lines
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, line)| {
            let bad = || {
                AssetError::data(
                    path,
                    format!("line {}: expected id<TAB>0|1<TAB>text: {line:?}", i + 2),
                )
            };
            let mut f = line.splitn(3, '\t');
            let (Some(id), Some(label), Some(text)) = (f.next(), f.next(), f.next()) else {
                return Err(bad());
            };
            let label = match label {
                "0" => 0,
                "1" => 1,
                _ => return Err(bad()),
            };
            Ok(Example {
                id: id.to_owned(),
                label,
                text: text.to_owned(),
            })
        })
        .collect()
}

/// The SPLIT.md written beside the movie-review TSVs.
pub(crate) fn split_readme(
    parts: &[Vec<Example>; 3],
    dropped: usize,
    sdist_sha256: &str,
) -> String {
    let mut rows = String::new();
    for (split, part) in Split::ALL.iter().zip(parts) {
        let c = Counts::of(part);
        rows += &format!(
            "| {} | {} | {} | {} |\n",
            split.name(),
            c.total(),
            c.pos,
            c.neg
        );
    }
    format!(
        "# Movie-review polarity: how this split was made\n\n\
         Source: `{MOVIE_REVIEWS_SOURCE}` (Pang & Lee sentence polarity / Rotten Tomatoes snippets, \
         mean of human ratings from Hutto & Gilbert, ICWSM 2014), from \
         `vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz` in the PyPI sdist \
         `vadersentiment==3.3.2` (MIT; sha256 {sdist_sha256}). A copy is in `source/`.\n\n\
         - Each line is `id<TAB>mean rating<TAB>text` (UTF-8, CRLF).\n\
         - label = 1 if rating > 0, 0 if rating < 0; rating exactly 0 is dropped ({dropped} sentences).\n\
         - split by id, no randomness: id % 10 == 0 -> test, id % 10 == 1 -> dev, otherwise -> train.\n\
         - Files keep the source order; text has tabs/newlines replaced by spaces and is trimmed.\n\
         - Format: header `id<TAB>label<TAB>text`, one example per line.\n\n\
         | split | examples | positive | negative |\n|---|---|---|---|\n{rows}\n\
         Written by `reft setup` (reft-core `assets` module).\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::scratch;

    const SAMPLE: &[u8] = b"10\t2.5\tgood film\r\n11\t-1.2\tbad  film \r\n12\t0\tneutral\r\n13\t0.1\ttab\there\r\n20\t-3\tawful";

    #[test]
    fn parse_labels_and_drops_zero() {
        let gt = parse_ground_truth(SAMPLE, Path::new("s")).unwrap();
        assert_eq!(gt.dropped_neutral, 1);
        assert!(!gt.latin1);
        let got: Vec<(&str, u8, &str)> = gt
            .examples
            .iter()
            .map(|e| (e.id.as_str(), e.label, e.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10", 1, "good film"),
                ("11", 0, "bad  film"),
                ("13", 1, "tab here"),
                ("20", 0, "awful")
            ]
        );
    }

    #[test]
    fn split_by_id() {
        let gt = parse_ground_truth(SAMPLE, Path::new("s")).unwrap();
        let [train, dev, test] = split_movie_reviews(&gt.examples, Path::new("s")).unwrap();
        let ids = |v: &[Example]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&test), ["10", "20"]);
        assert_eq!(ids(&dev), ["11"]);
        assert_eq!(ids(&train), ["13"]);
        assert_eq!(Split::of_id(0), Split::Test);
        assert_eq!(Split::of_id(10_601), Split::Dev);
        assert_eq!(Split::of_id(7), Split::Train);
        // counts that do not match the documented ones are refused
        assert!(check_movie_split(&[train, dev, test], Path::new("s")).is_err());
    }

    #[test]
    fn string_ids_and_bad_lines() {
        let gt = parse_ground_truth(b"309_8\t-2.75\tit did lock up\n", Path::new("s")).unwrap();
        assert_eq!(gt.examples[0].id, "309_8");
        assert!(split_movie_reviews(&gt.examples, Path::new("s")).is_err());
        let dup = parse_ground_truth(b"1\t1\ta\n1\t-1\tb\n", Path::new("s")).unwrap();
        assert!(split_movie_reviews(&dup.examples, Path::new("s"))
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let err =
            parse_ground_truth(b"1\t1\tok\n2\tx\tbad rating\n", Path::new("f.txt")).unwrap_err();
        assert!(err.to_string().contains("f.txt: line 2"), "{err}");
        assert!(parse_ground_truth(b"only\tone tab\n", Path::new("s")).is_err());
    }

    #[test]
    fn latin1_fallback() {
        let gt = parse_ground_truth(b"1\t1\tcaf\xe9\r\n", Path::new("s")).unwrap();
        assert!(gt.latin1);
        assert_eq!(gt.examples[0].text, "café");
        assert_eq!(decode("caf\u{e9}".as_bytes()), ("café".to_string(), false));
    }

    #[test]
    fn tsv_round_trip() {
        let dir = scratch("tsv");
        let path = dir.join("sub/x.tsv");
        let examples = vec![
            Example {
                id: "1".into(),
                label: 1,
                text: "a\tb\nc".into(),
            },
            Example {
                id: "2".into(),
                label: 0,
                text: "naïve – ok".into(),
            },
        ];
        write_tsv(&path, &examples).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, "id\tlabel\ttext\n1\t1\ta b c\n2\t0\tnaïve – ok\n");
        let back = read_tsv(&path).unwrap();
        assert_eq!(back[0].text, "a b c");
        assert_eq!(back[1], examples[1]);
    }
}
