//! Expanding the paths a recipe names: `~`, `$VAR`/`${VAR}`, and relative paths.

use crate::cache;
use std::path::{Path, PathBuf};

/// Expand `~` and environment variables, then resolve a relative result against `base`
/// (the recipe's folder). `REFT_CACHE` falls back to reft's default cache folder so recipes
/// can say `${REFT_CACHE}/models/…` whether or not the variable is set.
pub fn expand(text: &str, base: &Path) -> Result<PathBuf, String> {
    let mut out = String::new();
    let mut rest = text;
    if let Some(r) = rest.strip_prefix("~/").or(if rest == "~" { Some("") } else { None }) {
        let home = std::env::var("HOME").map_err(|_| "`~` used but HOME is not set".to_string())?;
        out.push_str(&home);
        out.push('/');
        rest = r;
    }
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(b) = after.strip_prefix('{') {
            let end = b.find('}').ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
            (&b[..end], &b[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            return Err(format!("`$` without a variable name in `{text}`"));
        }
        let value = match std::env::var(name) {
            Ok(v) => v,
            Err(_) if name == "REFT_CACHE" => cache::cache_dir().display().to_string(),
            Err(_) => return Err(format!("environment variable `{name}` is not set (used in `{text}`)")),
        };
        out.push_str(&value);
        rest = tail;
    }
    out.push_str(rest);
    let p = PathBuf::from(out);
    Ok(if p.is_relative() { base.join(p) } else { p })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_and_relative_paths() {
        std::env::set_var("REFT_TEST_VAR", "/data");
        let base = Path::new("/recipes");
        assert_eq!(expand("${REFT_TEST_VAR}/x", base).unwrap(), PathBuf::from("/data/x"));
        assert_eq!(expand("$REFT_TEST_VAR/x", base).unwrap(), PathBuf::from("/data/x"));
        assert_eq!(expand("models/m", base).unwrap(), PathBuf::from("/recipes/models/m"));
        assert!(expand("${NOT_SET_ANYWHERE_42}/x", base).unwrap_err().contains("NOT_SET_ANYWHERE_42"));
        assert!(expand("${OPEN", base).is_err());
    }
}
