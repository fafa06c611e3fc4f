//! The OpenAPI 3 description of every public route, hand-written with
//! `serde_json::json!` (an OpenAPI crate would add derive macros to every
//! row type for one document). A test checks that every route the router
//! serves is described here; keep the two in step.

use axum::Json;
use serde_json::{Value, json};

fn op(summary: &str, content: &str, params: Value) -> Value {
    json!({
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": { "description": "OK", "content": { content: {} } },
            "4XX": { "description": "`{\"error\": ...}` saying what was wrong",
                     "content": { "application/json": {} } }
        }
    })
}

fn path_id(name: &str, desc: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": desc,
            "schema": { "type": "string" } })
}

fn query(name: &str, desc: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": desc,
            "schema": { "type": "string" } })
}

/// The document.
pub fn document() -> Value {
    let json_ = "application/json";
    let html = "text/html";
    let job = || json!([path_id("id", "job id")]);
    let host = || json!([path_id("id", "host id or hex public key")]);
    let token = json!([{ "bearer": [] }]);
    let mut submit = op("Submit a job (researcher token)", json_, json!([]));
    submit["security"] = token.clone();
    submit["responses"]["201"] = json!({ "description": "Created: `{\"job_id\": N}`" });
    let mut missing = op(
        "Which of these blob hashes are missing (researcher token)",
        json_,
        json!([]),
    );
    missing["security"] = token.clone();
    let mut put_blob = op(
        "Upload a blob named by its BLAKE3 (researcher token)",
        json_,
        json!([path_id("hash", "hex BLAKE3 of the body")]),
    );
    put_blob["security"] = token;
    let dataset_params = json!([
        query("job", "job id; empty or absent for every job"),
        query("page", "1-based page of 50 rows")
    ]);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "peergrid coordinator",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Public read-only dashboard and API of a peergrid volunteer computing grid. \
                Credit is in wasmtime fuel (1 credit = 1 fuel ≈ one wasm instruction). Times are Unix milliseconds."
        },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer",
            "description": "the researcher token printed by `peergrid-coordinator init`" } } },
        "paths": {
            "/": { "get": op("Overview page", html, json!([])) },
            "/jobs/{id}": { "get": op("Job page", html, job()) },
            "/hosts": { "get": op("Host leaderboard by credit", html, json!([])) },
            "/hosts/{id}": { "get": op("Host page", html, host()) },
            "/dataset": { "get": op("Dataset browser", html, dataset_params.clone()) },
            "/api/v1/health": { "get": op("Liveness: `{\"ok\": true}`", json_, json!([])) },
            "/api/v1/overview": { "get": op("Workers online, last hour's throughput, dataset size, jobs in progress", json_, json!([])) },
            "/api/v1/throughput": { "get": op("Successful results and fuel per minute over the last hour", json_, json!([])) },
            "/api/v1/jobs": {
                "get": op("Every job's status", json_, json!([])),
                "post": submit
            },
            "/api/v1/jobs/{id}": { "get": op("A job's status and failed units", json_, job()) },
            "/api/v1/jobs/{id}/progress": { "get": op("A job's page data: status, dataset size, validated units over time", json_, job()) },
            "/api/v1/jobs/{id}/results": { "get": op("Stream a job's dataset", "application/x-ndjson", json!([
                path_id("id", "job id"),
                { "name": "format", "in": "query", "required": false,
                  "schema": { "type": "string", "enum": ["jsonl", "csv"], "default": "jsonl" } }
            ])) },
            "/api/v1/blob/{hash}": { "get": op("Any stored blob (module, input, output) by BLAKE3 hash", "application/octet-stream", json!([
                { "name": "hash", "in": "path", "required": true, "schema": { "type": "string" }, "description": "64 hex digits" }
            ])) },
            "/api/v1/jobs/{id}/manifest": { "get": op("BLAKE3 of every output by unit and of each whole export", json_, job()) },
            "/api/v1/volunteers": { "get": op("Every volunteer (account) with the summed credit of its hosts, highest first", json_, json!([])) },
            "/volunteers": { "get": op("Leaderboard of volunteers (HTML)", "text/html", json!([])) },
            "/stats/volunteers.gz": { "get": op("Gzipped JSON lines: every volunteer with hosts and credit", "application/gzip", json!([])) },
            "/api/v1/hosts": { "get": op("Every host with credit (total and recent average per day), highest first", json_, json!([])) },
            "/api/v1/hosts/{id}": { "get": op("One host: facts, credit, result record, trust", json_, host()) },
            "/api/v1/dataset": { "get": op("One page of the dataset with provenance", json_, dataset_params) },
            "/api/v1/blobs/missing": { "post": missing },
            "/api/v1/blobs/{hash}": { "put": put_blob },
            "/api/v1/openapi.json": { "get": op("This document", json_, json!([])) },
            "/stats/hosts.gz": { "get": op("Gzipped JSON lines: one host per line with credit", "application/gzip", json!([])) },
            "/stats/credit.gz": { "get": op("Gzipped JSON lines: one validated unit per line with the fuel it granted and the agreeing hosts", "application/gzip", json!([])) }
        }
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}
