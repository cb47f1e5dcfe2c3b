//! Safe file output: files and whole directories are replaced in one step and never written
//! through a symlink, so meshfed's plans, PKIs and reports are never lost half-way.
//!
//! Two tools:
//! - [`Dir`], an open directory handle. Everything below it is reached with `*at` system calls
//!   relative to the handle, never by path, so (a) a handle opened before meshfed enters its sandbox
//!   still reaches a directory the sandbox hides (its tmpfs covers `/run`), and (b) nothing meshfed
//!   creates inside it can be redirected by a symlink: files are created with `O_EXCL|O_NOFOLLOW`,
//!   directories with `mkdirat` and opened with `O_NOFOLLOW`. [`Dir::write_file_atomic`] writes a
//!   temporary sibling with its final mode, syncs it and renames it over the target, so a full disk
//!   leaves the old file intact.
//! - [`OutDir`], an output directory that is replaced as a whole (`plan --out`, `certs --out`):
//!   the user's path is resolved once (`.`, `..`, a trailing slash, a symlink the user named), the
//!   new tree is built in a temporary sibling ([`OutDir::stage`]) and swapped in with one
//!   `renameat2(RENAME_EXCHANGE)` ([`Staged::commit`]), so at every moment the path holds either
//!   the complete old tree or the complete new one.
//!
//! Temporary names carry the PID and a random part (the PID alone is 2 for every meshfed inside
//! its PID namespace), and a staged tree is locked ([`lock`]) by the process building it: a
//! later [`OutDir::stage`] removes the temporary siblings of the same name that nobody holds any
//! more (left by a process killed half-way), and never anything else.
//!
//! The system calls go through nix's safe wrappers behind the methods of this module; nothing in
//! meshfed needs `unsafe` to write files.

mod lock;

pub use lock::DirLock;

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::hash::{BuildHasher as _, RandomState};
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;
use thiserror::Error;

/// An open directory; every operation is relative to it and follows no symlink below it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// Where the directory was when it was opened, for messages only (it may be hidden later).
    path: PathBuf,
}

/// What a name in a [`Dir`] is, without following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file.
    File,
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

impl Dir {
    /// Opens an existing directory. Symlinks in `path` itself are followed: the user named them.
    pub fn open(path: &Path) -> io::Result<Dir> {
        if path.as_os_str().as_bytes().contains(&0) {
            return Err(invalid_input(format!("{} contains a NUL byte", path.display())));
        }
        Ok(Dir {
            fd: nix::fcntl::open(path, dir_flags(), Mode::empty())?,
            path: path.to_path_buf(),
        })
    }

    /// Creates `path` and its missing parents (mode 0777 minus umask, like `mkdir -p`), then opens it.
    pub fn create_all(path: &Path) -> io::Result<Dir> {
        std::fs::create_dir_all(path)?;
        Dir::open(path)
    }

    /// The path the directory had when it was opened (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What `name` is, or `None` when it does not exist. A symlink is reported, not followed.
    pub fn entry(&self, name: impl AsRef<OsStr>) -> io::Result<Option<EntryKind>> {
        let name = component(name.as_ref())?;
        let stat = match nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        Ok(Some(if kind == SFlag::S_IFDIR {
            EntryKind::Directory
        } else if kind == SFlag::S_IFREG {
            EntryKind::File
        } else if kind == SFlag::S_IFLNK {
            EntryKind::Symlink
        } else {
            EntryKind::Other
        }))
    }

    /// The names in this directory, sorted.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let mut names = std::fs::read_dir(self.proc_path())?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    /// Creates the directory `name` (it must not exist, not even as a symlink) and opens it.
    pub fn create_dir(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<Dir> {
        let name = component(name.as_ref())?;
        nix::sys::stat::mkdirat(&self.fd, name, Mode::from_bits_truncate(mode))?;
        self.open_dir(name)
    }

    /// Opens the directory `name`; fails if it is a symlink.
    pub fn open_dir(&self, name: impl AsRef<OsStr>) -> io::Result<Dir> {
        let name = component(name.as_ref())?;
        Ok(Dir {
            fd: nix::fcntl::openat(&self.fd, name, dir_flags() | OFlag::O_NOFOLLOW, Mode::empty())?,
            path: self.path.join(name),
        })
    }

    /// Creates the file `name` with `mode` from the start (it must not exist, not even as a
    /// symlink), writes `contents` and syncs it.
    pub fn create_file(&self, name: impl AsRef<OsStr>, contents: &[u8], mode: u32) -> io::Result<()> {
        let name = component(name.as_ref())?;
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )?;
        let mut file = File::from(fd);
        file.write_all(contents)?;
        file.sync_all()
    }

    /// Creates `relative` (e.g. `cluster1/00-namespace.yaml`) below this directory, creating the
    /// directories on the way with `dir_mode` or opening existing ones without following symlinks.
    pub fn create_file_at(&self, relative: &Path, contents: &[u8], file_mode: u32, dir_mode: u32) -> io::Result<()> {
        let mut parts: Vec<&OsStr> = Vec::new();
        for part in relative.components() {
            match part {
                Component::Normal(name) => parts.push(name),
                _ => {
                    return Err(invalid_input(format!(
                        "{} is not a plain relative path",
                        relative.display()
                    )));
                }
            }
        }
        let Some((file_name, dirs)) = parts.split_last() else {
            return Err(invalid_input("an empty path"));
        };
        let mut owned_dir: Option<Dir> = None;
        for name in dirs {
            let parent = owned_dir.as_ref().unwrap_or(self);
            let next = match parent.entry(name)? {
                None => parent.create_dir(name, dir_mode)?,
                Some(_) => parent.open_dir(name)?,
            };
            owned_dir = Some(next);
        }
        owned_dir
            .as_ref()
            .unwrap_or(self)
            .create_file(file_name, contents, file_mode)
    }

    /// Replaces (or creates) the file `name` in one step: writes a temporary sibling created with
    /// `mode`, syncs it, renames it over `name` and syncs the directory. On any failure the old
    /// file is untouched and the temporary file is removed. A symlink at `name` is replaced, never
    /// followed.
    pub fn write_file_atomic(&self, name: impl AsRef<OsStr>, contents: &[u8], mode: u32) -> io::Result<()> {
        let name = component(name.as_ref())?;
        let temporary = temporary_name(name, "tmp");
        let written = self
            .create_file(&temporary, contents, mode)
            .and_then(|()| Ok(nix::fcntl::renameat(&self.fd, temporary.as_os_str(), &self.fd, name)?));
        if let Err(error) = written {
            // Also when create_file failed half-way: it may have created the file.
            let _ = nix::unistd::unlinkat(&self.fd, temporary.as_os_str(), UnlinkatFlags::NoRemoveDir);
            return Err(error);
        }
        self.sync()
    }

    /// Removes `name`: a file or symlink is unlinked, a directory is removed with its contents,
    /// never following a symlink inside it. A missing `name` is not an error.
    pub fn remove_tree(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = component(name.as_ref())?;
        let result = match self.entry(name)? {
            None => return Ok(()),
            // std's remove_dir_all opens every level with O_NOFOLLOW and unlinks symlinks.
            Some(EntryKind::Directory) => std::fs::remove_dir_all(self.proc_path().join(name)),
            Some(_) => nix::unistd::unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir).map_err(io::Error::from),
        };
        match result {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Syncs the directory itself, so renames and new entries survive a crash.
    pub fn sync(&self) -> io::Result<()> {
        Ok(nix::unistd::fsync(&self.fd)?)
    }

    /// Checks that a file can be created here and that the file system is not full.
    pub fn check_writable(&self) -> Result<(), NotWritable> {
        let probe = temporary_name(OsStr::new("probe"), "probe");
        self.create_file(&probe, b"", 0o600)
            .map_err(NotWritable::CannotCreate)?;
        self.remove_tree(&probe).map_err(NotWritable::CannotCreate)?;
        let stats = nix::sys::statvfs::fstatvfs(&self.fd).map_err(|error| NotWritable::CannotCreate(error.into()))?;
        let free_blocks = if nix::unistd::geteuid().is_root() {
            stats.blocks_free()
        } else {
            stats.blocks_available()
        };
        if free_blocks == 0 {
            return Err(NotWritable::Full);
        }
        Ok(())
    }

    /// A path that reaches this directory through the handle, valid in any mount namespace.
    fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    fn rename(&self, from: &OsStr, to: &OsStr, flags: RenameFlags) -> io::Result<()> {
        let (from, to) = (component(from)?, component(to)?);
        Ok(nix::fcntl::renameat2(&self.fd, from, &self.fd, to, flags)?)
    }
}

/// Why [`Dir::check_writable`] failed.
#[derive(Debug, Error)]
pub enum NotWritable {
    /// A file could not be created (permissions, read-only file system, no inodes left, …).
    #[error("cannot create a file there")]
    CannotCreate(#[source] io::Error),
    /// The file system has no free block left.
    #[error("its file system is full (no free blocks)")]
    Full,
}

impl NotWritable {
    /// True when the cause is a lack of space rather than bad input (permissions, not a directory).
    pub fn is_out_of_space(&self) -> bool {
        match self {
            NotWritable::Full => true,
            NotWritable::CannotCreate(error) => is_out_of_space(error),
        }
    }
}

/// True for "no space left" and "quota exceeded".
pub fn is_out_of_space(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENOSPC | Errno::EDQUOT)
    )
}

/// Why an output directory cannot be used.
#[derive(Debug, Error)]
pub enum OutDirError {
    /// The path, or a component of it, exists and is not a directory.
    #[error("{path} is not a directory (it or a parent of it exists as something else)")]
    NotADirectory {
        /// The path as given.
        path: PathBuf,
    },
    /// The path is a symlink to nothing.
    #[error("{path} is a symlink to {target}, which does not exist")]
    DanglingSymlink {
        /// The path as given.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// The directory is (or contains) meshfed's current directory: swapping it would leave the
    /// shell that started meshfed in a deleted directory.
    #[error(
        "output directory {path} is {resolved}, which is (or contains) the current directory; meshfed \
         replaces an output directory by swapping in a new one, which would leave this shell in a \
         deleted directory; nothing was changed. Run meshfed from outside it, e.g. from {parent} \
         with --out {name}"
    )]
    ContainsWorkingDirectory {
        /// The path as given.
        path: PathBuf,
        /// Where it resolves to.
        resolved: PathBuf,
        /// Its parent directory.
        parent: PathBuf,
        /// Its name in `parent`.
        name: String,
    },
    /// `/` has no parent to stage a new tree in.
    #[error("{path} is the root directory; choose a directory below it")]
    IsRoot {
        /// The path as given.
        path: PathBuf,
    },
    /// Creating or opening a parent failed.
    #[error("cannot use {path} as an output directory")]
    Io {
        /// The path as given.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl OutDirError {
    /// True when the user can fix it by choosing another path (exit code 2); false for an OS failure.
    pub fn is_bad_input(&self) -> bool {
        match self {
            OutDirError::Io { source, .. } => {
                !is_out_of_space(source) && source.raw_os_error().map(Errno::from_raw) != Some(Errno::EIO)
            }
            _ => true,
        }
    }
}

/// An output directory that is replaced as a whole, resolved once and reached through its
/// parent's handle from then on.
#[derive(Debug)]
pub struct OutDir {
    parent: Dir,
    name: OsString,
    resolved: PathBuf,
    via_symlink: bool,
}

/// What is at an [`OutDir`]'s path now.
#[derive(Debug)]
pub enum Existing {
    /// Nothing: the new tree is renamed into a free name.
    Absent,
    /// A directory (opened without following symlinks), to be checked by the caller.
    Directory(Dir),
}

impl OutDir {
    /// Resolves `out`: `.`/`..`/a trailing slash, and a symlink the user named (its target is
    /// used and [`OutDir::via_symlink`] says so). Missing parents are created. Refuses a path that
    /// exists as something other than a directory, a dangling symlink, `/`, and a directory that
    /// is or contains the current directory.
    pub fn resolve(out: &Path) -> Result<OutDir, OutDirError> {
        let io_error = |source| OutDirError::Io {
            path: out.to_path_buf(),
            source,
        };
        let not_a_directory = || OutDirError::NotADirectory {
            path: out.to_path_buf(),
        };
        let (resolved, via_symlink) = match std::fs::symlink_metadata(out) {
            Ok(metadata) => {
                let resolved = std::fs::canonicalize(out).map_err(|source| {
                    if metadata.file_type().is_symlink() {
                        OutDirError::DanglingSymlink {
                            path: out.to_path_buf(),
                            target: std::fs::read_link(out).unwrap_or_default(),
                        }
                    } else {
                        io_error(source)
                    }
                })?;
                if !std::fs::metadata(&resolved).map_err(io_error)?.is_dir() {
                    return Err(not_a_directory());
                }
                // `link/` and `link/.` name the symlink's target; ask about `link` itself.
                let as_named: PathBuf = out.components().collect();
                let is_symlink = std::fs::symlink_metadata(&as_named).is_ok_and(|named| named.file_type().is_symlink());
                (resolved, is_symlink)
            }
            Err(error) if error.kind() == io::ErrorKind::NotADirectory => return Err(not_a_directory()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                // `out` does not exist, so its last component is a plain name (`.`/`..` always exist).
                let name = out.file_name().ok_or_else(not_a_directory)?;
                let parent = match out.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent,
                    _ => Path::new("."),
                };
                std::fs::create_dir_all(parent).map_err(|source| match source.kind() {
                    io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => not_a_directory(),
                    _ => io_error(source),
                })?;
                (std::fs::canonicalize(parent).map_err(io_error)?.join(name), false)
            }
            Err(error) => return Err(io_error(error)),
        };
        let (Some(parent), Some(name)) = (resolved.parent(), resolved.file_name()) else {
            return Err(OutDirError::IsRoot {
                path: out.to_path_buf(),
            });
        };
        if let Ok(cwd) = std::env::current_dir().and_then(std::fs::canonicalize)
            && cwd.starts_with(&resolved)
        {
            return Err(OutDirError::ContainsWorkingDirectory {
                path: out.to_path_buf(),
                resolved: resolved.clone(),
                parent: parent.to_path_buf(),
                name: name.to_string_lossy().into_owned(),
            });
        }
        Ok(OutDir {
            parent: Dir::open(parent).map_err(io_error)?,
            name: name.to_os_string(),
            resolved,
            via_symlink,
        })
    }

    /// The absolute path the directory resolved to.
    pub fn path(&self) -> &Path {
        &self.resolved
    }

    /// True when the user's path was a symlink and [`OutDir::path`] is its target.
    pub fn via_symlink(&self) -> bool {
        self.via_symlink
    }

    /// What is there now. A symlink or non-directory that appeared since [`OutDir::resolve`] is
    /// an error (`NotADirectory`).
    pub fn existing(&self) -> io::Result<Existing> {
        match self.parent.entry(&self.name)? {
            None => Ok(Existing::Absent),
            Some(EntryKind::Directory) => Ok(Existing::Directory(self.parent.open_dir(&self.name)?)),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is no longer a directory", self.resolved.display()),
            )),
        }
    }

    /// Removes the directory when it holds the file `marker` (so meshfed wrote it); returns
    /// whether it did. It is renamed aside first, so the path never holds a half-removed tree.
    pub fn remove_if_marked(&self, marker: &str) -> io::Result<bool> {
        let Existing::Directory(dir) = self.existing()? else {
            return Ok(false);
        };
        if dir.entry(marker)? != Some(EntryKind::File) {
            return Ok(false);
        }
        let aside = temporary_name(&self.name, "tmp");
        self.parent.rename(&self.name, &aside, RenameFlags::RENAME_NOREPLACE)?;
        self.parent.remove_tree(&aside)?;
        Ok(true)
    }

    /// Creates an empty temporary sibling directory with `mode` to build the new tree in, locked
    /// by this process while it exists. It is removed again unless [`Staged::commit`] moves it
    /// into place. Temporary siblings of the same name that no process holds (left by a meshfed
    /// killed half-way) are removed first; an old tree set aside by one is put back.
    pub fn stage(&self, mode: u32) -> io::Result<Staged<'_>> {
        self.remove_stale_siblings()?;
        // A stale-sibling sweep of another process may take a fresh name before its creator
        // locks it; the creator then sees it gone and takes another.
        for _ in 0..8 {
            let name = temporary_name(&self.name, "tmp");
            let dir = self.parent.create_dir(&name, mode)?;
            let lock = dir.lock()?;
            if dir.is_still_at(&self.parent, &name)? {
                return Ok(Staged {
                    out: self,
                    name,
                    dir,
                    _lock: lock,
                    committed: false,
                });
            }
        }
        Err(io::Error::other(format!(
            "cannot stage a new tree next to {}: its temporary directories keep disappearing",
            self.resolved.display()
        )))
    }

    /// Removes `.<name>.meshfed-tmp-*` and `.<name>.meshfed-old-*` siblings that no process holds.
    /// An old tree set aside (`-old-`) while the output path is empty is renamed back instead.
    fn remove_stale_siblings(&self) -> io::Result<()> {
        let prefixes = [".meshfed-tmp-", ".meshfed-old-"].map(|kind| {
            let mut prefix = OsString::from(".");
            prefix.push(&self.name);
            prefix.push(kind);
            prefix
        });
        for sibling in self.parent.names()? {
            let Some(kind) = prefixes
                .iter()
                .position(|prefix| sibling.as_bytes().starts_with(prefix.as_bytes()))
            else {
                continue;
            };
            if self.parent.entry(&sibling)? != Some(EntryKind::Directory) {
                continue;
            }
            let Ok(stale) = self.parent.open_dir(&sibling) else {
                continue;
            };
            let Some(_held) = stale.try_lock()? else {
                continue;
            };
            if !stale.is_still_at(&self.parent, &sibling)? {
                continue;
            }
            let set_aside = kind == 1;
            if set_aside && self.parent.entry(&self.name)?.is_none() {
                self.parent
                    .rename(&sibling, &self.name, RenameFlags::RENAME_NOREPLACE)?;
                tracing::warn!(
                    "meshfed: put back {} (set aside by a meshfed that was killed while replacing it)",
                    self.resolved.display()
                );
            } else {
                self.parent.remove_tree(&sibling)?;
                tracing::debug!(
                    "removed {} (left by a meshfed that was killed while writing)",
                    self.parent.path().join(&sibling).display()
                );
            }
        }
        Ok(())
    }
}

/// A new tree being built next to an [`OutDir`].
#[derive(Debug)]
pub struct Staged<'a> {
    out: &'a OutDir,
    name: OsString,
    dir: Dir,
    /// Held while the tree is built: tells a concurrent [`OutDir::stage`] it is not a leftover.
    _lock: DirLock,
    committed: bool,
}

impl Staged<'_> {
    /// The directory to write the new tree into.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Puts the new tree at the output path in one step: exchanged with the old directory (which
    /// is then removed) or renamed into the free name. On a file system without
    /// `RENAME_EXCHANGE` the old directory is first renamed aside (the complete old tree is then
    /// briefly under a hidden sibling name, never half-deleted).
    pub fn commit(mut self) -> io::Result<()> {
        self.dir.sync()?;
        let parent = &self.out.parent;
        let target = self.out.name.as_os_str();
        // The old tree lies under a temporary name for a moment after the swap: locked, so a
        // concurrent stale-sibling sweep leaves it to us.
        let old_tree = match parent.entry(target)? {
            Some(EntryKind::Directory) => parent.open_dir(target).ok(),
            _ => None,
        };
        let _old_lock = old_tree.as_ref().map(Dir::lock).transpose()?;
        // Where the old tree is once the new one is in place.
        let old = match parent.entry(target)? {
            None => {
                match parent.rename(&self.name, target, RenameFlags::RENAME_NOREPLACE) {
                    Err(error) if unsupported(&error) => parent.rename(&self.name, target, RenameFlags::empty()),
                    other => other,
                }?;
                None
            }
            Some(_) => match parent.rename(&self.name, target, RenameFlags::RENAME_EXCHANGE) {
                Ok(()) => Some(self.name.clone()),
                Err(error) if unsupported(&error) => {
                    let aside = temporary_name(target, "old");
                    parent.rename(target, &aside, RenameFlags::RENAME_NOREPLACE)?;
                    if let Err(error) = parent.rename(&self.name, target, RenameFlags::empty()) {
                        let _ = parent.rename(&aside, target, RenameFlags::empty());
                        return Err(error);
                    }
                    Some(aside)
                }
                Err(error) => return Err(error),
            },
        };
        // From here on the staging name holds nothing of the new tree: Drop must not touch it.
        self.committed = true;
        parent.sync()?;
        if let Some(old) = old {
            parent.remove_tree(&old)?;
            parent.sync()?;
        }
        Ok(())
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = self.out.parent.remove_tree(&self.name);
        }
    }
}

/// How directories are opened: for `*at` calls only, never inherited.
fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
}

/// `.<name>.meshfed-<what>-<pid>-<random>`: hidden, recognisable, unique within and across
/// processes, also across PID namespaces (where every meshfed is PID 2): the random part comes
/// from std's per-process random hash keys, mixed with a counter.
pub(crate) fn temporary_name(name: &OsStr, what: &str) -> OsString {
    let mut temporary = OsString::from(".");
    temporary.push(name);
    temporary.push(format!(".meshfed-{what}-{}-{:016x}", std::process::id(), unique_u64()));
    temporary
}

/// A number no other process (and no earlier call) is likely to get: std seeds its hash keys
/// from the OS's random source once per thread; the counter makes calls in one process differ.
pub(crate) fn unique_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one((std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)))
}

/// `name` when it is a single plain path component: no `/`, not `.`/`..`, not empty, no NUL.
fn component(name: &OsStr) -> io::Result<&OsStr> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') || bytes.contains(&0) {
        return Err(invalid_input(format!("{name:?} is not a single file name")));
    }
    Ok(name)
}

fn invalid_input(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, error)
}

/// The file system does not implement this `renameat2` flag.
fn unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP)
    )
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// Set in the child that prints a temporary name.
    // Lower case: a variable of this test only, not one meshfed reads (tests/cli/help.rs).
    const CHILD_ENV: &str = "meshfed_test_temporary_name_child";
    const TEST_NAME: &str = "atomic_files::tests::temporary_names_differ_between_processes_with_the_same_pid";

    #[test]
    fn temporary_names_differ_between_processes_with_the_same_pid() {
        if std::env::var_os(CHILD_ENV).is_some() {
            let name = super::temporary_name(std::ffi::OsStr::new("report.json"), "tmp");
            println!("name={}", name.to_string_lossy());
            return;
        }
        // Each child is PID 1 of a PID namespace of its own (as every meshfed is PID 2 in its
        // sandbox), when this machine lets us make one; else plain children.
        let exe = std::env::current_exe().unwrap();
        let child_name = |in_new_pid_namespace: bool| {
            let mut command = if in_new_pid_namespace {
                let mut command = Command::new("unshare");
                command.args(["--pid", "--fork"]).arg(&exe);
                command
            } else {
                Command::new(&exe)
            };
            let output = command
                .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, "1")
                .output()
                .ok()
                .filter(|output| output.status.success())?;
            String::from_utf8_lossy(&output.stdout)
                .lines()
                // libtest prints `test NAME ... ` before the child's own output on that line.
                .find_map(|line| {
                    line.split_once("name=")
                        .and_then(|(_, name)| name.split_whitespace().next())
                })
                .map(str::to_owned)
        };
        let isolated = child_name(true).is_some();
        let names: Vec<String> = (0..2).filter_map(|_| child_name(isolated)).collect();
        assert_eq!(names.len(), 2, "both children answered");
        if isolated {
            let pid_part = |name: &str| name.split('-').nth(2).map(str::to_owned);
            assert_eq!(pid_part(&names[0]), pid_part(&names[1]), "same PID: {names:?}");
        }
        assert_ne!(names[0], names[1]);
        assert!(names[0].starts_with(".report.json.meshfed-tmp-"), "{names:?}");
    }
}
