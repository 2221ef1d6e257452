//! Tests of `fkd_data::fetch` against a tiny HTTP/1.1 server on 127.0.0.1 that each test starts
//! itself, with archives of a toy data set built in memory.

#![allow(clippy::unwrap_used)]

use fkd_data::DataError;
use fkd_data::fetch::{Installed, Progress, Source, fetch, is_installed, missing_data_message};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the test server answers for one path.
enum Reply {
    /// 200 with this body and its true Content-Length.
    Body(Vec<u8>),
    /// 200 announcing `claimed` bytes, sending only `body`, then closing.
    Truncated { body: Vec<u8>, claimed: usize },
}

/// A running test server.
struct Server {
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// Requests received so far, whatever their path.
    requests: Arc<AtomicUsize>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Starts a server answering `routes` (path → reply) and 404 for anything else. The thread
/// lives until the test process ends.
fn serve(routes: Vec<(&str, Reply)>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let routes: HashMap<String, Reply> =
        routes.into_iter().map(|(p, r)| (p.to_owned(), r)).collect();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            // A broken connection only fails the client side, which the test checks.
            let _ = answer(stream, &routes);
        }
    });
    Server { base, requests }
}

/// Reads one request head and writes the reply, then closes the connection.
fn answer(mut stream: TcpStream, routes: &HashMap<String, Reply>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("");
    let head = |len: usize| {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    match routes.get(path) {
        Some(Reply::Body(body)) => {
            stream.write_all(head(body.len()).as_bytes())?;
            stream.write_all(body)?;
        }
        Some(Reply::Truncated { body, claimed }) => {
            stream.write_all(head(*claimed).as_bytes())?;
            stream.write_all(body)?;
        }
        None => stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
    }
    stream.flush()
}

/// A port on 127.0.0.1 that nobody listens on (bound, then released).
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/toy.tar.gz")
}

/// A toy source: installed when `toy_db` holds exactly 3 `.asf` files.
fn toy(urls: Vec<String>, sha256: Option<String>) -> Source {
    let urls: Vec<&'static str> = urls.into_iter().map(|u| &*u.leak()).collect();
    Source {
        name: "toy",
        urls: urls.leak(),
        sha256: sha256.map(|s| &*s.leak()),
        folder: "toy_db",
        installed: Installed::CountExt {
            ext: "asf",
            count: 3,
        },
        size_hint: None,
        manual: "Toy data comes from the test.",
        packing: fkd_data::fetch::Packing::Archive,
    }
}

/// The toy data set's entries under `prefix` (e.g. `"imm_face_db/"` or `""`).
fn toy_entries(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut entries = Vec::new();
    if !prefix.is_empty() {
        entries.push((prefix.to_owned(), Vec::new()));
    }
    for i in 1..=3 {
        entries.push((
            format!("{prefix}0{i}-1m.asf"),
            format!("asf {i}\n").into_bytes(),
        ));
    }
    entries.push((format!("{prefix}readme.txt"), b"toy\n".to_vec()));
    entries
}

/// A tar.gz of `entries`; names ending in `/` are folders. Names go into the header as given
/// (no checks), so unsafe names can be tested.
fn tar_gz(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if name.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
        }
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A deflated zip of `entries`; names ending in `/` are folders.
fn zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        if name.ends_with('/') {
            writer.add_directory(name.as_str(), options).unwrap();
        } else {
            writer.start_file(name.as_str(), options).unwrap();
            writer.write_all(data).unwrap();
        }
    }
    writer.finish().unwrap().into_inner()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `.asf` files of `dir`, sorted.
fn asf_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".asf"))
        .collect();
    names.sort();
    names
}

/// Names in `root`, sorted (to see that no temporary folder is left behind).
fn listing(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn no_progress() -> impl FnMut(Progress) {
    |_| {}
}

/// The `DataError::Fetch` reason, failing the test on any other outcome.
fn fetch_reason(result: fkd_data::Result<std::path::PathBuf>) -> (std::path::PathBuf, String) {
    match result {
        Err(DataError::Fetch { target, reason }) => (target, reason),
        other => panic!("expected a Fetch error, got {other:?}"),
    }
}

#[test]
fn tar_gz_with_a_top_level_folder_installs() {
    let server = serve(vec![(
        "/toy.tar.gz",
        Reply::Body(tar_gz(&toy_entries("toy_face_db/"))),
    )]);
    let source = toy(vec![server.url("/toy.tar.gz")], None);
    let root = tempfile::tempdir().unwrap();
    let dir = fetch(&source, root.path(), &mut no_progress()).unwrap();
    assert_eq!(dir, root.path().join("toy_db"));
    assert!(is_installed(&source, root.path()));
    assert_eq!(asf_files(&dir), ["01-1m.asf", "02-1m.asf", "03-1m.asf"]);
    assert_eq!(
        fs::read_to_string(dir.join("02-1m.asf")).unwrap(),
        "asf 2\n"
    );
    assert_eq!(listing(root.path()), [".downloads", "toy_db"]);
    assert_eq!(listing(&root.path().join(".downloads")), ["toy.tar.gz"]);
}

#[test]
fn zip_without_a_top_level_folder_installs() {
    let server = serve(vec![("/toy.zip", Reply::Body(zip(&toy_entries(""))))]);
    let source = toy(vec![server.url("/toy.zip")], None);
    let root = tempfile::tempdir().unwrap();
    let dir = fetch(&source, root.path(), &mut no_progress()).unwrap();
    assert_eq!(asf_files(&dir), ["01-1m.asf", "02-1m.asf", "03-1m.asf"]);
    assert_eq!(fs::read_to_string(dir.join("readme.txt")).unwrap(), "toy\n");
    assert_eq!(listing(root.path()), [".downloads", "toy_db"]);
}

#[test]
fn nested_file_marker_is_found_two_levels_down() {
    let entries = vec![
        ("outer/".to_owned(), Vec::new()),
        ("outer/ibug_like/".to_owned(), Vec::new()),
        ("outer/ibug_like/labels.xml".to_owned(), b"<x/>".to_vec()),
        ("outer/ibug_like/afw/1.jpg".to_owned(), b"jpg".to_vec()),
    ];
    let server = serve(vec![("/i.tar.gz", Reply::Body(tar_gz(&entries)))]);
    let mut source = toy(vec![server.url("/i.tar.gz")], None);
    source.installed = Installed::FileExists("labels.xml");
    let root = tempfile::tempdir().unwrap();
    let dir = fetch(&source, root.path(), &mut no_progress()).unwrap();
    assert_eq!(fs::read(dir.join("labels.xml")).unwrap(), b"<x/>");
    assert_eq!(fs::read(dir.join("afw/1.jpg")).unwrap(), b"jpg");
    assert_eq!(listing(root.path()), [".downloads", "toy_db"]);
}

#[test]
fn right_sha256_installs_and_wrong_sha256_installs_nothing() {
    let archive = tar_gz(&toy_entries("db/"));
    let good = sha256_hex(&archive);
    let server = serve(vec![("/toy.tar.gz", Reply::Body(archive))]);

    let root = tempfile::tempdir().unwrap();
    let source = toy(vec![server.url("/toy.tar.gz")], Some(good.to_uppercase()));
    fetch(&source, root.path(), &mut no_progress()).unwrap();
    assert!(is_installed(&source, root.path()));

    let root = tempfile::tempdir().unwrap();
    let bad = "0".repeat(64);
    let source = toy(vec![server.url("/toy.tar.gz")], Some(bad.clone()));
    let (target, reason) = fetch_reason(fetch(&source, root.path(), &mut no_progress()));
    assert_eq!(target, root.path().join("toy_db"));
    assert!(
        reason.contains(&format!("sha256 of the download is {good}, expected {bad}")),
        "{reason}"
    );
    assert!(!is_installed(&source, root.path()));
    // Neither the archive nor its .part file is kept.
    assert_eq!(listing(root.path()), [".downloads"]);
    assert!(listing(&root.path().join(".downloads")).is_empty());
}

#[test]
fn truncated_download_is_an_error() {
    let archive = tar_gz(&toy_entries("db/"));
    let claimed = archive.len() + 1000;
    let server = serve(vec![(
        "/toy.tar.gz",
        Reply::Truncated {
            body: archive.clone(),
            claimed,
        },
    )]);
    let source = toy(vec![server.url("/toy.tar.gz")], None);
    let root = tempfile::tempdir().unwrap();
    let (_, reason) = fetch_reason(fetch(&source, root.path(), &mut no_progress()));
    let expected = format!(
        "{}: download broke off: received {} of {claimed} bytes",
        source.urls[0],
        archive.len()
    );
    assert!(reason.contains(&expected), "{reason}");
    assert!(!is_installed(&source, root.path()));
    assert!(listing(&root.path().join(".downloads")).is_empty());
}

#[test]
fn a_404_on_the_first_mirror_falls_back_to_the_second() {
    let server = serve(vec![(
        "/mirror2/toy.zip",
        Reply::Body(zip(&toy_entries(""))),
    )]);
    let first = server.url("/mirror1/toy.tar.gz");
    let source = toy(vec![first.clone(), server.url("/mirror2/toy.zip")], None);
    let root = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    fetch(&source, root.path(), &mut |p| events.push(p)).unwrap();
    assert!(is_installed(&source, root.path()));
    assert_eq!(server.requests(), 2);
    assert_eq!(
        events[0],
        Progress::MirrorFailed {
            url: first,
            reason: "the server answered HTTP 404".to_owned()
        }
    );
    assert_eq!(listing(&root.path().join(".downloads")), ["toy.zip"]);
}

#[test]
fn all_mirrors_failing_lists_every_failure() {
    let server = serve(vec![]);
    let (a, b) = (server.url("/a.tar.gz"), server.url("/b.zip"));
    let source = toy(vec![a.clone(), b.clone()], None);
    let root = tempfile::tempdir().unwrap();
    let (_, reason) = fetch_reason(fetch(&source, root.path(), &mut no_progress()));
    assert!(
        reason.starts_with(&format!(
            "could not download the toy data ({a}: the server answered HTTP 404; \
             {b}: the server answered HTTP 404). "
        )),
        "{reason}"
    );
}

#[test]
fn already_installed_makes_no_request() {
    let server = serve(vec![]);
    let source = toy(vec![server.url("/toy.tar.gz")], None);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("toy_db");
    fs::create_dir(&dir).unwrap();
    for name in ["a.asf", "b.asf", "c.asf"] {
        fs::write(dir.join(name), "").unwrap();
    }
    let mut events = Vec::new();
    assert_eq!(
        fetch(&source, root.path(), &mut |p| events.push(p)).unwrap(),
        dir
    );
    assert_eq!(server.requests(), 0);
    assert!(events.is_empty());
    assert_eq!(listing(root.path()), ["toy_db"]);
}

#[test]
fn a_non_empty_target_folder_is_not_overwritten() {
    let server = serve(vec![(
        "/toy.tar.gz",
        Reply::Body(tar_gz(&toy_entries("db/"))),
    )]);
    let source = toy(vec![server.url("/toy.tar.gz")], None);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("toy_db");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("01-1m.asf"), "mine").unwrap();
    let (target, reason) = fetch_reason(fetch(&source, root.path(), &mut no_progress()));
    assert_eq!(target, dir);
    assert!(
        reason.starts_with(
            "this folder exists and is not empty, but it holds 1 .asf files where 3 are \
             expected; fetch does not overwrite it"
        ),
        "{reason}"
    );
    assert_eq!(server.requests(), 0);
    assert_eq!(listing(&dir), ["01-1m.asf"]);
    assert_eq!(fs::read_to_string(dir.join("01-1m.asf")).unwrap(), "mine");
}

#[test]
fn an_empty_target_folder_is_filled() {
    let server = serve(vec![("/toy.zip", Reply::Body(zip(&toy_entries(""))))]);
    let source = toy(vec![server.url("/toy.zip")], None);
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("toy_db")).unwrap();
    fetch(&source, root.path(), &mut no_progress()).unwrap();
    assert!(is_installed(&source, root.path()));
}

#[test]
fn an_entry_going_up_with_dotdot_is_rejected() {
    let mut entries = toy_entries("db/");
    entries.push(("../evil".to_owned(), b"gotcha".to_vec()));
    let server = serve(vec![("/toy.tar.gz", Reply::Body(tar_gz(&entries)))]);
    let source = toy(vec![server.url("/toy.tar.gz")], None);
    let root = tempfile::tempdir().unwrap();
    let data_root = root.path().join("data");
    let (target, reason) = fetch_reason(fetch(&source, &data_root, &mut no_progress()));
    let archive = data_root.join(".downloads/toy.tar.gz");
    assert_eq!(target, archive);
    assert!(
        reason.starts_with("refusing to unpack: entry \"../evil\" goes up with `..`"),
        "{reason}"
    );
    assert!(!root.path().join("evil").exists());
    assert!(!data_root.join("evil").exists());
    // The temporary folder is gone; the archive is kept.
    assert_eq!(listing(&data_root), [".downloads"]);
    assert!(archive.is_file());
}

#[test]
fn an_absolute_zip_entry_is_rejected() {
    let mut entries = toy_entries("");
    entries.push(("/abs.asf".to_owned(), b"x".to_vec()));
    let server = serve(vec![("/toy.zip", Reply::Body(zip(&entries)))]);
    let source = toy(vec![server.url("/toy.zip")], None);
    let root = tempfile::tempdir().unwrap();
    let (_, reason) = fetch_reason(fetch(&source, root.path(), &mut no_progress()));
    assert!(
        reason.starts_with("refusing to unpack: entry \"/abs.asf\" is an absolute path"),
        "{reason}"
    );
    assert_eq!(listing(root.path()), [".downloads"]);
}

#[test]
fn an_archive_without_the_data_installs_nothing() {
    let entries = vec![("db/only-one.asf".to_owned(), b"x".to_vec())];
    let server = serve(vec![("/toy.tar.gz", Reply::Body(tar_gz(&entries)))]);
    let source = toy(vec![server.url("/toy.tar.gz")], None);
    let root = tempfile::tempdir().unwrap();
    let (_, reason) = fetch_reason(fetch(&source, root.path(), &mut no_progress()));
    assert!(
        reason.starts_with(
            "the archive holds no folder with exactly 3 .asf files (searched 3 levels deep)"
        ),
        "{reason}"
    );
    assert!(
        reason.contains("delete it to download it again"),
        "{reason}"
    );
    assert_eq!(listing(root.path()), [".downloads"]);
}

#[test]
fn a_mirror_serving_a_web_page_is_skipped() {
    let server = serve(vec![
        ("/a/toy.tar.gz", Reply::Body(b"<html>moved</html>".to_vec())),
        ("/b/toy.zip", Reply::Body(zip(&toy_entries("")))),
    ]);
    let first = server.url("/a/toy.tar.gz");
    let source = toy(vec![first.clone(), server.url("/b/toy.zip")], None);
    let root = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    fetch(&source, root.path(), &mut |p| events.push(p)).unwrap();
    assert!(is_installed(&source, root.path()));
    assert!(
        events.contains(&Progress::MirrorFailed {
            url: first,
            reason: "the download is not a tar.gz, tar or zip archive (it starts with \
                 3c68746d6c3e6d6f)"
                .to_owned()
        })
    );
    // The web page is not kept as an archive.
    assert_eq!(listing(&root.path().join(".downloads")), ["toy.zip"]);
}

#[test]
fn a_kept_archive_is_reused_without_a_request() {
    let server = serve(vec![(
        "/toy.tar.gz",
        Reply::Body(tar_gz(&toy_entries("db/"))),
    )]);
    let source = toy(vec![server.url("/toy.tar.gz")], None);
    let root = tempfile::tempdir().unwrap();
    fetch(&source, root.path(), &mut no_progress()).unwrap();
    assert_eq!(server.requests(), 1);
    fs::remove_dir_all(root.path().join("toy_db")).unwrap();
    let mut events = Vec::new();
    fetch(&source, root.path(), &mut |p| events.push(p)).unwrap();
    assert_eq!(server.requests(), 1);
    assert!(is_installed(&source, root.path()));
    assert_eq!(
        events[0],
        Progress::Cached {
            archive: root.path().join(".downloads/toy.tar.gz")
        }
    );
}

#[test]
fn progress_reports_start_bytes_unpacking_and_done() {
    let archive = tar_gz(&toy_entries("db/"));
    let len = archive.len() as u64;
    let server = serve(vec![("/toy.tar.gz", Reply::Body(archive))]);
    let source = toy(vec![server.url("/toy.tar.gz")], None);
    let root = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    fetch(&source, root.path(), &mut |p| events.push(p)).unwrap();

    assert_eq!(
        events[0],
        Progress::Started {
            url: source.urls[0].to_owned(),
            total: Some(len)
        }
    );
    let downloaded: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Progress::Downloaded(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert!(downloaded.windows(2).all(|w| w[0] < w[1]), "{downloaded:?}");
    assert_eq!(downloaded.last(), Some(&len));
    let unpacked: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Progress::Unpacking { entries } => Some(*entries),
            _ => None,
        })
        .collect();
    // One folder, three .asf files and a readme.
    assert_eq!(unpacked, [1, 2, 3, 4, 5]);
    assert_eq!(events.last(), Some(&Progress::Done));
    assert_eq!(events.len(), 1 + downloaded.len() + unpacked.len() + 1);
}

#[test]
fn an_unreachable_server_gives_the_manual_instructions() {
    let url = dead_url();
    let source = toy(vec![url.clone()], None);
    let root = tempfile::tempdir().unwrap();
    let (target, reason) = fetch_reason(fetch(&source, root.path(), &mut no_progress()));
    assert_eq!(target, root.path().join("toy_db"));
    assert!(reason.starts_with(&format!("could not download the toy data ({url}: ")));
    let manual = format!(
        "Toy data comes from the test. Download {url} by hand and unpack it so that {} exists \
         and holds the 3 .asf files.",
        root.path().join("toy_db").display()
    );
    assert!(reason.ends_with(&manual), "{reason}");
    assert!(!is_installed(&source, root.path()));
}

#[test]
fn missing_data_message_names_the_folder_and_the_ways_to_get_it() {
    let source = fkd_data::fetch::IBUG_300W;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ibug_300W_large_face_landmark_dataset");
    let msg = missing_data_message(&source, root.path());
    assert!(
        msg.starts_with(&format!(
            "the ibug data is missing: looked in {}, which does not exist (a download of about \
             1.7 GB). ",
            dir.display()
        )),
        "{msg}"
    );
    assert!(
        msg.ends_with(&format!(
            "Download http://dlib.net/files/data/ibug_300W_large_face_landmark_dataset.tar.gz by \
             hand and unpack it so that {} exists.",
            dir.join("labels_ibug_300W_train.xml").display()
        )),
        "{msg}"
    );

    fs::create_dir(&dir).unwrap();
    let msg = missing_data_message(&source, root.path());
    assert!(
        msg.contains(&format!(
            "looked in {}, which has no labels_ibug_300W_train.xml (",
            dir.display()
        )),
        "{msg}"
    );
}

/// A source whose download is the data itself (the detector's weights): checked by its
/// sha256 and installed as `root/<nested folder>/<name>`; a wrong hash installs nothing.
#[test]
fn a_single_file_source_installs_into_a_nested_folder() {
    let weights = b"not really weights, but bytes with a known hash".to_vec();
    let server = serve(vec![("/w/model.pth", Reply::Body(weights.clone()))]);
    let source = |sha256: String| Source {
        name: "model",
        urls: vec![server.url("/w/model.pth")].leak_urls(),
        sha256: Some(&*sha256.leak()),
        folder: "models/model",
        installed: Installed::FileExists("model.pth"),
        size_hint: None,
        manual: "The test serves it.",
        packing: fkd_data::fetch::Packing::File("model.pth"),
    };
    let root = tempfile::tempdir().unwrap();
    let wrong = source("0".repeat(64));
    assert!(fetch(&wrong, root.path(), &mut no_progress()).is_err());
    assert!(!root.path().join("models/model").exists());
    let right = source(sha256_hex(&weights));
    let dir = fetch(&right, root.path(), &mut no_progress()).unwrap();
    assert_eq!(dir, root.path().join("models/model"));
    assert_eq!(fs::read(dir.join("model.pth")).unwrap(), weights);
    assert!(is_installed(&right, root.path()));
}

/// `Vec<String>` → the `&'static [&'static str]` a [`Source`] holds (leaked: tests only).
trait LeakUrls {
    fn leak_urls(self) -> &'static [&'static str];
}

impl LeakUrls for Vec<String> {
    fn leak_urls(self) -> &'static [&'static str] {
        let urls: Vec<&'static str> = self.into_iter().map(|u| &*u.leak()).collect();
        urls.leak()
    }
}
