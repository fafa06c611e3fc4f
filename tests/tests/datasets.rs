//! Datasets people can use (issue #15): a job's licence and citation on
//! its API and in `CITATION.cff`, every export's metadata (headers,
//! manifest, Parquet key-value metadata), and the JSON outputs as columns
//! in CSV and Parquet, from a real job (the C example, whose outputs are
//! JSON objects with integers, a float and a nested object) through the
//! real coordinator and the `peergrid` CLI.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, ListAccessor};
use peergrid_tests::{Coordinator, collatz_c};
use serde_json::{Value, json};
use yaml_rust2::YamlLoader;

/// A Parquet field as the JSONL export writes the same value.
fn field_json(f: &Field) -> Value {
    match f {
        Field::Null => Value::Null,
        Field::Bool(b) => json!(b),
        Field::Long(i) => json!(i),
        Field::TimestampMillis(i) => json!(i),
        Field::Double(d) => json!(d),
        Field::Str(s) => json!(s),
        Field::ListInternal(l) => Value::Array(
            (0..l.len())
                .map(|i| json!(l.get_string(i).unwrap()))
                .collect(),
        ),
        other => panic!("unexpected Parquet field {other:?}"),
    }
}

fn get(url: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let mut resp = ureq::get(url).call().unwrap();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    (headers, body)
}

#[test]
fn licence_citation_and_json_columns_reach_every_export() {
    let (wasm, _native) = collatz_c();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(dir.path()).unwrap();
    let _workers = coordinator.workers(dir.path(), "w", 1).unwrap();
    let job_dir = dir.path().join("collatz");
    std::fs::create_dir_all(job_dir.join("inputs")).unwrap();
    for i in 0..5u64 {
        std::fs::write(
            job_dir.join(format!("inputs/unit-{i:04}.txt")),
            format!("{} 3000", 1 + i * 3000),
        )
        .unwrap();
    }
    // Researcher text that would break naive YAML or HTML.
    let title = "Collatz \"steps\": #1 <b>& more</b>";
    let spec = job_dir.join("job.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"collatz\"\nmodule = {:?}\nquorum = 1\nmemory_mb = 16\nlicense = \"cc-by-4.0\"\n\n\
             [inputs]\ndir = \"inputs\"\n\n\
             [citation]\ntitle = {title:?}\nauthors = [\"Lovelace, Ada\", \"The C: team\"]\n\
             doi = \"10.5281/zenodo.42\"\nurl = \"https://example.org/collatz\"\ndate_released = \"2025-06-01\"\n",
            wasm.to_string_lossy()
        ),
    )
    .unwrap();
    let job = coordinator.submit(&spec).unwrap();
    let status = coordinator
        .wait_finished(job, Duration::from_secs(120))
        .unwrap();
    assert_eq!(status["validated"], 5, "{status}");
    // The licence in SPDX's spelling, the citation as given.
    assert_eq!(status["license"], "CC-BY-4.0", "{status}");
    assert_eq!(status["citation"]["title"], title);
    assert_eq!(status["citation"]["authors"][1], "The C: team");

    let base = format!("{}/api/v1/jobs/{job}", coordinator.http);

    // CITATION.cff reads back as the fields given.
    let (headers, cff) = get(&format!("{base}/CITATION.cff"));
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/yaml")),
        "{headers:?}"
    );
    let cff = String::from_utf8(cff).unwrap();
    let y = &YamlLoader::load_from_str(&cff).unwrap()[0];
    assert_eq!(y["cff-version"].as_str(), Some("1.2.0"), "{cff}");
    assert_eq!(y["type"].as_str(), Some("dataset"));
    assert_eq!(y["title"].as_str(), Some(title));
    assert_eq!(y["authors"][0]["family-names"].as_str(), Some("Lovelace"));
    assert_eq!(y["authors"][0]["given-names"].as_str(), Some("Ada"));
    assert_eq!(y["authors"][1]["name"].as_str(), Some("The C: team"));
    assert_eq!(y["doi"].as_str(), Some("10.5281/zenodo.42"));
    assert_eq!(y["url"].as_str(), Some("https://example.org/collatz"));
    assert_eq!(y["license"].as_str(), Some("CC-BY-4.0"));
    assert_eq!(y["date-released"].as_str(), Some("2025-06-01"));
    assert!(y["message"].as_str().is_some());

    // The JSONL export is the reference; its headers carry the terms.
    let (headers, jsonl) = get(&format!("{base}/results?format=jsonl"));
    let header = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(header("peergrid-license"), ["CC-BY-4.0"]);
    let links = header("link").join(", ");
    assert!(
        links.contains(&format!(
            "</api/v1/jobs/{job}/CITATION.cff>; rel=\"describedby\""
        )),
        "{links}"
    );
    assert!(
        links.contains("<https://doi.org/10.5281/zenodo.42>; rel=\"cite-as\""),
        "{links}"
    );
    assert!(
        links.contains("<https://spdx.org/licenses/CC-BY-4.0.html>; rel=\"license\""),
        "{links}"
    );
    let rows: Vec<Value> = jsonl
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    let outputs: Vec<serde_json::Map<String, Value>> = rows
        .iter()
        .map(|r| serde_json::from_str(r["output"].as_str().unwrap()).unwrap())
        .collect();

    // The manifest names the terms and every export.
    let (_, manifest) = get(&format!("{base}/manifest"));
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["license"], "CC-BY-4.0", "{manifest}");
    assert_eq!(manifest["citation"]["doi"], "10.5281/zenodo.42");
    assert_eq!(
        manifest["citation_cff"],
        format!("/api/v1/jobs/{job}/CITATION.cff")
    );

    // Parquet through the CLI: written whole, checked against the
    // manifest, typed, equal to the JSONL export, with the terms inside.
    let parquet_path = dir.path().join("collatz.parquet");
    let out = coordinator.cli(&[
        "results",
        "export",
        &job.to_string(),
        "--format",
        "parquet",
        "--out",
        parquet_path.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("licence: CC-BY-4.0"), "{said}");
    assert!(said.contains("CITATION.cff"), "{said}");
    let bytes = std::fs::read(&parquet_path).unwrap();
    assert_eq!(
        manifest["exports"]["parquet"]["blake3"],
        blake3::hash(&bytes).to_hex().as_str()
    );
    let reader = SerializedFileReader::new(std::fs::File::open(&parquet_path).unwrap()).unwrap();
    let meta: BTreeMap<String, String> = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(meta["peergrid.license"], "CC-BY-4.0");
    assert_eq!(meta["peergrid.job"], job.to_string());
    let citation: Value = serde_json::from_str(&meta["peergrid.citation"]).unwrap();
    assert_eq!(citation, status["citation"]);
    assert_eq!(meta["peergrid.citation_cff"], cff);
    let got: Vec<BTreeMap<String, Value>> = reader
        .get_row_iter(None)
        .unwrap()
        .map(|r| {
            r.unwrap()
                .get_column_iter()
                .map(|(k, f)| (k.clone(), field_json(f)))
                .collect()
        })
        .collect();
    assert_eq!(got.len(), rows.len());
    for ((p, j), o) in got.iter().zip(&rows).zip(&outputs) {
        for key in [
            "job",
            "unit",
            "name",
            "input_hash",
            "module_hash",
            "output_hash",
            "hosts",
            "engines",
            "fuel",
            "validated_ms",
            "output",
        ] {
            assert_eq!(p[key], j[key], "{key} of unit {}", j["unit"]);
        }
        assert_eq!(p["output_bytes"], Value::Null);
        // Typed JSON columns: integers, a float, the nested object as text.
        for key in ["start", "count", "max_steps", "max_at", "sum_steps", "wide"] {
            assert!(p[key].is_i64(), "{key}: {:?}", p[key]);
            assert_eq!(p[key], o[key], "{key}");
        }
        assert_eq!(p["mean_steps"].as_f64(), o["mean_steps"].as_f64());
        let nested: Value = serde_json::from_str(p["histogram"].as_str().unwrap()).unwrap();
        assert_eq!(nested, o["histogram"]);
    }

    // CSV with JSON columns through the CLI; the plain CSV is unchanged.
    let csv_path = dir.path().join("collatz.csv");
    let out = coordinator.cli(&[
        "results",
        "export",
        &job.to_string(),
        "--format",
        "csv",
        "--json-columns",
        "--out",
        csv_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&csv_path).unwrap();
    assert_eq!(
        manifest["exports"]["csv_columns"]["blake3"],
        blake3::hash(text.as_bytes()).to_hex().as_str()
    );
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header[11..],
        [
            "count",
            "histogram",
            "max_at",
            "max_steps",
            "mean_steps",
            "start",
            "sum_steps",
            "wide"
        ]
    );
    let (_, plain) = get(&format!("{base}/results?format=csv"));
    let plain = String::from_utf8(plain).unwrap();
    assert!(
        plain.starts_with(
            "job,unit,name,input_hash,module_hash,output_hash,hosts,engines,fuel,validated_ms,output\n"
        ),
        "{plain}"
    );
    assert_eq!(plain.lines().count(), 6);
    // The start column of each row, by unit, equals the output's.
    let starts: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| {
            // The last 8 cells are the JSON columns; `histogram` is quoted
            // and holds commas, so count from the end.
            let cells: Vec<&str> = l.rsplitn(4, ',').collect();
            cells[2].to_string()
        })
        .collect();
    let expected: Vec<String> = outputs.iter().map(|o| o["start"].to_string()).collect();
    assert_eq!(starts, expected);

    // Bad parameters are refused clearly.
    let err = ureq::get(format!("{base}/results?format=csv&columns=all"))
        .call()
        .unwrap_err();
    assert!(matches!(err, ureq::Error::StatusCode(400)), "{err}");
    let out = coordinator.cli(&["results", "export", &job.to_string(), "--json-columns"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format csv"));

    // The job page shows the licence and the citation, escaped.
    let (_, page) = get(&format!("{}/jobs/{job}", coordinator.http));
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains("<code id=\"license\">CC-BY-4.0</code>"),
        "{page}"
    );
    assert!(page.contains("https://spdx.org/licenses/CC-BY-4.0.html"));
    assert!(page.contains("Collatz &quot;steps&quot;: #1 &lt;b&gt;&amp; more&lt;/b&gt;"));
    assert!(page.contains(&format!("/api/v1/jobs/{job}/CITATION.cff")));
}
