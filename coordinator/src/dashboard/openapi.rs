//! The OpenAPI 3 description of every public route, hand-written with
//! `serde_json::json!` (an OpenAPI crate would add derive macros to every
//! row type for one document). A test checks that every route the router
//! serves is described here; keep the two in step.

use axum::Json;
use serde_json::{Value, json};

/// The largest job id, as a JSON number.
const MAX_ID: u64 = crate::api::MAX_ROW_ID;

/// An operation answering `200` with `content` (`schema` its body's
/// schema, or `{}`), and `4XX` with an error in `errors` (`application/json`
/// for the API, `text/html` for the pages).
fn op(summary: &str, content: &str, schema: Value, errors: &str, params: Value) -> Value {
    let error_body = if errors == "text/html" {
        json!({ errors: {} })
    } else {
        json!({ errors: { "schema": { "$ref": "#/components/schemas/Error" } } })
    };
    json!({
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": { "description": "OK", "content": { content: { "schema": schema } } },
            "4XX": { "description": "what was wrong with the request", "content": error_body }
        }
    })
}

/// A JSON route: `200` with `schema`, errors as `{"error": ...}`.
fn api(summary: &str, schema: Value, params: Value) -> Value {
    op(
        summary,
        "application/json",
        schema,
        "application/json",
        params,
    )
}

/// An HTML page: errors are HTML pages too.
fn page(summary: &str, params: Value) -> Value {
    op(summary, "text/html", json!({}), "text/html", params)
}

/// A download streamed or built on request: `503` with `Retry-After`
/// when too many are running.
fn download(summary: &str, content: &str, params: Value) -> Value {
    let mut o = op(summary, content, json!({}), "application/json", params);
    o["responses"]["503"] = busy();
    o
}

fn busy() -> Value {
    json!({
        "description": "too many downloads at once: `{\"error\": ...}`; come back after `Retry-After` seconds",
        "headers": { "Retry-After": { "schema": { "type": "integer", "minimum": 0 } } },
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

/// The coordinator's disk is below its free-space reserve.
fn short_of_space() -> Value {
    error(
        "the coordinator is short of disk space and takes no uploads or jobs until its operator frees space",
    )
}

fn error(description: &str) -> Value {
    json!({ "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn job_id() -> Value {
    json!([{ "name": "id", "in": "path", "required": true, "description": "job id",
             "schema": { "type": "integer", "minimum": 0, "maximum": MAX_ID } }])
}

/// A job id and a unit number within it (`/api/v1/jobs/{id}/dataset/{unit}`).
fn job_and_unit() -> Value {
    json!([job_id()[0],
           { "name": "unit", "in": "path", "required": true,
             "description": "unit number within the job (from 1), as the dataset's `unit` shows",
             "schema": { "type": "integer", "minimum": 0, "maximum": MAX_ID } }])
}

fn host_id() -> Value {
    json!([{ "name": "id", "in": "path", "required": true,
             "description": "host id or hex public key", "schema": { "type": "string" } }])
}

fn hash_param(desc: &str) -> Value {
    json!([{ "name": "hash", "in": "path", "required": true, "description": desc,
             "schema": { "$ref": "#/components/schemas/Hash" } }])
}

/// A whole number, or empty (what an HTML form sends for "any").
fn number_or_empty(name: &str, desc: &str, maximum: u64) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": desc,
            "schema": { "anyOf": [
                { "type": "integer", "minimum": 0, "maximum": maximum },
                { "type": "string", "maxLength": 0 }
            ] } })
}

/// The reusable schemas: the error body, a hash, and the rows the API
/// answers with. Objects allow more properties than listed, so adding a
/// field is not a breaking change.
fn schemas() -> Value {
    let count = json!({ "type": "integer", "minimum": 0 });
    json!({
        "Error": {
            "type": "object", "required": ["error"],
            "properties": { "error": { "type": "string", "description": "what went wrong and what to do" } }
        },
        "Hash": { "type": "string", "pattern": "^[0-9a-fA-F]{64}$", "description": "BLAKE3, 64 hex digits" },
        "JobStatus": {
            "type": "object",
            "required": ["id", "name", "module", "researcher", "created_ms", "settings",
                         "units_total", "validated", "failed", "in_progress", "pending", "finished"],
            "properties": {
                "id": count, "name": { "type": "string" },
                "module": { "$ref": "#/components/schemas/Hash" },
                "researcher": { "type": "string" }, "created_ms": count,
                "settings": { "type": "object" },
                "units_total": count, "validated": count, "failed": count,
                "in_progress": count, "pending": count, "finished": { "type": "boolean" },
                "cancelled": count, "cancelled_ms": count,
                "license": { "type": "string", "description": "the dataset's licence, an SPDX expression" },
                "citation": { "$ref": "#/components/schemas/Citation" }
            }
        },
        "Citation": {
            "type": "object", "description": "how to cite the dataset (the job spec's [citation])",
            "properties": {
                "title": { "type": "string" },
                "authors": { "type": "array", "items": { "type": "string" }, "description": "\"Family, Given\", or one name" },
                "doi": { "type": "string" }, "url": { "type": "string" },
                "date_released": { "type": "string", "description": "YYYY-MM-DD" },
                "message": { "type": "string" }
            }
        },
        "DatasetRow": {
            "type": "object",
            "required": ["job", "unit", "name", "input_hash", "module_hash", "output_hash",
                         "hosts", "engines", "fuel", "validated_ms"],
            "properties": {
                "job": count, "unit": count, "name": { "type": "string" },
                "input_hash": { "$ref": "#/components/schemas/Hash" },
                "module_hash": { "$ref": "#/components/schemas/Hash" },
                "output_hash": { "$ref": "#/components/schemas/Hash" },
                "hosts": { "type": "array", "items": { "type": "string" },
                           "description": "hex public keys of the hosts whose outputs agreed" },
                "engines": { "type": "array", "items": { "type": "string" },
                             "description": "the engine configurations the agreeing results ran under" },
                "fuel": count, "validated_ms": count
            }
        },
        "DatasetSize": {
            "type": "object", "required": ["rows"],
            "properties": { "rows": count }
        },
        "Throughput": {
            "type": "object", "required": ["from_ms", "bucket_ms", "buckets"],
            "properties": {
                "from_ms": count, "bucket_ms": count,
                "buckets": { "type": "array", "items": { "type": "object" } }
            }
        },
        "ErrorLog": {
            "type": "object", "required": ["host", "host_key", "received_ms", "error"],
            "properties": {
                "host": count, "host_key": { "type": "string", "description": "hex public key of the host" },
                "received_ms": count,
                "error": { "type": "string", "description": "what the worker said went wrong" },
                "stderr": { "type": "string",
                            "description": "the end of the task's stderr (at most 4 KiB, control characters removed); absent when none was reported" }
            }
        },
        "Credit": {
            "type": "object", "required": ["total", "recent"],
            "properties": { "total": count, "recent": { "type": "number" } }
        },
        "HostEntry": {
            "type": "object",
            "required": ["id", "public_key", "online", "credit", "name", "cpu_model", "slots", "cores", "team"],
            "properties": {
                "id": count, "public_key": { "type": "string" }, "online": { "type": "boolean" },
                "credit": { "$ref": "#/components/schemas/Credit" },
                "name": { "type": "string", "maxLength": 64,
                          "description": "the name the volunteer chose for the host; empty: pages show `host-` and the key's first 8 hex digits" },
                "cpu_model": { "type": "string" },
                "slots": { "type": "integer", "minimum": 0,
                           "description": "tasks the host runs at once: the cores it gives the grid (0: its worker did not say)" },
                "cores": count,
                "team_id": { "type": "integer", "minimum": 0, "nullable": true },
                "team": { "type": "string", "description": "its account's team; empty: none" }
            }
        },
        "HostTask": {
            "type": "object",
            "required": ["job", "job_name", "unit", "unit_name", "state", "sent_ms", "deadline_ms", "credit"],
            "properties": {
                "job": count, "job_name": { "type": "string" }, "unit": count, "unit_name": { "type": "string" },
                "state": { "type": "string",
                           "enum": ["in_progress", "valid", "invalid", "pending", "unvalidated", "error", "timed_out", "voided"] },
                "sent_ms": count, "deadline_ms": count,
                "received_ms": { "type": "integer", "minimum": 0, "nullable": true },
                "elapsed_ms": { "type": "integer", "minimum": 0, "nullable": true },
                "fuel": { "type": "integer", "minimum": 0, "nullable": true },
                "credit": count,
                "error": { "type": "string", "nullable": true, "description": "an error result's first line" }
            }
        },
        "TeamEntry": {
            "type": "object",
            "required": ["id", "name", "founder", "founder_name", "created_ms", "members", "hosts", "hosts_online", "credit"],
            "properties": {
                "id": count, "name": { "type": "string" },
                "founder": { "type": "string", "description": "the founding account's key (hex)" },
                "founder_name": { "type": "string" }, "created_ms": count,
                "members": count, "hosts": count, "hosts_online": count,
                "credit": { "$ref": "#/components/schemas/Credit" }
            }
        }
    })
}

/// The document.
pub fn document() -> Value {
    let json_ = "application/json";
    let obj = |r: &str| json!({ "$ref": format!("#/components/schemas/{r}") });
    let list = |r: &str| json!({ "type": "array", "items": obj(r) });
    let token = json!([{ "bearer": [] }]);
    let unauthorized = error("missing or wrong researcher token");

    let mut submit = api("Submit a job (researcher token)", json!({}), json!([]));
    submit["security"] = token.clone();
    submit["requestBody"] = json!({ "required": true, "content": { json_: { "schema": {
        "type": "object",
        "required": ["name", "module", "args", "settings", "units", "validator", "signature"],
        "properties": {
            "name": { "type": "string" },
            "module": obj("Hash"),
            "args": { "type": "array", "items": { "type": "string" } },
            "settings": { "type": "object" },
            "units": { "type": "array", "items": { "type": "object", "required": ["name", "input"],
                "properties": { "name": { "type": "string" }, "input": obj("Hash") } } },
            "validator": { "type": "object", "required": ["kind"],
                "properties": { "kind": { "type": "string", "enum": ["bitwise", "tolerance", "custom"] } } },
            "signature": { "type": "object", "required": ["endorsement", "signature"] }
        }
    } } } });
    let responses = &mut submit["responses"];
    responses.as_object_mut().map(|r| r.remove("200"));
    responses["201"] = json!({ "description": "Created", "content": { json_: { "schema": {
        "type": "object", "required": ["job_id"], "properties": { "job_id": { "type": "integer", "minimum": 0 } }
    } } } });
    responses["401"] = unauthorized.clone();
    responses["403"] = error("the job's signature does not verify under the project key");
    responses["507"] = short_of_space();

    let mut missing = api(
        "Which of these blob hashes are missing (researcher token)",
        list("Hash"),
        json!([]),
    );
    missing["security"] = token.clone();
    missing["requestBody"] =
        json!({ "required": true, "content": { json_: { "schema": list("Hash") } } });
    missing["responses"]["401"] = unauthorized.clone();

    let count = json!({ "type": "integer", "minimum": 0 });
    let mut cancel = api(
        "Cancel a job (researcher token): its unfinished units get no more copies, hosts running one stop, the dataset keeps what validated",
        json!({ "type": "object", "required": ["job", "cancelled", "validated", "already"],
            "properties": { "job": count, "cancelled": count, "validated": count,
                "already": { "type": "boolean", "description": "the job had been cancelled before" } } }),
        job_id(),
    );
    cancel["security"] = token.clone();
    cancel["requestBody"] = json!({ "required": true, "content": { json_: { "schema": {
        "type": "object", "required": ["signature"], "additionalProperties": false,
        "properties": { "signature": { "type": "string",
            "description": "hex Ed25519 signature of `peergrid-cancel-v1\\0`, the job id (8 bytes, little-endian) and the hex project_signature of the job's endorsement, by the researcher key that signed the job" } } } } } });
    cancel["responses"]["400"] = error("the body is not `{\"signature\": HEX}`");
    cancel["responses"]["401"] = unauthorized.clone();
    cancel["responses"]["403"] = error("the signature is not the job's researcher's");
    cancel["responses"]["503"] =
        error("the coordinator could not store the cancellation now; try again");

    let mut put_blobs = api(
        "Upload many blobs in one body (researcher token): frames of the blob's BLAKE3 (32 bytes), its length (4 bytes, big-endian) and its bytes; each is checked against its hash as it arrives. A bad frame stops the upload with a 400 naming it (the blobs before it are stored)",
        json!({ "type": "object", "required": ["blobs", "bytes"],
            "properties": { "blobs": count, "bytes": count } }),
        json!([]),
    );
    put_blobs["security"] = token.clone();
    put_blobs["requestBody"] = json!({ "required": true, "content": { "application/octet-stream": {
        "schema": { "type": "string", "format": "binary" } } } });
    let responses = &mut put_blobs["responses"];
    let stored = responses["200"].clone();
    responses.as_object_mut().map(|r| r.remove("200"));
    responses["201"] = stored;
    responses["401"] = unauthorized.clone();
    responses["413"] = error("the body is over 256 MiB; send the rest in another request");
    responses["507"] = short_of_space();

    let mut put_blob = api(
        "Upload a blob named by its BLAKE3 (researcher token)",
        json!({}),
        hash_param("BLAKE3 of the body"),
    );
    put_blob["security"] = token;
    put_blob["requestBody"] = json!({ "required": true, "content": { "application/octet-stream": {
        "schema": { "type": "string", "format": "binary" } } } });
    let responses = &mut put_blob["responses"];
    responses.as_object_mut().map(|r| r.remove("200"));
    responses["201"] = json!({ "description": "Stored" });
    responses["401"] = unauthorized;
    responses["507"] = short_of_space();

    let mut results = download(
        "Stream a job's dataset, with its licence (`Peergrid-License`) and links to its CITATION.cff, DOI and licence texts (`Link`) in the headers",
        "application/x-ndjson",
        json!([
            job_id()[0],
            { "name": "format", "in": "query", "required": false,
              "schema": { "type": "string", "enum": ["jsonl", "csv", "parquet"], "default": "jsonl" } },
            { "name": "columns", "in": "query", "required": false,
              "description": "`json`: with format=csv, one more column per top-level key of the outputs that are JSON objects (Parquet always has them; JSONL keeps each output whole, so it changes nothing there)",
              "schema": { "type": "string", "enum": ["json"] } }
        ]),
    );
    results["responses"]["200"]["content"]["text/csv"] = json!({});
    results["responses"]["200"]["content"]["application/vnd.apache.parquet"] = json!({});

    let dataset_params = || {
        json!([
            number_or_empty("job", "job id; empty or absent for every job", MAX_ID),
            number_or_empty(
                "page",
                "1-based page of 50 rows (clamped to the pages there are)",
                u64::MAX
            )
        ])
    };
    let hosts_params = || {
        json!([number_or_empty(
            "page",
            "1-based page of 100 hosts (clamped to the pages there are)",
            u64::MAX
        )])
    };
    let mut hosts_json = api(
        "One page of hosts with credit (total and recent average per day), highest first",
        list("HostEntry"),
        hosts_params(),
    );
    // Links name the ids a response hands out, so a client (and
    // schemathesis's stateful phase) can follow them to existing data.
    hosts_json["responses"]["200"]["links"] = json!({
        "host": { "operationRef": "#/paths/~1api~1v1~1hosts~1{id}/get",
                  "parameters": { "id": "$response.body#/0/public_key" } },
        "hostPage": { "operationRef": "#/paths/~1hosts~1{id}/get",
                      "parameters": { "id": "$response.body#/0/id" } }
    });
    let mut dataset_json = api(
        "One page of the dataset with provenance",
        json!({
        "type": "object", "required": ["page", "per_page", "total_rows", "pages", "rows", "previews"],
        "properties": { "page": { "type": "integer", "minimum": 1 }, "per_page": { "type": "integer" },
                        "total_rows": { "type": "integer" }, "pages": { "type": "integer", "minimum": 1 },
                        "rows": list("DatasetRow"),
                        "previews": { "type": "array", "description": "the start of each row's output, in the order of `rows`",
                            "items": { "type": "object", "required": ["text", "binary", "truncated", "bytes"],
                                "properties": { "text": { "type": "string" }, "binary": { "type": "boolean" },
                                    "truncated": { "type": "boolean" }, "bytes": { "type": "integer", "minimum": 0 } } } } } }),
        dataset_params(),
    );
    dataset_json["responses"]["200"]["links"] = json!({
        "output": { "operationRef": "#/paths/~1api~1v1~1blob~1{hash}/get",
                    "parameters": { "hash": "$response.body#/rows/0/output_hash" } },
        "input": { "operationRef": "#/paths/~1api~1v1~1blob~1{hash}/get",
                   "parameters": { "hash": "$response.body#/rows/0/input_hash" } },
        "job": { "operationRef": "#/paths/~1api~1v1~1jobs~1{id}/get",
                 "parameters": { "id": "$response.body#/rows/0/job" } },
        "manifest": { "operationRef": "#/paths/~1api~1v1~1jobs~1{id}~1manifest/get",
                      "parameters": { "id": "$response.body#/rows/0/job" } },
        "row": { "operationRef": "#/paths/~1api~1v1~1jobs~1{id}~1dataset~1{unit}/get",
                 "parameters": { "id": "$response.body#/rows/0/job", "unit": "$response.body#/rows/0/unit" } }
    });
    let mut dataset_row = api(
        "One validated row of a job's dataset by unit, with provenance; its output is the blob `output_hash` names",
        obj("DatasetRow"),
        job_and_unit(),
    );
    dataset_row["responses"]["200"]["links"] = json!({
        "output": { "operationRef": "#/paths/~1api~1v1~1blob~1{hash}/get",
                    "parameters": { "hash": "$response.body#/output_hash" } }
    });
    let job_logs = api(
        "A job's failed units, 100 per page in unit order, each with its last error result and the end of its stderr",
        json!({
        "type": "object", "required": ["job", "failed_units"],
        "properties": { "job": { "type": "integer", "minimum": 0 },
            "failed_units": { "type": "array", "items": { "type": "object",
                "required": ["unit", "name", "reason"],
                "properties": { "unit": { "type": "integer", "minimum": 0 }, "name": { "type": "string" },
                    "reason": { "type": "string" }, "last_error": obj("ErrorLog") } } },
            "next_after": { "type": "integer", "minimum": 0,
                            "description": "more failed units follow: ask again with `?after=` this" } } }),
        json!([
            job_id()[0],
            number_or_empty("after", "list failed units numbered above this one", MAX_ID)
        ]),
    );
    let unit_logs = api(
        "Every error result of one unit, oldest first, with the end of each run's stderr",
        json!({
        "type": "object", "required": ["job", "unit", "name", "state", "errors"],
        "properties": { "job": { "type": "integer", "minimum": 0 }, "unit": { "type": "integer", "minimum": 0 },
            "name": { "type": "string" },
            "state": { "type": "string", "enum": ["active", "validated", "failed", "cancelled"] },
            "reason": { "type": "string", "description": "why the unit failed, when it did" },
            "errors": list("ErrorLog") } }),
        job_and_unit(),
    );
    hosts_json["responses"]["200"]["headers"] = json!({
        "X-Total-Count": { "description": "how many hosts there are", "schema": { "type": "integer", "minimum": 0 } },
        "Link": { "description": "the previous and next pages", "schema": { "type": "string" } }
    });

    let jobs_params = || {
        json!([number_or_empty(
            "page",
            "1-based page of 50 jobs, newest first (clamped to the pages there are); without it, every job, oldest first",
            u64::MAX
        )])
    };
    let mut jobs_json = api(
        "Every job's status; with `page`, one page of them, newest first",
        list("JobStatus"),
        jobs_params(),
    );
    jobs_json["responses"]["200"]["headers"] = json!({
        "X-Total-Count": { "description": "with `page`: how many jobs there are", "schema": { "type": "integer", "minimum": 0 } },
        "Link": { "description": "with `page`: the previous and next pages", "schema": { "type": "string" } }
    });
    let text = json!({ "type": "string" });
    let project_json = api(
        "The project's name, description, web site, operator, worker download and join string",
        json!({
            "type": "object",
            "required": ["name", "description", "url", "operator", "download_url", "display_name", "join"],
            "properties": { "name": text, "description": text, "url": text, "operator": text,
                "download_url": text, "display_name": text, "join": text } }),
        json!([]),
    );

    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "peergrid coordinator",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Public read-only dashboard and API of a peergrid volunteer computing grid. \
                Credit is in wasmtime fuel (1 credit = 1 fuel ≈ one wasm instruction). Times are Unix milliseconds."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer",
                "description": "the researcher token printed by `peergrid-coordinator init`" } },
            "schemas": schemas()
        },
        "paths": {
            "/": { "get": page("Overview page", json!([])) },
            "/jobs/{id}": { "get": page("Job page", job_id()) },
            "/jobs/{id}/failed": { "get": page("A job's failed units with their last errors and stderr (HTML)", json!([
                job_id()[0], number_or_empty("after", "list failed units numbered above this one", MAX_ID)])) },
            "/jobs/{id}/logs/{unit}": { "get": page("Every error result of one unit (HTML)", job_and_unit()) },
            "/hosts": { "get": page("Host leaderboard by credit", hosts_params()) },
            "/hosts/{id}": { "get": page("Host page, with one page of its tasks", json!([host_id()[0],
                number_or_empty("page", "1-based page of 50 tasks (clamped to the pages there are)", u64::MAX)])) },
            "/dataset": { "get": page("Dataset browser", dataset_params()) },
            "/api/v1/health": { "get": api("Liveness: `{\"ok\": true}`", json!({
                "type": "object", "required": ["ok"], "properties": { "ok": { "type": "boolean" } } }), json!([])) },
            "/api/v1/overview": { "get": api("Workers online, last hour's throughput, dataset size, jobs in progress", json!({
                "type": "object",
                "required": ["now_ms", "workers_online", "hosts_total", "dataset", "jobs_total", "jobs_in_progress"],
                "properties": {
                    "now_ms": { "type": "integer" }, "workers_online": { "type": "integer" },
                    "hosts_total": { "type": "integer" }, "dataset": obj("DatasetSize"),
                    "jobs_total": { "type": "integer" }, "jobs_in_progress": list("JobStatus")
                } }), json!([])) },
            "/api/v1/throughput": { "get": api("Successful results and fuel per minute over the last hour", obj("Throughput"), json!([])) },
            "/api/v1/jobs": {
                "get": jobs_json,
                "post": submit
            },

            "/api/v1/jobs/{id}": { "get": api("A job's status and failed units", json!({
                "allOf": [obj("JobStatus"), { "type": "object",
                    "required": ["failed_units", "args", "signature", "validator"],
                    "properties": { "failed_units": { "type": "array", "items": { "type": "object",
                            "required": ["unit", "name", "reason"] } },
                        "args": { "type": "array", "items": { "type": "string" } },
                        "signature": { "type": "object", "required": ["endorsement", "signature"] },
                        "validator": { "type": "object", "required": ["kind"] },
                        "plots": { "type": "array", "items": { "type": "object", "required": ["kind", "x"] } },
                        "waiting": { "type": "string", "description": "why the unfinished units are not going out, when the scheduler knows" } } }] }), job_id()) },
            "/api/v1/jobs/{id}/progress": { "get": api("A job's page data: status, dataset size, validated units over time", json!({
                "type": "object", "required": ["status", "dataset", "progress"],
                "properties": { "status": obj("JobStatus"), "dataset": obj("DatasetSize"), "progress": obj("Throughput") } }), job_id()) },
            "/api/v1/jobs/{id}/results": { "get": results },
            "/api/v1/jobs/{id}/dataset/{unit}": { "get": dataset_row },
            "/api/v1/jobs/{id}/logs": { "get": job_logs },
            "/api/v1/jobs/{id}/logs/{unit}": { "get": unit_logs },
            "/api/v1/blob/{hash}": { "get": op("Any stored blob (module, input, output) by BLAKE3 hash",
                "application/octet-stream", json!({}), json_, hash_param("64 hex digits")) },
            "/api/v1/jobs/{id}/manifest": { "get": download("BLAKE3 of every output by unit and of each whole export", json_, job_id()) },
            "/api/v1/volunteers": { "get": api("Every volunteer (account) with the summed credit of its hosts, highest first", json!({
                "type": "array", "items": { "type": "object", "required": ["name", "hosts", "credit"],
                    "properties": { "name": { "type": "string" }, "account": { "type": "string", "description": "the account key (hex); empty for an anonymous host" }, "hosts": { "type": "array", "items": { "type": "string" } },
                                    "credit": obj("Credit") } } }), json!([])) },
            "/volunteers": { "get": page("Leaderboard of volunteers (HTML)", json!([])) },
            "/stats/volunteers.gz": { "get": download("Gzipped JSON lines: every volunteer with hosts and credit", "application/gzip", json!([])) },
            "/api/v1/hosts": { "get": hosts_json },
            "/api/v1/hosts/{id}": { "get": api("One host: facts, credit, result record, trust", json!({
                "allOf": [obj("HostEntry"), { "type": "object", "required": ["record", "trust"],
                    "properties": { "record": { "type": "object" }, "trust": { "type": "integer", "minimum": 0 } } }] }), host_id()) },
            "/api/v1/dataset": { "get": dataset_json },
            "/api/v1/blobs/missing": { "post": missing },
            "/api/v1/blobs/{hash}": { "put": put_blob },
            "/api/v1/openapi.json": { "get": api("This document", json!({ "type": "object", "required": ["openapi", "paths"] }), json!([])) },
            "/stats/hosts.gz": { "get": download("Gzipped JSON lines: one host per line with credit", "application/gzip", json!([])) },
            "/stats/credit.gz": { "get": download("Gzipped JSON lines: one validated unit per line with the fuel it granted and the agreeing hosts (units whose credit is granted)", "application/gzip", json!([])) }
        }
    });
    // Beside the others: one more in the literal passes serde_json's
    // macro recursion limit.
    doc["paths"]["/api/v1/jobs/{id}/cancel"] = json!({ "post": cancel });
    doc["paths"]["/api/v1/blobs"] = json!({ "post": put_blobs });
    doc["paths"]["/api/v1/jobs/{id}/CITATION.cff"] = json!({ "get": op(
        "How to cite the job's dataset: a Citation File Format 1.2.0 file (YAML) with its title, authors, DOI, URL and licence",
        "application/yaml", json!({}), "application/json", job_id()) });
    // Hosts' tasks and teams.
    let team_key = json!([{ "name": "team", "in": "path", "required": true,
        "description": "team id, or its name (any ASCII case)", "schema": { "type": "string" } }]);
    let teams_params = || {
        json!([number_or_empty(
            "page",
            "1-based page of 100 teams (clamped to the pages there are)",
            u64::MAX
        )])
    };
    let paged_headers = json!({
        "X-Total-Count": { "description": "how many there are", "schema": { "type": "integer", "minimum": 0 } },
        "Link": { "description": "the previous and next pages", "schema": { "type": "string" } }
    });
    let mut host_tasks = api(
        "One page of the tasks a host was sent (50 per page), newest first, with what became of each and the credit it earned",
        list("HostTask"),
        json!([
            host_id()[0],
            number_or_empty(
                "page",
                "1-based page of 50 tasks (clamped to the pages there are)",
                u64::MAX
            )
        ]),
    );
    host_tasks["responses"]["200"]["headers"] = paged_headers.clone();
    let mut teams_json = api(
        "One page of teams by credit, highest first, with members, hosts and founder",
        list("TeamEntry"),
        teams_params(),
    );
    teams_json["responses"]["200"]["headers"] = paged_headers;
    teams_json["responses"]["200"]["links"] = json!({
        "team": { "operationRef": "#/paths/~1api~1v1~1teams~1{team}/get",
                  "parameters": { "team": "$response.body#/0/id" } }
    });
    let team_json = api(
        "One team: its totals and its members (accounts) by credit, each with its hosts in the team",
        json!({ "allOf": [obj("TeamEntry"), { "type": "object", "required": ["members"],
            "properties": { "members": { "type": "array", "items": { "type": "object",
                "required": ["account", "name", "hosts", "online", "credit"],
                "properties": { "account": { "type": "string" }, "name": { "type": "string" },
                    "hosts": { "type": "array", "description": "[id, name] of each of the member's hosts in the team",
                               "items": { "type": "array" } },
                    "online": { "type": "boolean" }, "credit": obj("Credit") } } } } }] }),
        team_key.clone(),
    );
    doc["paths"]["/api/v1/hosts/{id}/tasks"] = json!({ "get": host_tasks });
    doc["paths"]["/api/v1/teams"] = json!({ "get": teams_json });
    doc["paths"]["/api/v1/teams/{team}"] = json!({ "get": team_json });
    doc["paths"]["/teams"] = json!({ "get": page("Leaderboard of teams (HTML)", teams_params()) });
    doc["paths"]["/teams/{team}"] =
        json!({ "get": page("A team's page: totals and members by credit (HTML)", team_key) });
    // Added apart: one more in the literal passes `json!`'s recursion limit.
    doc["paths"]["/jobs"] = json!({ "get": page("Every job, finished or not, newest first, with state and counts", jobs_params()) });
    doc["paths"]["/about"] =
        json!({ "get": page("The project: what it is, who runs it, how to join", json!([])) });
    doc["paths"]["/api/v1/project"] = json!({ "get": project_json });
    add_plots(&mut doc);
    doc["paths"]["/metrics"] = json!({ "get": op("Prometheus metrics (text exposition format 0.0.4): units by state, jobs, hosts online, results per second, queue depth, writer commit latency, worker connections, refused requests",
        "text/plain", json!({}), "application/json", json!([])) });
    doc
}

/// A job's declared plots: the SVG and the data behind it.
fn add_plots(doc: &mut Value) {
    let n = json!({ "name": "n", "in": "path", "required": true,
        "description": "the plot's number, from 1, in the order the job's spec declares them",
        "schema": { "type": "integer", "minimum": 0, "maximum": MAX_ID } });
    let file = json!({ "name": "file", "in": "path", "required": true,
        "description": "`N.svg`: plot N, from 1, in the order the job's spec declares them",
        "schema": { "type": "string", "pattern": "^[0-9]{1,6}\\.svg$" } });
    let count = json!({ "type": "integer", "minimum": 0 });
    let number = json!({ "type": "number" });
    doc["paths"]["/jobs/{id}/plots/{file}"] = json!({ "get": op(
        "One of the job's declared plots as an SVG image, drawn from a bounded sample of its dataset",
        "image/svg+xml", json!({}), "application/json", json!([job_id()[0], file])) });
    doc["paths"]["/api/v1/jobs/{id}/plots/{n}"] = json!({ "get": api(
        "The data behind one of the job's plots: the points (scatter, line) or bins (histogram), which rows they came from and what was left out",
        json!({
            "type": "object",
            "required": ["job", "plot", "spec", "title", "sample", "skipped", "over_cap", "drawn_ms"],
            "properties": {
                "job": count, "plot": count, "title": { "type": "string" },
                "spec": { "type": "object", "required": ["kind", "x"] },
                "sample": { "type": "object", "required": ["dataset_rows", "every", "rows_read", "byte_limited"],
                    "properties": { "dataset_rows": count, "every": count, "rows_read": count,
                                    "byte_limited": { "type": "boolean" } } },
                "skipped": count, "over_cap": count, "drawn_ms": count,
                "points": { "type": "array", "items": { "type": "object", "required": ["x"],
                    "properties": { "x": number, "y": number, "size": number, "color": number } } },
                "bins": { "type": "array", "items": { "type": "object", "required": ["lo", "hi", "count"],
                    "properties": { "lo": number, "hi": number, "count": count } } }
            } }),
        json!([job_id()[0], n])) });
}

pub async fn serve() -> Json<Value> {
    Json(document())
}
