//! `plan --out DIR`: the plan directory is replaced as a whole, and only when it holds nothing
//! but what `meshfed plan` wrote there. The marker file [`PLAN_MARKER`] lists every file written,
//! so a file a user added to a plan directory (`notes.txt`, an edited copy) is seen and the
//! replacement refused (exit 2) instead of deleting it.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use super::CliError;
use crate::{atomic_files, plan};

/// Marker file that identifies a directory meshfed wrote a plan into: its first line says so, each
/// further line names a file written (relative to the directory).
const PLAN_MARKER: &str = ".meshfed-plan";
/// The marker's first line.
const PLAN_MARKER_HEADER: &str = "written by meshfed plan";

/// An `--out` that cannot be used: exit 2 when another path would do, 3 for an OS failure.
pub(super) fn out_dir_error(error: atomic_files::OutDirError) -> CliError {
    if error.is_bad_input() {
        CliError::BadInput(format!("{:#}", anyhow::Error::new(error)))
    } else {
        CliError::Infrastructure(error.into())
    }
}

/// Only an empty directory, or an earlier plan ([`PLAN_MARKER`]) holding nothing but the files
/// meshfed wrote, may be replaced.
pub(super) fn check_replaceable(out_dir: &atomic_files::OutDir, out: &Path) -> Result<(), CliError> {
    let cannot_read = |error: std::io::Error| {
        CliError::Infrastructure(anyhow::Error::new(error).context(format!("cannot read {}", out.display())))
    };
    let atomic_files::Existing::Directory(old) = out_dir.existing().map_err(cannot_read)? else {
        return Ok(());
    };
    if old.names().map_err(cannot_read)?.is_empty() {
        return Ok(());
    }
    if old.entry(PLAN_MARKER).map_err(cannot_read)? != Some(atomic_files::EntryKind::File) {
        return Err(CliError::BadInput(format!(
            "{} exists and is not a meshfed plan directory (it has no {PLAN_MARKER} file): refusing to \
             overwrite it; choose another --out",
            out.display()
        )));
    }
    let marker = std::fs::read(out_dir.path().join(PLAN_MARKER)).map_err(cannot_read)?;
    let written: BTreeSet<PathBuf> = String::from_utf8_lossy(&marker)
        .lines()
        .skip(1)
        .filter(|line| !line.is_empty())
        .map(PathBuf::from)
        .collect();
    let added = not_written_by_plan(&old, &written).map_err(cannot_read)?;
    if added.is_empty() {
        return Ok(());
    }
    Err(CliError::BadInput(format!(
        "{} holds what meshfed plan did not write there: {}; replacing the plan would delete it, so \
         nothing was changed. Move it away or choose another --out",
        out.display(),
        added.join(", ")
    )))
}

/// The entries of an old plan directory that meshfed did not write: not listed in `written` (a
/// marker of an older meshfed lists nothing: then only `<cluster>/NN-*.yaml` files count as
/// written). Symlinks and subdirectories of a cluster directory are never meshfed's.
fn not_written_by_plan(old: &atomic_files::Dir, written: &BTreeSet<PathBuf>) -> std::io::Result<Vec<String>> {
    let is_written = |path: &Path| {
        if written.is_empty() {
            let name = path.file_name().map(|name| name.as_bytes()).unwrap_or_default();
            name.len() > 3 && name[..2].iter().all(u8::is_ascii_digit) && name[2] == b'-' && name.ends_with(b".yaml")
        } else {
            written.contains(path)
        }
    };
    let mut added = Vec::new();
    for name in old.names()? {
        if name == PLAN_MARKER {
            continue;
        }
        if old.entry(&name)? != Some(atomic_files::EntryKind::Directory) {
            added.push(name.to_string_lossy().into_owned());
            continue;
        }
        let cluster = old.open_dir(&name)?;
        for file in cluster.names()? {
            let path = Path::new(&name).join(&file);
            if cluster.entry(&file)? != Some(atomic_files::EntryKind::File) || !is_written(&path) {
                added.push(path.to_string_lossy().into_owned());
            }
        }
    }
    Ok(added)
}

/// Builds the plan in a temporary sibling, then swaps it in with one rename, so the output path
/// holds either the whole old plan or the whole new one, even if writing fails half-way.
pub(super) fn write_plan_dir(out_dir: &atomic_files::OutDir, files: &[plan::RenderedFile]) -> std::io::Result<()> {
    const DIR_MODE: u32 = 0o755;
    const FILE_MODE: u32 = 0o644;
    let staged = out_dir.stage(DIR_MODE)?;
    let mut marker = format!("{PLAN_MARKER_HEADER}\n");
    for file in files {
        marker.push_str(&file.path.to_string_lossy());
        marker.push('\n');
    }
    staged.dir().create_file(PLAN_MARKER, marker.as_bytes(), FILE_MODE)?;
    for file in files {
        staged
            .dir()
            .create_file_at(&file.path, file.yaml.as_bytes(), FILE_MODE, DIR_MODE)?;
    }
    staged.commit()
}
