//! Downloading, checking and unpacking the public face archives (feature `fetch`), in the
//! spirit of torchvision's `download=True`.
//!
//! A [`Source`] names a data set: its mirrors, an optional SHA-256, the folder it must end up in
//! under the data root and the check that says it is installed. [`fetch`] does the whole job:
//!
//! 1. returns at once when [`is_installed`] already holds;
//! 2. refuses to touch a non-empty `root/<folder>` that does not hold the data;
//! 3. reuses an archive kept in `root/.downloads/` by an earlier run, or streams each mirror in
//!    turn to `root/.downloads/<file>.part`, checking Content-Length, SHA-256 and that it is an
//!    archive at all (not an error page), and renames it to `<file>` only once it passes;
//! 4. unpacks it (tar.gz, tar or zip, told apart by their magic bytes) into a fresh
//!    `root/.unpack-<name>-<pid>` folder, rejecting absolute paths and `..`;
//! 5. finds the folder inside that holds the data (at most 3 levels deep) and renames it to
//!    `root/<folder>` in one step, so a half-unpacked data set is never visible there.
//!
//! The archive is kept after unpacking, so a failed unpack never costs a new download. When
//! nothing works, every error ends with how to get the data by hand (see
//! [`missing_data_message`] for the text shown when the data is missing and fetching is off).
//!
//! Only plain HTTP is supported (ureq is built without TLS).

use crate::{DataError, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// How [`is_installed`] recognises an installed data set inside `root/<folder>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// This file (a relative path, no globs) exists.
    FileExists(&'static str),
    /// The folder holds exactly `count` files whose extension is `ext` (no dot, ASCII case
    /// ignored), not counting subfolders.
    CountExt {
        /// The extension, without the dot (`"asf"`).
        ext: &'static str,
        /// How many such files a complete data set has.
        count: usize,
    },
}

/// A downloadable data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// Short id, as a command line names the data set (`data fetch <name>`); also names the
    /// temporary unpack folder, so keep it to letters, digits, `-` and `_`.
    pub name: &'static str,
    /// Mirrors, tried in order. The archive's file name is the last path segment of the URL.
    pub urls: &'static [&'static str],
    /// SHA-256 (hex) of the archive. It applies to every mirror, so give it only when all
    /// mirrors serve the same bytes.
    pub sha256: Option<&'static str>,
    /// The folder under the data root where the data set ends up.
    pub folder: &'static str,
    /// What must hold inside `root/<folder>` for the data set to count as installed.
    pub installed: Installed,
    /// Approximate archive size in bytes, for messages and for progress bars when the server
    /// sends no Content-Length.
    pub size_hint: Option<u64>,
    /// Where and how to get the data by hand, shown in errors and [`missing_data_message`].
    pub manual: &'static str,
    /// What the download is: an archive to unpack, or the one file itself.
    pub packing: Packing,
}

/// What a [`Source`]'s download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// A tar.gz, tar or zip archive (told apart by its magic bytes), unpacked.
    Archive,
    /// The data itself: one file, installed as `root/<folder>/<name>`.
    File(&'static str),
}

/// The IMM face database (240 images of 40 people, 58 points each).
pub const IMM: Source = Source {
    name: "imm",
    urls: &[
        "http://www.imm.dtu.dk/~aam/datasets/imm_face_db.tar.gz",
        "http://datasets.openimaj.org/imm_face_db.zip",
    ],
    // The two mirrors serve different archives (tar.gz and zip), so no single hash fits.
    sha256: None,
    folder: "imm_face_db",
    installed: Installed::CountExt {
        ext: "asf",
        count: 240,
    },
    size_hint: None,
    manual: "The IMM Face Database (M. B. Stegmann, DTU) is linked from \
             http://www.imm.dtu.dk/~aam/ as imm_face_db.tar.gz or imm_face_db.zip; \
             either archive works.",
    packing: Packing::Archive,
};

/// The iBUG 300-W training and test sets with dlib's 68-point XML labels (about 1.7 GB).
pub const IBUG_300W: Source = Source {
    name: "ibug",
    urls: &["http://dlib.net/files/data/ibug_300W_large_face_landmark_dataset.tar.gz"],
    sha256: None,
    folder: "ibug_300W_large_face_landmark_dataset",
    installed: Installed::FileExists("labels_ibug_300W_train.xml"),
    size_hint: Some(1_700_000_000),
    manual: "The archive is dlib's repackaging of the 300-W images (afw, helen, ibug, lfpw) \
             with XML labels; the original images are at \
             https://ibug.doc.ic.ac.uk/resources/300-W/.",
    packing: Packing::Archive,
};

/// The YuNet-n face detector's published weights (Wu, Peng, Yu 2023; Apache-2.0): the PyTorch
/// checkpoint of libfacedetection.train at a pinned commit, 747,497 bytes.
pub const YUNET: Source = Source {
    name: "yunet",
    urls: &[
        "https://github.com/ShiqiYu/libfacedetection.train/raw/0047ac24afb1a50a0c6105001c89d1b5b805dbf1/weights/yunet_n.pth",
    ],
    sha256: Some("9c7c9e14a4d60e57491d77e4d8b0d451bd834f300e05c0dea7fd1f6533817b06"),
    folder: "models/yunet",
    installed: Installed::FileExists("yunet_n.pth"),
    size_hint: Some(747_497),
    manual: "The weights are weights/yunet_n.pth of github.com/ShiqiYu/libfacedetection.train \
             (Apache-2.0), commit 0047ac24afb1a50a0c6105001c89d1b5b805dbf1.",
    packing: Packing::File("yunet_n.pth"),
};

/// Every data set `fetch` knows, in the order the command line lists them.
pub const SOURCES: &[Source] = &[IMM, IBUG_300W, YUNET];

/// The known source whose [`Source::name`] is `name`.
pub fn source_by_name(name: &str) -> Option<&'static Source> {
    SOURCES.iter().find(|s| s.name == name)
}

/// What [`fetch`] is doing, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The server answered and the download of `url` begins; `total` is its Content-Length.
    Started {
        /// The mirror being downloaded.
        url: String,
        /// Bytes to expect, when the server says.
        total: Option<u64>,
    },
    /// Bytes of the current download received so far.
    Downloaded(u64),
    /// A mirror failed; the next one (if any) is tried.
    MirrorFailed {
        /// The mirror that failed.
        url: String,
        /// What happened.
        reason: String,
    },
    /// An archive kept by an earlier run is used instead of downloading.
    Cached {
        /// The kept archive.
        archive: PathBuf,
    },
    /// Unpacking; entries (files and folders) written so far.
    Unpacking {
        /// Entries written so far.
        entries: u64,
    },
    /// The data set is installed.
    Done,
}

/// Whether `root/<source.folder>` holds the data set, by [`Source::installed`].
pub fn is_installed(source: &Source, root: &Path) -> bool {
    holds(source.installed, &root.join(source.folder))
}

/// The text shown when the data set is missing and may not be fetched (`--offline`): which
/// folder was looked in, what was found there, and how to get the data.
pub fn missing_data_message(source: &Source, root: &Path) -> String {
    let dir = root.join(source.folder);
    let size = source
        .size_hint
        .map(|n| format!(" (a download of about {})", human_size(n)))
        .unwrap_or_default();
    format!(
        "the {} data is missing: looked in {}, which {}{size}. {}",
        source.name,
        dir.display(),
        describe_state(source.installed, &dir),
        manual_instructions(source, root),
    )
}

/// Downloads, checks and unpacks `source` under `root` unless it is installed already, and
/// returns `root/<source.folder>`.
///
/// Reports to `on_progress` as it goes (nothing when the data set is installed already). Mirrors
/// are tried in order; the error lists every mirror's failure. The downloaded archive is kept in
/// `root/.downloads/` and reused by the next call. Errors are [`DataError::Fetch`] (download
/// and unpack failures end with how to get the data by hand; a non-empty `root/<folder>` that
/// lacks the data is refused, never overwritten) or [`DataError::Io`] for local file-system
/// failures.
pub fn fetch(
    source: &Source,
    root: &Path,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf> {
    let target = root.join(source.folder);
    if is_installed(source, root) {
        return Ok(target);
    }
    // Checked before a possibly long download, and again before the final rename.
    ensure_target_free(source, root)?;
    let downloads = root.join(".downloads");
    fs::create_dir_all(&downloads).map_err(|e| DataError::io(&downloads, e))?;

    let archive = match find_cached(source, &downloads)? {
        Some(archive) => {
            on_progress(Progress::Cached {
                archive: archive.clone(),
            });
            archive
        }
        None => download_any(source, root, &downloads, on_progress)?,
    };

    install_from(source, root, &archive, on_progress).map_err(|e| match e {
        DataError::Fetch { target, reason } => DataError::Fetch {
            target,
            reason: format!(
                "{reason}. The archive is kept at {}; delete it to download it again. {}",
                archive.display(),
                manual_instructions(source, root)
            ),
        },
        other => other,
    })?;
    on_progress(Progress::Done);
    Ok(target)
}

/// Connection set-up may take this long before a mirror counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A mirror that sends nothing for this long counts as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How deep below the unpack folder the data folder is looked for.
const SEARCH_DEPTH: usize = 3;

/// Whether `dir` satisfies `check`.
fn holds(check: Installed, dir: &Path) -> bool {
    match check {
        Installed::FileExists(rel) => dir.join(rel).is_file(),
        Installed::CountExt { ext, count } => count_ext(dir, ext) == Some(count),
    }
}

/// Regular files in `dir` (not below) with extension `ext`; `None` when `dir` is unreadable.
fn count_ext(dir: &Path, ext: &str) -> Option<usize> {
    let entries = fs::read_dir(dir).ok()?;
    let count = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| x.eq_ignore_ascii_case(ext))
                && p.is_file()
        })
        .count();
    Some(count)
}

/// What `dir` holds with respect to `check`, phrased to follow "which".
fn describe_state(check: Installed, dir: &Path) -> String {
    if !dir.exists() {
        return "does not exist".to_owned();
    }
    match check {
        Installed::FileExists(rel) if dir.join(rel).is_file() => format!("has {rel}"),
        Installed::FileExists(rel) => format!("has no {rel}"),
        Installed::CountExt { ext, count } => match count_ext(dir, ext) {
            Some(n) => format!("holds {n} .{ext} files where {count} are expected"),
            None => "cannot be read".to_owned(),
        },
    }
}

/// The source's own hint, then "Download URL by hand and unpack it so that ... exists, or pass
/// --data DIR.".
fn manual_instructions(source: &Source, root: &Path) -> String {
    let dir = root.join(source.folder);
    let wanted = match source.installed {
        Installed::FileExists(rel) => format!("{} exists", dir.join(rel).display()),
        Installed::CountExt { ext, count } => {
            format!(
                "{} exists and holds the {count} .{ext} files",
                dir.display()
            )
        }
    };
    let urls = if source.urls.is_empty() {
        "the archive".to_owned()
    } else {
        source.urls.join(" or ")
    };
    let how = match source.packing {
        Packing::Archive => "unpack it",
        Packing::File(_) => "save it",
    };
    format!(
        "{} Download {urls} by hand and {how} so that {wanted}.",
        source.manual
    )
}

/// `n` bytes as "1.7 GB", "12.0 MB", ...
fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    if value < 1000.0 {
        return format!("{n} bytes");
    }
    let mut unit = UNITS[0];
    for u in UNITS {
        value /= 1000.0;
        unit = u;
        if value < 1000.0 {
            break;
        }
    }
    format!("{value:.1} {unit}")
}

/// Errors unless `root/<folder>` is absent or an empty folder: fetch never overwrites data.
fn ensure_target_free(source: &Source, root: &Path) -> Result<()> {
    let target = root.join(source.folder);
    let meta = match fs::symlink_metadata(&target) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(DataError::io(target, e)),
    };
    let reason = if meta.is_dir() {
        let mut entries = fs::read_dir(&target).map_err(|e| DataError::io(&target, e))?;
        if entries.next().is_none() {
            return Ok(());
        }
        format!(
            "this folder exists and is not empty, but it {}; fetch does not overwrite it: \
             move it away and fetch again, complete it by hand, or use another data folder",
            describe_state(source.installed, &target)
        )
    } else {
        "this path exists and is not a folder; fetch does not overwrite it: move it away and \
         fetch again, or use another data folder"
            .to_owned()
    };
    Err(DataError::Fetch { target, reason })
}

/// The archive's file name for `url`: its last path segment, made safe for a file name.
fn archive_file_name(source: &Source, url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.rsplit('/').next().unwrap_or("");
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.trim_matches('.').is_empty() {
        format!("{}.archive", source.name)
    } else {
        clean
    }
}

/// A complete archive of `source` kept in `downloads` by an earlier run (mirrors in order). With
/// a known SHA-256, a kept archive that does not match is deleted rather than used.
fn find_cached(source: &Source, downloads: &Path) -> Result<Option<PathBuf>> {
    for url in source.urls {
        let path = downloads.join(archive_file_name(source, url));
        if !path.is_file() {
            continue;
        }
        let Some(want) = source.sha256 else {
            // Only complete, checked downloads are ever renamed to this name.
            return Ok(Some(path));
        };
        let have = sha256_file(&path).map_err(|e| DataError::io(&path, e))?;
        if have.eq_ignore_ascii_case(want) {
            return Ok(Some(path));
        }
        tracing::warn!(
            "{}: sha256 {have} does not match {want}; downloading again",
            path.display()
        );
        fs::remove_file(&path).map_err(|e| DataError::io(&path, e))?;
    }
    Ok(None)
}

/// SHA-256 of a file, as lowercase hex.
fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex(&hasher.finalize()))
}

/// Bytes as lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why one mirror's download failed.
enum DownloadError {
    /// The mirror or the network failed: the next mirror may work.
    Remote(String),
    /// Writing locally failed: no mirror will do better.
    Local(DataError),
}

/// Tries each mirror in turn; returns the complete archive or an error listing every failure.
fn download_any(
    source: &Source,
    root: &Path,
    downloads: &Path,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf> {
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut failures = Vec::new();
    for url in source.urls {
        let file_name = archive_file_name(source, url);
        match download(&agent, url, source, downloads, &file_name, on_progress) {
            Ok(path) => return Ok(path),
            Err(DownloadError::Local(e)) => return Err(e),
            Err(DownloadError::Remote(reason)) => {
                tracing::warn!("{url}: {reason}");
                on_progress(Progress::MirrorFailed {
                    url: (*url).to_owned(),
                    reason: reason.clone(),
                });
                failures.push(format!("{url}: {reason}"));
            }
        }
    }
    let tried = if failures.is_empty() {
        "the source lists no URL".to_owned()
    } else {
        failures.join("; ")
    };
    Err(DataError::Fetch {
        target: root.join(source.folder),
        reason: format!(
            "could not download the {} data ({tried}). {}",
            source.name,
            manual_instructions(source, root)
        ),
    })
}

/// Downloads `url` to `downloads/<file_name>` through a `.part` file, checking length and hash
/// (and, for an archive, that it is one).
fn download(
    agent: &ureq::Agent,
    url: &str,
    source: &Source,
    downloads: &Path,
    file_name: &str,
    on_progress: &mut dyn FnMut(Progress),
) -> std::result::Result<PathBuf, DownloadError> {
    let response = agent
        .get(url)
        .call()
        .map_err(|e| DownloadError::Remote(describe_http_error(&e)))?;
    let total = response.body().content_length();
    on_progress(Progress::Started {
        url: url.to_owned(),
        total,
    });
    let part = downloads.join(format!("{file_name}.part"));
    let result =
        stream_to(response, url, total, source.sha256, &part, on_progress).and_then(|()| {
            // A mirror that answers with an error page instead of the file is a failed mirror,
            // so the next one is tried and no useless archive is kept. (A single file is checked
            // by its hash alone.)
            if let Packing::File(_) = source.packing {
                return Ok(());
            }
            match sniff_kind(&part) {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(reason)) => Err(DownloadError::Remote(format!("the download is {reason}"))),
                Err(e) => Err(DownloadError::Local(DataError::io(&part, e))),
            }
        });
    match result {
        Ok(()) => {
            let path = downloads.join(file_name);
            fs::rename(&part, &path).map_err(|e| DownloadError::Local(DataError::io(&part, e)))?;
            Ok(path)
        }
        Err(e) => {
            // No resume: a partial file is only wasted space.
            if let Err(rm) = fs::remove_file(&part)
                && rm.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!("cannot remove {}: {rm}", part.display());
            }
            Err(e)
        }
    }
}

/// Streams the response body into `part`, hashing as it goes, then checks length and hash.
fn stream_to(
    response: ureq::http::Response<ureq::Body>,
    url: &str,
    total: Option<u64>,
    sha256: Option<&str>,
    part: &Path,
    on_progress: &mut dyn FnMut(Progress),
) -> std::result::Result<(), DownloadError> {
    let local = |e: io::Error| DownloadError::Local(DataError::io(part, e));
    let of_total = |got: u64| match total {
        Some(t) => format!("received {got} of {t} bytes"),
        None => format!("received {got} bytes"),
    };
    let file = File::create(part).map_err(local)?;
    let mut out = BufWriter::new(file);
    let mut reader = response.into_body().into_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(DownloadError::Remote(format!(
                    "download broke off: {} ({e})",
                    of_total(got)
                )));
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(local)?;
        got += n as u64;
        on_progress(Progress::Downloaded(got));
    }
    if let Some(t) = total
        && got != t
    {
        return Err(DownloadError::Remote(format!(
            "download broke off: {}",
            of_total(got)
        )));
    }
    let file = out.into_inner().map_err(|e| local(e.into_error()))?;
    file.sync_all().map_err(local)?;
    if let Some(want) = sha256 {
        let have = hex(&hasher.finalize());
        if !have.eq_ignore_ascii_case(want) {
            return Err(DownloadError::Remote(format!(
                "sha256 of the download is {have}, expected {want} (from {url})"
            )));
        }
    }
    Ok(())
}

/// A ureq error in words a user can act on.
fn describe_http_error(e: &ureq::Error) -> String {
    match e {
        ureq::Error::StatusCode(code) => format!("the server answered HTTP {code}"),
        ureq::Error::TlsRequired => {
            "the server redirected to HTTPS, which this build (plain HTTP only) cannot fetch"
                .to_owned()
        }
        ureq::Error::HostNotFound => "host not found (is the network up?)".to_owned(),
        ureq::Error::Io(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// Removes its folder when dropped, so a failed unpack leaves nothing behind.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", self.0.display());
        }
    }
}

/// Unpacks `archive` into a temporary folder under `root`, finds the data in it and moves it
/// to `root/<folder>`.
fn install_from(
    source: &Source,
    root: &Path,
    archive: &Path,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let temp = TempDir(root.join(format!(".unpack-{}-{}", source.name, std::process::id())));
    // A leftover from an earlier run of a process with the same id.
    if temp.0.exists() {
        fs::remove_dir_all(&temp.0).map_err(|e| DataError::io(&temp.0, e))?;
    }
    fs::create_dir_all(&temp.0).map_err(|e| DataError::io(&temp.0, e))?;
    match source.packing {
        Packing::Archive => unpack(sniff(archive)?, archive, &temp.0, on_progress)?,
        Packing::File(name) => {
            let dest = temp.0.join(name);
            fs::copy(archive, &dest).map_err(|e| DataError::io(&dest, e))?;
        }
    }

    let Some(found) = find_data_dir(source.installed, &temp.0) else {
        let reason = match source.installed {
            Installed::FileExists(rel) => format!("holds no {rel}"),
            Installed::CountExt { ext, count } => {
                format!("holds no folder with exactly {count} .{ext} files")
            }
        };
        return Err(DataError::Fetch {
            target: archive.to_path_buf(),
            reason: format!(
                "the archive {reason} (searched {SEARCH_DEPTH} levels deep); it is not the \
                 {} data",
                source.name
            ),
        });
    };

    ensure_target_free(source, root)?;
    let target = root.join(source.folder);
    if target.exists() {
        // An empty folder: rename cannot replace it everywhere, and it holds nothing.
        fs::remove_dir(&target).map_err(|e| DataError::io(&target, e))?;
    } else if let Some(parent) = target.parent() {
        // A nested folder (`models/yunet`): its parents may not exist yet.
        fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    fs::rename(&found, &target).map_err(|e| DataError::io(&target, e))?;
    drop(temp);
    if !is_installed(source, root) {
        return Err(DataError::Fetch {
            target: target.clone(),
            reason: format!(
                "after unpacking, this folder {}",
                describe_state(source.installed, &target)
            ),
        });
    }
    Ok(())
}

/// Archive formats told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArchiveKind {
    /// gzip-compressed tar.
    TarGz,
    /// Uncompressed tar.
    Tar,
    /// zip.
    Zip,
}

/// The archive kind of `first` (the file's first bytes, up to 512), by magic bytes.
fn kind_of(first: &[u8]) -> Option<ArchiveKind> {
    if first.starts_with(&[0x1f, 0x8b]) {
        Some(ArchiveKind::TarGz)
    } else if first.starts_with(b"PK\x03\x04") {
        Some(ArchiveKind::Zip)
    } else if first.get(257..262) == Some(b"ustar") {
        Some(ArchiveKind::Tar)
    } else {
        None
    }
}

/// Reads `archive`'s first bytes and tells its kind; the error says what the file starts with.
fn sniff(archive: &Path) -> Result<ArchiveKind> {
    match sniff_kind(archive).map_err(|e| DataError::io(archive, e))? {
        Ok(kind) => Ok(kind),
        Err(reason) => Err(DataError::Fetch {
            target: archive.to_path_buf(),
            reason,
        }),
    }
}

/// The kind of `archive`, or why it is none (a web page served instead of the file, say).
fn sniff_kind(archive: &Path) -> io::Result<std::result::Result<ArchiveKind, String>> {
    let mut first = Vec::with_capacity(512);
    File::open(archive)?.take(512).read_to_end(&mut first)?;
    Ok(kind_of(&first).ok_or_else(|| {
        format!(
            "not a tar.gz, tar or zip archive (it starts with {})",
            hex(&first[..first.len().min(8)])
        )
    }))
}

/// A problem with the archive itself (corrupt, unsafe entry).
fn bad_archive(archive: &Path, reason: String) -> DataError {
    DataError::Fetch {
        target: archive.to_path_buf(),
        reason,
    }
}

/// Unpacks `archive` of `kind` into the empty folder `dest`.
fn unpack(
    kind: ArchiveKind,
    archive: &Path,
    dest: &Path,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let file = File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let reader = BufReader::new(file);
    match kind {
        ArchiveKind::TarGz => unpack_tar(
            flate2::read::MultiGzDecoder::new(reader),
            archive,
            dest,
            on_progress,
        ),
        ArchiveKind::Tar => unpack_tar(reader, archive, dest, on_progress),
        ArchiveKind::Zip => unpack_zip(reader, archive, dest, on_progress),
    }
}

/// Unpacks a tar stream; links and special files are skipped (the data sets have none, and
/// links could point outside `dest`).
fn unpack_tar(
    reader: impl Read,
    archive: &Path,
    dest: &Path,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let corrupt = |e: io::Error| bad_archive(archive, format!("cannot read the archive: {e}"));
    let mut tar = tar::Archive::new(reader);
    let mut written = 0u64;
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let name = entry
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .into_owned();
        let Some(rel) = safe_relative(&name).map_err(|why| unsafe_entry(archive, &name, why))?
        else {
            continue;
        };
        let path = dest.join(rel);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            fs::create_dir_all(&path).map_err(|e| DataError::io(&path, e))?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            write_entry(&mut entry, &path, archive)?;
        } else {
            tracing::warn!("{}: skipping {name} (a {kind:?} entry)", archive.display());
            continue;
        }
        written += 1;
        on_progress(Progress::Unpacking { entries: written });
    }
    Ok(())
}

/// Unpacks a zip file; symbolic links are skipped, as for tar.
fn unpack_zip(
    reader: BufReader<File>,
    archive: &Path,
    dest: &Path,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let corrupt =
        |e: zip::result::ZipError| bad_archive(archive, format!("cannot read the archive: {e}"));
    let mut zip = zip::ZipArchive::new(reader).map_err(corrupt)?;
    let mut written = 0u64;
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).map_err(corrupt)?;
        let name = file.name().map_err(corrupt)?.into_owned();
        let Some(rel) = safe_relative(&name).map_err(|why| unsafe_entry(archive, &name, why))?
        else {
            continue;
        };
        let path = dest.join(rel);
        if file.is_symlink() {
            tracing::warn!("{}: skipping {name} (a symbolic link)", archive.display());
            continue;
        } else if file.is_dir() {
            fs::create_dir_all(&path).map_err(|e| DataError::io(&path, e))?;
        } else {
            write_entry(&mut file, &path, archive)?;
        }
        written += 1;
        on_progress(Progress::Unpacking { entries: written });
    }
    Ok(())
}

/// The error for an entry whose name could write outside the unpack folder.
fn unsafe_entry(archive: &Path, name: &str, why: &str) -> DataError {
    bad_archive(archive, format!("refusing to unpack: entry {name:?} {why}"))
}

/// Copies one entry's bytes to a new file at `path`, telling a corrupt archive (read error)
/// from a local failure (write error).
fn write_entry(entry: &mut impl Read, path: &Path, archive: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    let mut out = BufWriter::new(File::create(path).map_err(|e| DataError::io(path, e))?);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(bad_archive(
                    archive,
                    format!("cannot read the archive at {}: {e}", path.display()),
                ));
            }
        };
        out.write_all(&buf[..n])
            .map_err(|e| DataError::io(path, e))?;
    }
    out.flush().map_err(|e| DataError::io(path, e))
}

/// An archive entry name as a path relative to the unpack folder, or `Ok(None)` for the folder
/// itself (`./`). Both `/` and `\` separate components (zip files from Windows use `\`);
/// absolute paths, `..`, drive letters and NUL bytes are refused with the reason.
fn safe_relative(name: &str) -> std::result::Result<Option<PathBuf>, &'static str> {
    if name.starts_with(['/', '\\']) {
        return Err("is an absolute path");
    }
    if name.contains('\0') {
        return Err("contains a NUL byte");
    }
    let mut rel = PathBuf::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err("goes up with `..`"),
            _ if part.contains(':') => return Err("names a drive or stream with `:`"),
            _ => rel.push(part),
        }
    }
    // Belt and braces: whatever the platform makes of the pushed parts, only plain names pass.
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err("is not a plain relative path");
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// The shallowest folder at or below `top` (at most [`SEARCH_DEPTH`] levels down, in name
/// order) that satisfies `check`.
fn find_data_dir(check: Installed, top: &Path) -> Option<PathBuf> {
    let mut level = vec![top.to_path_buf()];
    for depth in 0..=SEARCH_DEPTH {
        if let Some(found) = level.iter().find(|dir| holds(check, dir)) {
            return Some(found.clone());
        }
        if depth == SEARCH_DEPTH {
            break;
        }
        let mut next = Vec::new();
        for dir in &level {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            let mut subdirs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect();
            subdirs.sort();
            next.extend(subdirs);
        }
        level = next;
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn safe_relative_accepts_plain_paths_and_refuses_escapes() {
        assert_eq!(
            safe_relative("db/01-1m.asf"),
            Ok(Some(PathBuf::from("db").join("01-1m.asf")))
        );
        assert_eq!(
            safe_relative("./db/./a.asf"),
            Ok(Some(PathBuf::from("db").join("a.asf")))
        );
        assert_eq!(
            safe_relative("db\\a.asf"),
            Ok(Some(PathBuf::from("db").join("a.asf")))
        );
        assert_eq!(safe_relative("./"), Ok(None));
        assert_eq!(safe_relative("/etc/passwd"), Err("is an absolute path"));
        assert_eq!(safe_relative("\\evil"), Err("is an absolute path"));
        assert_eq!(safe_relative("../evil"), Err("goes up with `..`"));
        assert_eq!(safe_relative("db/../../evil"), Err("goes up with `..`"));
        assert_eq!(
            safe_relative("C:/evil"),
            Err("names a drive or stream with `:`")
        );
        assert_eq!(safe_relative("a\0b"), Err("contains a NUL byte"));
    }

    #[test]
    fn archive_kind_comes_from_magic_bytes() {
        assert_eq!(kind_of(&[0x1f, 0x8b, 8, 0]), Some(ArchiveKind::TarGz));
        assert_eq!(kind_of(b"PK\x03\x04rest"), Some(ArchiveKind::Zip));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(kind_of(&tar), Some(ArchiveKind::Tar));
        assert_eq!(kind_of(b"<html>"), None);
        assert_eq!(kind_of(&[]), None);
    }

    #[test]
    fn archive_file_name_is_the_last_url_segment_made_safe() {
        assert_eq!(archive_file_name(&IMM, IMM.urls[0]), "imm_face_db.tar.gz");
        assert_eq!(
            archive_file_name(&IMM, "http://h/a/b%20c.zip?x=1#f"),
            "b_20c.zip"
        );
        assert_eq!(archive_file_name(&IMM, "http://h/"), "imm.archive");
        assert_eq!(archive_file_name(&IMM, "http://h/.."), "imm.archive");
    }

    #[test]
    fn human_size_uses_decimal_units() {
        assert_eq!(human_size(999), "999 bytes");
        assert_eq!(human_size(1_700_000_000), "1.7 GB");
        assert_eq!(human_size(12_345_678), "12.3 MB");
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
    }

    #[test]
    fn known_sources_are_found_by_name() {
        assert_eq!(source_by_name("imm"), Some(&IMM));
        assert_eq!(source_by_name("ibug"), Some(&IBUG_300W));
        assert_eq!(source_by_name("nope"), None);
    }

    #[test]
    fn count_ext_check_needs_the_exact_count() {
        let dir = tempfile::tempdir().unwrap();
        let check = Installed::CountExt {
            ext: "asf",
            count: 2,
        };
        fs::write(dir.path().join("a.asf"), "").unwrap();
        assert!(!holds(check, dir.path()));
        fs::write(dir.path().join("b.ASF"), "").unwrap();
        assert!(holds(check, dir.path()));
        fs::write(dir.path().join("c.asf"), "").unwrap();
        assert!(!holds(check, dir.path()));
        assert_eq!(
            describe_state(check, dir.path()),
            "holds 3 .asf files where 2 are expected"
        );
        assert_eq!(
            describe_state(check, &dir.path().join("none")),
            "does not exist"
        );
    }

    #[test]
    fn find_data_dir_searches_three_levels_and_no_deeper() {
        let dir = tempfile::tempdir().unwrap();
        let check = Installed::FileExists("labels.xml");
        let deep3 = dir.path().join("a/b/c");
        fs::create_dir_all(&deep3).unwrap();
        fs::write(deep3.join("labels.xml"), "").unwrap();
        assert_eq!(find_data_dir(check, dir.path()), Some(deep3.clone()));
        fs::remove_file(deep3.join("labels.xml")).unwrap();
        let deep4 = deep3.join("d");
        fs::create_dir_all(&deep4).unwrap();
        fs::write(deep4.join("labels.xml"), "").unwrap();
        assert_eq!(find_data_dir(check, dir.path()), None);
    }
}
