//! Finding a Hugging Face hub model (`timm/tresnet_l.miil_in1k_448`) in the local cache, offline.
//!
//! The cache layout is the one `huggingface_hub` writes:
//! `<cache>/models--<org>--<name>/refs/<revision>` holds a commit hash, and
//! `<cache>/models--<org>--<name>/snapshots/<hash>/` holds the files (usually symlinks into
//! `blobs/`). The cache directory is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Whether `spec` reads like a hub repository id (`org/name`, optionally `hf-hub:`-prefixed and
/// `@revision`-suffixed) rather than a path.
pub fn looks_like_hub_id(spec: &str) -> bool {
    let spec = spec.strip_prefix("hf-hub:").unwrap_or(spec);
    let repo = spec.split('@').next().unwrap_or(spec);
    let mut parts = repo.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let valid = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    valid(org) && valid(name)
}

/// The hub cache directory from the environment.
pub fn hub_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("HF_HUB_CACHE") {
        return Some(dir);
    }
    if let Some(home) = var("HF_HOME") {
        return Some(home.join("hub"));
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return Some(xdg.join("huggingface").join("hub"));
    }
    var("HOME").map(|h| h.join(".cache").join("huggingface").join("hub"))
}

/// The snapshot directory of `repo_id` (`org/name[@revision]`) inside `cache_dir`.
pub fn resolve_snapshot(cache_dir: &Path, repo_id: &str) -> Result<PathBuf> {
    let repo_id = repo_id.strip_prefix("hf-hub:").unwrap_or(repo_id);
    let (repo, revision) = match repo_id.split_once('@') {
        Some((repo, rev)) => (repo, rev),
        None => (repo_id, "main"),
    };
    let safe_part = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let repo_ok = repo.split('/').count() == 2 && repo.split('/').all(safe_part);
    // Revisions are branch or tag names (`main`, `refs/pr/1`) or commit hashes: no `..`, no
    // absolute path, nothing that leaves the cache.
    let revision_ok = revision.split('/').all(safe_part);
    if !repo_ok || !revision_ok {
        return Err(Error::WeightsNotFound(format!(
            "`{repo_id}` is not a hub id of the form org/name[@revision] (letters, digits, `.`, \
             `_`, `-`; no `..`)"
        )));
    }
    let repo_dir = cache_dir.join(format!("models--{}", repo.replace('/', "--")));
    let not_cached = |detail: String| {
        Error::WeightsNotFound(format!(
            "`{repo}` is not in the local Hugging Face cache ({detail}). This program never \
             downloads; fetch it once with `huggingface-cli download {repo}` (or \
             `hf download {repo}`), or point --weights at a model.safetensors / .pth file",
        ))
    };
    if !repo_dir.is_dir() {
        return Err(not_cached(format!("{} does not exist", repo_dir.display())));
    }
    let snapshots = repo_dir.join("snapshots");
    let ref_file = repo_dir.join("refs").join(revision);
    let commit = match tresnet_io::read_text_limited(&ref_file, 4096) {
        Ok(hash) => {
            let hash = hash.trim();
            if hash.is_empty() || hash.len() > 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::checkpoint(
                    &ref_file,
                    format!(
                        "holds {:?}, not a commit hash",
                        hash.chars().take(80).collect::<String>()
                    ),
                ));
            }
            hash.to_string()
        }
        // A revision given as a commit hash has no ref file.
        Err(_) if snapshots.join(revision).is_dir() => revision.to_string(),
        Err(_) => {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&snapshots)
                .map_err(|e| Error::io(&snapshots, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            if revision == "main" && found.len() == 1 {
                return Ok(found.remove(0));
            }
            return Err(not_cached(format!(
                "no ref `{revision}` and {} snapshots under {}",
                found.len(),
                snapshots.display()
            )));
        }
    };
    let snapshot = snapshots.join(&commit);
    if snapshot.is_dir() {
        Ok(snapshot)
    } else {
        Err(not_cached(format!(
            "ref `{revision}` names commit {commit}, but {} is missing",
            snapshot.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_told_from_paths() {
        assert!(looks_like_hub_id("timm/tresnet_l.miil_in1k_448"));
        assert!(looks_like_hub_id("hf-hub:timm/tresnet_m.miil_in21k@main"));
        assert!(!looks_like_hub_id("weights/model.safetensors/extra"));
        assert!(!looks_like_hub_id("../model.pth"));
        assert!(!looks_like_hub_id("model.pth"));
        let cache = tempfile::tempdir().unwrap();
        for hostile in [
            "org/name@../../x",
            "org/..@main",
            "../x/name",
            "org/name@/etc",
            "a/b/c",
        ] {
            let err = resolve_snapshot(cache.path(), hostile)
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a hub id"), "{hostile}: {err}");
        }
        let repo = cache.path().join("models--org--name");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots")).unwrap();
        std::fs::write(repo.join("refs/main"), "../../../../etc\n").unwrap();
        let err = resolve_snapshot(cache.path(), "org/name")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a commit hash"), "{err}");
    }

    #[test]
    fn resolves_ref_and_reports_missing_models() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("models--timm--tresnet_m.miil_in1k");
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        let snap = resolve_snapshot(dir.path(), "timm/tresnet_m.miil_in1k").unwrap();
        assert!(snap.ends_with("snapshots/abc123"));
        let err = resolve_snapshot(dir.path(), "timm/tresnet_xl.miil_in1k")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("timm/tresnet_xl.miil_in1k") && err.contains("download"),
            "{err}"
        );
    }
}
