//! Writes the seed corpus, `fuzz/corpus/<target>/seed-*`: a few real
//! messages of each kind, signed with the fuzz keys of `peergrid_fuzz`, so
//! the fuzzer starts from inputs that get past the first checks. The output
//! is deterministic (Ed25519 signatures are), so re-running it changes no
//! committed file unless a message's shape changed.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use peergrid_fuzz::{PROJECT_SEED, RESEARCHER_SEED};
use peergrid_proto::codec;
use peergrid_proto::signing::{self, ModuleSignature};
use peergrid_proto::spec::{JobSettings, JobSubmission, UnitSpec, Validator};
use peergrid_proto::wire::{
    Attachment, ErrorCode, Exchange, ExchangeReply, Hello, HostFacts, Outcome, Reply, Request,
    Task, TaskLimits, TaskReport, Welcome, WireError, attachment_message, hello_message,
};
use peergrid_proto::{Hash, JoinString};
use serde::Serialize;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let project = SigningKey::from_bytes(&PROJECT_SEED);
    let researcher = SigningKey::from_bytes(&RESEARCHER_SEED);
    let endorsement = signing::endorse(
        &project,
        &researcher.verifying_key().to_bytes(),
        "Fuzz Researcher",
    )?;
    let module = Hash::of(b"(module)");
    let args = vec!["--iterations".to_string(), "4000".to_string()];
    let signature = signing::sign_module(&researcher, &endorsement, &module, &args);
    let forged = {
        let stranger = SigningKey::from_bytes(&[3; 32]);
        let e = signing::endorse(&stranger, &stranger.verifying_key().to_bytes(), "Mallory")?;
        signing::sign_module(&stranger, &e, &module, &args)
    };

    let task = |unit: u64, signature: &ModuleSignature| Task {
        unit,
        job: 7,
        number: unit,
        module,
        input: format!("r = 3.{unit}\n").into_bytes(),
        input_ref: None,
        args: args.clone(),
        limits: TaskLimits {
            memory_bytes: 64 << 20,
            fuel: 20_000_000_000,
            max_output_bytes: 4 << 20,
            wall_ms: 120_000,
            metering: peergrid_proto::spec::Metering::Fuel,
        },
        deadline_ms: 1_790_000_000_000,
        signature: signature.clone(),
        canonical_nan: unit.is_multiple_of(2),
    };
    let report_ok = TaskReport {
        unit: 41,
        outcome: Outcome::Success(b"{\"lyapunov\": -0.25}\n".to_vec()),
        fuel_used: 123_456_789,
        elapsed_ms: 830,
        engine: "wasmtime-48/x86_64/v1".into(),
        resumed: false,
    };
    let report_err = TaskReport {
        unit: 42,
        outcome: Outcome::Error("fuel exhausted after 20000000000 units".into()),
        fuel_used: 20_000_000_000,
        elapsed_ms: 91_000,
        engine: "wasmtime-48/x86_64/v1".into(),
        resumed: true,
    };
    let host = SigningKey::from_bytes(&[4; 32]);
    let cert = [5u8; 32];
    let hello = Hello {
        host_key: host.verifying_key().to_bytes(),
        timestamp_ms: 1_780_000_000_000,
        signature: host
            .sign(&hello_message(&cert, 1_780_000_000_000))
            .to_bytes()
            .to_vec(),
        facts: HostFacts {
            cores: 8,
            memory_bytes: 16 << 30,
            os: "linux".into(),
            arch: "x86_64".into(),
            name: "ada's laptop".into(),
            cpu_model: "AMD Ryzen 7 5800X 8-Core Processor".into(),
            slots: 7,
        },
        worker_version: "0.1.0".into(),
        account: Some({
            let account = SigningKey::from_bytes(&[6; 32]);
            let host_key = host.verifying_key().to_bytes();
            Attachment {
                account_key: account.verifying_key().to_bytes(),
                name: "ada".into(),
                team: "Rustaceans".into(),
                signature: account
                    .sign(&attachment_message(&host_key, "ada", "Rustaceans"))
                    .to_bytes()
                    .to_vec(),
            }
        }),
    };
    let exchange_reply = ExchangeReply {
        accepted: vec![41],
        rejected: vec![(42, "unit 42 is not assigned to this host".into())],
        tasks: vec![task(43, &signature), task(44, &signature), {
            // An input sent by reference, for a mirror.
            let mut t = task(47, &signature);
            t.input_ref = Some(peergrid_proto::wire::BlobRef {
                hash: Hash::of(&t.input),
                len: t.input.len() as u64,
            });
            t.input.clear();
            t
        }],
        retry_after_ms: 0,
        stop: vec![45],
    };

    // codec: a type byte (0 Request, 1 Reply, 2 Task, 3 TaskReport), then the frame.
    let mut codec_seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut add = |name: &'static str, kind: u8, bytes: Vec<u8>| {
        codec_seeds.push((name, [vec![kind], bytes].concat()));
    };
    add("request-hello", 0, codec::encode(&Request::Hello(hello))?);
    add(
        "request-exchange",
        0,
        codec::encode(&Request::Exchange(Exchange {
            reports: vec![report_ok.clone(), report_err.clone()],
            want: 4,
            returned: vec![45],
            held: Some(vec![43, 44, 46]),
        }))?,
    );
    add(
        "request-getblob",
        0,
        codec::encode(&Request::GetBlob(module))?,
    );
    add(
        "reply-welcome",
        1,
        codec::encode(&Reply::Welcome(Welcome {
            host_id: 3,
            mirrors: vec!["https://mirror.example.org/blobs".into()],
        }))?,
    );
    add(
        "reply-exchange",
        1,
        codec::encode(&Reply::Exchange(exchange_reply.clone()))?,
    );
    add(
        "reply-blob",
        1,
        codec::encode(&Reply::Blob(b"\0asm\x01\0\0\0".to_vec()))?,
    );
    add(
        "reply-error",
        1,
        codec::encode(&Reply::Error(WireError {
            code: ErrorCode::Busy,
            message: "too many new hosts from this address; try again in an hour".into(),
        }))?,
    );
    add("task", 2, codec::encode(&task(46, &signature))?);
    add("report-success", 3, codec::encode(&report_ok)?);
    add("report-error", 3, codec::encode(&report_err)?);
    write(&corpus.join("codec"), &codec_seeds)?;

    // task: the reply a worker gets, tasks signed under the pinned key (and one not).
    let mut mixed = exchange_reply.clone();
    mixed.tasks.push(task(47, &forged));
    write(
        &corpus.join("task"),
        &[
            ("signed", codec::encode(&Reply::Exchange(exchange_reply))?),
            ("one-forged", codec::encode(&Reply::Exchange(mixed))?),
        ],
    )?;

    // signature: (chain, module hash, arguments) as a postcard frame.
    write(
        &corpus.join("signature"),
        &[
            ("valid", codec::encode(&(&signature, module, &args))?),
            ("no-args", {
                let sig = signing::sign_module(&researcher, &endorsement, &module, &[]);
                codec::encode(&(&sig, module, Vec::<String>::new()))?
            }),
            ("forged", codec::encode(&(&forged, module, &args))?),
        ],
    )?;

    // job_spec: the examples' TOML specs and a signed JSON submission.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut specs = Vec::new();
    for example in ["lyapunov", "seti", "checkpoint", "collatz-c"] {
        let text = std::fs::read(repo.join("examples").join(example).join("job.toml"))?;
        specs.push((example, text));
    }
    let submission = |validator: Validator| JobSubmission {
        plots: Vec::new(),
        name: "logistic-map lyapunov exponents".into(),
        module,
        args: args.clone(),
        settings: JobSettings {
            quorum: 3,
            target_nresults: Some(4),
            adaptive_replication: true,
            ..JobSettings::default()
        },
        units: vec![
            UnitSpec {
                name: "r-0001".into(),
                input: Hash::of(b"0.1"),
            },
            UnitSpec {
                name: "r-0002".into(),
                input: Hash::of(b"0.2"),
            },
        ],
        validator,
        terms: Default::default(),
        signature: signature.clone(),
    };
    specs.push((
        "submission-tolerance",
        json(&submission(Validator::Tolerance {
            abs_epsilon: 1e-12,
            rel_epsilon: 1e-9,
        }))?,
    ));
    specs.push((
        "submission-custom",
        json(&submission(Validator::Custom {
            module: Hash::of(b"compare"),
        }))?,
    ));
    write(&corpus.join("job_spec"), &specs)?;

    // join_string: what `peergrid-coordinator init` prints, for a few hosts.
    let join = |address: &str| {
        JoinString {
            address: address.into(),
            cert_sha256: cert,
            project_key: project.verifying_key().to_bytes(),
        }
        .to_string()
        .into_bytes()
    };
    write(
        &corpus.join("join_string"),
        &[
            ("ipv4", join("127.0.0.1:7400")),
            ("ipv6", join("[::1]:7400")),
            ("name", join("grid.example.org:443")),
        ],
    )?;

    // modcheck: small modules, accepted and refused for each reason.
    let module_seeds = [
        (
            "command",
            r#"(module (memory (export "memory") 1) (func (export "_start")))"#,
        ),
        (
            "wasi-and-sdk",
            r#"(module
                (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                (import "peergrid" "checkpoint" (func (param i32 i32)))
                (import "peergrid" "restore_len" (func (result i64)))
                (import "peergrid" "progress" (func (param f64)))
                (memory (export "memory") 2 16)
                (table 4 funcref)
                (func (export "_start") (call 3 (f64.const 0.5))))"#,
        ),
        (
            "foreign-import",
            r#"(module (import "env" "system" (func (param i32))) (func (export "_start")))"#,
        ),
        (
            "big-table",
            r#"(module (table 200000 funcref) (func (export "_start")))"#,
        ),
        (
            "big-memory",
            r#"(module (memory 5000) (func (export "_start")))"#,
        ),
        ("library", r#"(module (func (export "run")))"#),
    ];
    let mut modules = Vec::new();
    for (name, text) in module_seeds {
        modules.push((name, wat::parse_str(text)?));
    }
    write(&corpus.join("modcheck"), &modules)?;

    // blob_batch: the piece size, then a batch body: good frames, one
    // corrupted, one cut short.
    let frames = |blobs: &[&[u8]]| {
        let mut body = vec![7u8];
        for b in blobs {
            peergrid_proto::batch::encode_frame(&mut body, &Hash::of(b), b);
        }
        body
    };
    let good = frames(&[b"", b"input 1", &[9u8; 300]]);
    let mut corrupt = frames(&[b"first", b"second"]);
    if let Some(last) = corrupt.last_mut() {
        *last ^= 1;
    }
    let mut cut = good.clone();
    cut.truncate(cut.len() - 100);
    write(
        &corpus.join("blob_batch"),
        &[("good", good), ("corrupt", corrupt), ("cut", cut)],
    )?;
    Ok(())
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec_pretty(value)
}

fn write(dir: &PathBuf, seeds: &[(&str, Vec<u8>)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}
