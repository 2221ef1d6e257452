//! Atomic file writes, the one implementation every fkd crate uses for its outputs
//! (checkpoints, histories, figures, reports).
//!
//! A file is written to a temporary name in its own folder, flushed to disk, and renamed over
//! the target, so a crash or Ctrl-C leaves either the old file or the complete new one, never
//! half of one. The temporary name is hidden and unique per process and call
//! (`.NAME.PID.N.tmp`), so two writers of the same file never share a temporary; on any failure
//! the temporary is removed and the target is untouched. Only a process killed between creating
//! and renaming its temporary can leave one behind.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The step of an atomic write that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteStep {
    /// Creating the temporary file beside the target (a missing folder, no permission, a path
    /// with no file name).
    Create,
    /// Writing the bytes to the temporary file.
    Write,
    /// Flushing the temporary file to disk.
    Sync,
    /// Giving the new file the permissions a plain create would give it.
    Mode,
    /// Renaming the temporary file over the target.
    Rename,
}

impl fmt::Display for WriteStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Create => "cannot create a temporary file beside it",
            Self::Write => "cannot write it",
            Self::Sync => "cannot flush it to disk",
            Self::Mode => "cannot give it a plain file's permissions",
            Self::Rename => "cannot move the new file into place",
        })
    }
}

/// An atomic write that failed: which file, at which step, and what the OS said. The target
/// file is unchanged and no temporary file is left.
#[derive(Debug, thiserror::Error)]
#[error("{}: {step}: {source}", path.display())]
pub struct WriteError {
    /// The file that was to be written (not the temporary).
    pub path: PathBuf,
    /// The step that failed.
    pub step: WriteStep,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

impl WriteError {
    fn new(path: &Path, step: WriteStep, source: std::io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            step,
            source,
        }
    }
}

/// Replaces `path` atomically by what `write` puts in the file it is given: a temporary path in
/// the same folder (so the final rename never crosses file systems), which `write` must create.
/// That file is then flushed to disk and renamed over `path`, and the folder is flushed (best
/// effort: some platforms and file systems cannot, and the data is already safe under one name
/// or the other).
///
/// On failure, of `write` (its error is returned as is) or of a later step (a [`WriteError`]
/// naming `path`), the temporary file is removed and `path` is untouched. The folder must exist.
pub fn write_atomic<E: From<WriteError>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let (dir, tmp) = temporary(path)?;
    let result = write(&tmp).and_then(|()| {
        // Opened for writing because Windows refuses to flush a read-only handle.
        OpenOptions::new()
            .write(true)
            .open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| WriteError::new(path, WriteStep::Sync, e))?;
        // Writers that make their own temporary file and rename it onto `tmp` (safetensors
        // does) leave it private (0600): give it the mode a plain create would have.
        #[cfg(unix)]
        plain_mode(&dir, &tmp).map_err(|e| WriteError::new(path, WriteStep::Mode, e))?;
        fs::rename(&tmp, path).map_err(|e| E::from(WriteError::new(path, WriteStep::Rename, e)))
    });
    if result.is_err() {
        // The temporary file is garbage whatever happened (it may not even exist); failing to
        // delete it changes nothing about the error worth reporting.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(&dir);
    Ok(())
}

/// Replaces `path` atomically by `bytes`; see [`write_atomic`].
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic(path, |tmp| {
        // `create_new`: a leftover file of the same name is never written into.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(|e| WriteError::new(path, WriteStep::Create, e))?;
        file.write_all(bytes)
            .map_err(|e| WriteError::new(path, WriteStep::Write, e))
    })
}

/// The folder of `path` and a temporary path in it, unique per process and call.
fn temporary(path: &Path) -> Result<(PathBuf, PathBuf), WriteError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        WriteError::new(
            path,
            WriteStep::Create,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    Ok((dir, tmp))
}

/// Sets `file`'s permissions to those a plain create in `dir` gets under the process's umask
/// (learned from a probe file, created and removed), when they differ.
#[cfg(unix)]
fn plain_mode(dir: &Path, file: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let probe = dir.join(format!(
        ".fkd-mode.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    let want = fs::metadata(&probe).map(|m| m.permissions().mode() & 0o777);
    // The probe is garbage either way; failing to delete it changes nothing worth reporting.
    let _ = fs::remove_file(&probe);
    let want = want?;
    let have = fs::metadata(file)?.permissions().mode() & 0o777;
    if have != want {
        fs::set_permissions(file, fs::Permissions::from_mode(want))?;
    }
    Ok(())
}

/// Makes a rename in `dir` durable. Best effort, see [`write_atomic`].
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A file written atomically gets the mode a plain create gives under the process's umask
    /// (not the private mode temporary-file helpers such as safetensors' use), and a replaced
    /// file the same.
    #[cfg(unix)]
    #[test]
    fn written_files_get_the_modes_a_plain_create_gives() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        File::create(&plain).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let path = dir.path().join("atomic.json");
        write_bytes_atomic(&path, b"1").unwrap();
        assert_eq!(mode(&path), mode(&plain));
        write_bytes_atomic(&path, b"2").unwrap();
        assert_eq!(mode(&path), mode(&plain));
        // A writer that leaves a private file, as safetensors' own temporary-file write does.
        let private = dir.path().join("weights.safetensors");
        write_atomic(&private, |tmp| -> Result<(), WriteError> {
            fs::write(tmp, b"w").unwrap();
            fs::set_permissions(tmp, fs::Permissions::from_mode(0o600)).unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(mode(&private), mode(&plain));
        assert_eq!(names(dir.path()).len(), 3, "no probe or temporary left");
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn bytes_round_trip_and_replace_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_bytes_atomic(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write_bytes_atomic(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        write_bytes_atomic(&path, b"").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"");
        assert_eq!(names(dir.path()), ["a.json"]);
    }

    /// A caller's error type, as a library crate's error enum would be.
    #[derive(Debug)]
    enum Failure {
        Interrupted,
        Write(WriteError),
    }

    impl From<WriteError> for Failure {
        fn from(e: WriteError) -> Self {
            Self::Write(e)
        }
    }

    #[test]
    fn a_failing_writer_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        write_bytes_atomic(&path, b"old").unwrap();
        let result = write_atomic(&path, |tmp| {
            fs::write(tmp, b"half").unwrap();
            Err(Failure::Interrupted)
        });
        assert!(matches!(result, Err(Failure::Interrupted)));
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["w.safetensors"]);

        // The writer's file is the one that lands.
        write_atomic(&path, |tmp| {
            fs::write(tmp, b"new").unwrap();
            Ok::<_, Failure>(())
        })
        .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["w.safetensors"]);
    }

    #[test]
    fn a_writer_that_creates_nothing_fails_at_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.bin");
        match write_atomic(&path, |_| Ok::<_, Failure>(())) {
            Err(Failure::Write(e)) => {
                assert_eq!(e.step, WriteStep::Sync);
                assert_eq!(e.path, path);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn writing_into_a_missing_folder_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/fig.png");
        let err = write_bytes_atomic(&path, b"x").unwrap_err();
        assert_eq!(err.path, path);
        assert_eq!(err.step, WriteStep::Create);
        assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
        let msg = err.to_string();
        assert!(
            msg.starts_with(&path.display().to_string()) && msg.contains("cannot create"),
            "{msg}"
        );
        assert!(!dir.path().join("no").exists());
    }

    #[test]
    fn a_folder_in_the_way_fails_at_the_rename_and_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"x").unwrap();
        let err = write_bytes_atomic(&path, b"x").unwrap_err();
        assert_eq!(
            (err.path.as_path(), err.step),
            (path.as_path(), WriteStep::Rename)
        );
        assert!(err.to_string().contains("taken: cannot move"), "{err}");
        assert_eq!(names(dir.path()), ["taken"]);
        assert_eq!(names(&path), ["inside"]);
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let err = write_bytes_atomic(Path::new("/"), b"x").unwrap_err();
        assert_eq!(err.step, WriteStep::Create);
        assert_eq!(err.source.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn concurrent_writers_of_one_file_never_mix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.bin");
        let contents: Vec<Vec<u8>> = (0..4u8).map(|t| vec![t; 4096 * (t as usize + 1)]).collect();
        std::thread::scope(|s| {
            for bytes in &contents {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_bytes_atomic(path, bytes).unwrap();
                    }
                });
            }
        });
        assert!(contents.contains(&fs::read(&path).unwrap()));
        assert_eq!(names(dir.path()), ["shared.bin"]);
    }
}
