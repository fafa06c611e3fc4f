//! Tests of the client library: printing, reading a spec, the server
//! address, timeouts, and exports checked against a fake coordinator.

use super::*;

#[test]
fn printable_escapes_every_control_character() {
    assert_eq!(printable("plain text, ünïcode"), "plain text, ünïcode");
    assert_eq!(
        printable("a\u{1b}]0;t\u{7}b\u{1b}[2J\r\n\u{9b}31m\u{7f}"),
        "a\\u{1b}]0;t\\u{7}b\\u{1b}[2J\\r\\n\\u{9b}31m\\u{7f}"
    );
}

#[test]
fn printable_json_is_the_same_json_without_raw_controls() {
    let v = serde_json::json!({ "name": "evil\u{1b}[31m\u{7f}\u{9b}", "n": 1 });
    let line = printable_json(&v);
    assert!(!line.chars().any(char::is_control), "{line}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&line).unwrap(), v);
}

/// A coordinator stand-in on 127.0.0.1: answers each request by its path
/// with `answer(path) -> (status, body)`, one connection at a time.
fn fake_server(answer: impl Fn(&str) -> (u16, String) + Send + 'static) -> String {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let path = request.split(' ').nth(1).unwrap_or("").to_string();
            let (status, body) = answer(&path);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

/// An address where nothing listens.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn manifest(csv: &str) -> String {
    serde_json::json!({
        "job": 1, "algorithm": "blake3", "outputs": [], "rows": 1,
        "exports": {
            "csv": { "path": "/api/v1/jobs/1/results?format=csv",
                     "blake3": blake3::hash(csv.as_bytes()).to_hex().to_string(),
                     "bytes": csv.len() },
            "jsonl": { "path": "/api/v1/jobs/1/results?format=jsonl",
                       "blake3": blake3::hash(b"").to_hex().to_string(), "bytes": 0 },
        }
    })
    .to_string()
}

#[test]
fn an_export_replaces_the_file_only_when_it_matches_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.csv");
    let old = "precious old data\n";
    let kept = |why: &str| {
        assert_eq!(std::fs::read_to_string(&path).unwrap(), old, "{why}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{why}: a temporary file was left behind");
    };
    std::fs::write(&path, old).unwrap();

    // The server's bytes do not match its own manifest.
    let server = fake_server(|path| match path {
        "/api/v1/jobs/1/manifest" => (200, manifest("header\nrow\n")),
        _ => (200, "header\nrow, tampered\n".into()),
    });
    let e = export::export_to_file(&Client::new(&server, None), 1, "csv", &path).unwrap_err();
    assert!(
        e.to_string()
            .contains("does not match the checksum manifest"),
        "{e}"
    );
    assert!(e.to_string().contains("is left as it was"), "{e}");
    kept("a mismatch");

    // An unknown job.
    let server = fake_server(|_| (404, r#"{"error":"no job 999"}"#.into()));
    let e = export::export_to_file(&Client::new(&server, None), 999, "csv", &path).unwrap_err();
    assert!(e.to_string().contains("no job 999"), "{e}");
    kept("an unknown job");

    // No server.
    let e =
        export::export_to_file(&Client::new(&closed_port(), None), 1, "csv", &path).unwrap_err();
    assert!(e.to_string().contains("cannot reach"), "{e}");
    kept("no server");

    // A good export replaces the file.
    let server = fake_server(|path| match path {
        "/api/v1/jobs/1/manifest" => (200, manifest("header\nrow\n")),
        _ => (200, "header\nrow\n".into()),
    });
    let done = export::export_to_file(&Client::new(&server, None), 1, "csv", &path).unwrap();
    assert_eq!(done.bytes, 11);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "header\nrow\n");
}

#[test]
fn an_export_of_a_growing_dataset_checks_against_the_later_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.csv");
    // The first manifest is from before a row arrived; the export and the
    // second manifest have it.
    let manifests = std::sync::atomic::AtomicUsize::new(0);
    let server = fake_server(move |path| match path {
        "/api/v1/jobs/1/manifest" => {
            let n = manifests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (200, manifest(if n == 0 { "h\n" } else { "h\nrow\n" }))
        }
        _ => (200, "h\nrow\n".into()),
    });
    export::export_to_file(&Client::new(&server, None), 1, "csv", &path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "h\nrow\n");
}

#[test]
fn a_server_without_a_scheme_is_told_to_add_it() {
    let e = server_url("127.0.0.1:47080").unwrap_err().to_string();
    assert!(e.contains("`http://127.0.0.1:47080`"), "{e}");
    assert_eq!(server_url("http://h:1/").unwrap(), "http://h:1");
    assert_eq!(server_url("HTTPS://h").unwrap(), "HTTPS://h");
    assert!(server_url("http://").is_err());
}

#[test]
fn an_unreachable_server_names_its_cause_once() {
    let e = Client::new(&closed_port(), None).jobs().unwrap_err();
    let cause = std::error::Error::source(&e)
        .expect("the cause is the error's source")
        .to_string();
    let text = format!("{:#}", anyhow::Error::from(e));
    assert_eq!(text.matches(&cause).count(), 1, "{text}");
}

#[test]
fn a_silent_server_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        // Accept, then say nothing.
        let held: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(std::time::Duration::from_secs(60));
        drop(held);
    });
    let client = Client::with_timeout(&format!("http://{addr}"), None, Duration::from_millis(300));
    let start = std::time::Instant::now();
    let e = client.jobs().unwrap_err();
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

fn researcher() -> Researcher {
    let project = SigningKey::from_bytes(&[7; 32]);
    let key = SigningKey::from_bytes(&[9; 32]);
    let endorsement =
        signing::endorse(&project, &key.verifying_key().to_bytes(), "Tester").unwrap();
    Researcher { key, endorsement }
}

/// A spec in `dir` whose module is `module` and whose inputs folder holds
/// `files` (name, bytes) and the folders `folders`.
fn spec_with(dir: &Path, module: &[u8], files: &[(&str, &[u8])], folders: &[&str]) -> PathBuf {
    std::fs::write(dir.join("m.wasm"), module).unwrap();
    std::fs::create_dir(dir.join("in")).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join("in").join(name), bytes).unwrap();
    }
    for name in folders {
        std::fs::create_dir(dir.join("in").join(name)).unwrap();
    }
    let spec = dir.join("job.toml");
    std::fs::write(
        &spec,
        "name = \"t\"\nmodule = \"m.wasm\"\n[inputs]\ndir = \"in\"\n",
    )
    .unwrap();
    spec
}

const WASM: &[u8] = b"\0asm\x01\0\0\0";

#[test]
fn a_module_without_the_wasm_header_is_refused_before_upload() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_with(dir.path(), b"(module)", &[("a", b"1")], &[]);
    let e = prepare_job(&spec, &researcher()).err().unwrap().to_string();
    assert!(e.contains("m.wasm is not a wasm module"), "{e}");
}

#[test]
fn folders_in_the_inputs_folder_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_with(dir.path(), WASM, &[("a", b"1")], &["more", ".hidden"]);
    let job = prepare_job(&spec, &researcher()).unwrap();
    assert_eq!(job.submission.units.len(), 1);
    assert_eq!(
        job.skipped_folders,
        vec![dir.path().join("in").join("more")]
    );

    let dir = tempfile::tempdir().unwrap();
    let spec = spec_with(dir.path(), WASM, &[], &["only"]);
    let e = prepare_job(&spec, &researcher()).err().unwrap().to_string();
    assert!(e.contains("holds only folders"), "{e}");
}

/// Against a coordinator from before batch uploads (no `POST
/// /api/v1/blobs`: a 404 to the empty probe batch), the blobs go one `PUT`
/// each, all of them, and no batch body is sent.
#[test]
fn an_upload_to_a_server_without_batches_puts_each_blob() {
    use std::sync::{Arc, Mutex};
    let blobs: Vec<(Hash, Vec<u8>)> = [&b"one"[..], b"two", b"three"]
        .iter()
        .map(|b| (Hash::of(b), b.to_vec()))
        .collect();
    let missing =
        serde_json::to_string(&blobs.iter().map(|(h, _)| *h).collect::<Vec<_>>()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let server = fake_server(move |path| {
        log.lock().unwrap().push(path.to_string());
        match path {
            "/api/v1/blobs/missing" => (200, missing.clone()),
            "/api/v1/blobs" => (404, r#"{"error":"no such page or API route"}"#.into()),
            _ => (201, String::new()),
        }
    });
    let stats = Client::new(&server, Some("t".into()))
        .upload(&blobs)
        .unwrap();
    assert_eq!((stats.uploaded, stats.uploaded_bytes), (3, 11));
    let seen = seen.lock().unwrap().clone();
    // The empty probe batch, then one PUT each.
    let mut expected = vec![
        "/api/v1/blobs/missing".to_string(),
        "/api/v1/blobs".to_string(),
    ];
    expected.extend(blobs.iter().map(|(h, _)| format!("/api/v1/blobs/{h}")));
    assert_eq!(seen, expected);
}
