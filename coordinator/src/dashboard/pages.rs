//! HTML of the dashboard: one shared layout and a function per page.
//!
//! maud escapes every interpolated string, so job and unit names (which
//! researchers choose) cannot inject markup; only the plotters SVG and the
//! fixed CSS and script go in as `PreEscaped`. Every number a test or a
//! scraper may want carries a stable `id`, `class` or `data-*` attribute,
//! listed in `docs/dashboard.md`.

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use peergrid_proto::citation::COMMON_LICENSES;
use peergrid_proto::spec::Metering;
use peergrid_proto::wire::JobId;

use super::charts::{self, Bars};
use super::credit::gfuel;
use super::plots::JobPlots;
use super::{DatasetView, HostView, HostsPage, JobView, Overview, Throughput};
use crate::project::Project;
use crate::store::HostSummary;
use crate::store::JobStatus;

const CSS: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1d2733;background:#f5f7fa}
header{background:#1d3557;padding:.6rem 1.2rem}
header a{color:#fff;margin-right:1.2rem;text-decoration:none}
header a.brand{font-weight:bold}
main{max-width:1100px;margin:0 auto;padding:1rem 1.2rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:1.6rem}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}
.card{background:#fff;border:1px solid #d8dee6;border-radius:6px;padding:.6rem 1rem;min-width:9rem}
.card .v{font-size:1.5rem;font-weight:600;display:block}
.card .k{color:#5b6675;font-size:.85rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e3e8ee;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#eef2f6;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:.85em;word-break:break-all}
code.output-preview{white-space:pre-wrap;display:block;max-height:8rem;overflow:auto}
figure{background:#fff;border:1px solid #d8dee6;border-radius:6px;margin:.8rem 0;padding:.5rem}
figure svg{max-width:100%;height:auto}
figcaption{color:#5b6675;font-size:.9rem}
progress{width:10rem}
.small{font-size:.8rem;color:#5b6675}
.ok{color:#1a7f37}.off{color:#8b949e}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{color:#5b6675}dd{margin:0}
nav.pager a{margin-right:1rem}
pre{background:#fff;border:1px solid #d8dee6;padding:.5rem;overflow-x:auto;white-space:pre-wrap;max-height:24rem;margin:.3rem 0}
";

/// What fuel is, for the public: said beside every number in fuel.
pub(super) const FUEL: &str = "Fuel counts the work a task did: about one unit per WebAssembly instruction it ran, \
    the same on every machine, so it is checked like the result itself. 1 Gfuel = 10⁹ fuel; \
    credit is the fuel of validated results, or what a job that counts no fuel declared per unit.";

/// Refreshes the overview's numbers from the JSON API. The page is
/// complete without it.
const OVERVIEW_SCRIPT: &str = "
setInterval(async()=>{try{const o=await (await fetch('/api/v1/overview')).json();
const set=(id,v)=>{const e=document.getElementById(id);if(e)e.textContent=v;};
set('workers-online',o.workers_online);set('hosts-total',o.hosts_total);
set('results-per-second',o.results_per_second.toFixed(2));
set('fuel-per-second',o.fuel_per_second.toExponential(2));
set('results-last-hour',o.results_last_hour);set('dataset-rows',o.dataset.rows);
set('dataset-bytes',o.dataset.bytes);}catch(e){}},15000);
";

/// A whole page: `title` (none on the front page) and the project's name
/// in `<title>`, the project's name as the brand, the navigation, `body`.
pub(super) fn layout(p: &Project, title: &str, body: Markup) -> String {
    let name = p.display_name();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { @if !title.is_empty() { (title) " · " } (name) }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    a.brand href="/" { (name) }
                    a href="/about" { "About" }
                    a href="/jobs" { "Jobs" }
                    a href="/volunteers" { "Volunteers" }
                    a href="/teams" { "Teams" }
                    a href="/hosts" { "Hosts" }
                    a href="/dataset" { "Dataset" }
                    a href="/api/v1/openapi.json" { "API" }
                }
                main { (body) }
            }
        }
    }
    .into_string()
}

pub fn error(p: &Project, status: StatusCode, msg: &str) -> String {
    layout(
        p,
        status.canonical_reason().unwrap_or("error"),
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p #error { (msg) }
            p { a href="/" { "Back to the overview" } }
        },
    )
}

/// `2024-05-01 12:34:56 UTC` from Unix milliseconds.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(super) fn time(ms: u64) -> Markup {
    html! { time datetime=(ms) data-ms=(ms) { (utc(ms)) } }
}

fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

pub(super) fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

fn card(id: &str, label: &str, value: Markup) -> Markup {
    html! { div.card { span.v id=(id) { (value) } span.k { (label) } } }
}

/// The dataset's licence (each SPDX id linked to its text on spdx.org)
/// and how to cite it.
fn terms(s: &JobStatus) -> Markup {
    let license = s.terms.license.as_deref();
    let c = s.terms.citation.as_ref();
    html! {
        h2 { "Licence and citation" }
        dl #terms {
            dt { "licence" }
            @match license {
                Some(l) => {
                    dd { code #license { (l) }
                        @for id in l.split([' ', '(', ')']).filter(|w| COMMON_LICENSES.contains(w)) {
                            " " a.spdx href={ "https://spdx.org/licenses/" (id) ".html" } rel="license" { (id) }
                        } }
                }
                None => { dd #license-none { "none declared: ask the researcher before reusing the data" } }
            }
            dt { "cite as" }
            dd #citation {
                @match c.map(|c| &c.authors[..]).filter(|a| !a.is_empty()) {
                    Some(authors) => { span #citation-authors { (authors.join("; ")) } }
                    None => { span #citation-authors { (s.researcher) } }
                }
                @if let Some(d) = c.and_then(|c| c.date_released.as_deref()) { " (" span #citation-date { (d) } ")" }
                ". " cite #citation-title { (c.and_then(|c| c.title.as_deref()).unwrap_or(&s.name)) } ". "
                @if let Some(doi) = c.and_then(|c| c.doi.as_deref()) {
                    "DOI " a #citation-doi href={ "https://doi.org/" (doi) } rel="nofollow" { (doi) } ". "
                }
                @if let Some(url) = c.and_then(|c| c.url.as_deref()) {
                    a #citation-url href=(url) rel="nofollow noopener" { (url) }
                }
                @if let Some(m) = c.and_then(|c| c.message.as_deref()) { p #citation-message { (m) } }
            }
        }
        p { a #citation-cff href={ "/api/v1/jobs/" (s.id) "/CITATION.cff" } { "CITATION.cff" }
            " (Citation File Format 1.2.0, for reference managers and GitHub)" }
    }
}

fn downloads(job: JobId) -> Markup {
    html! {
        a #download-csv href={ "/api/v1/jobs/" (job) "/results?format=csv" } { "CSV" } " · "
        a #download-csv-columns href={ "/api/v1/jobs/" (job) "/results?format=csv&columns=json" } { "CSV with JSON outputs as columns" } " · "
        a #download-jsonl href={ "/api/v1/jobs/" (job) "/results?format=jsonl" } { "JSONL" } " · "
        a #download-parquet href={ "/api/v1/jobs/" (job) "/results?format=parquet" } { "Parquet" } " · "
        a #download-cff href={ "/api/v1/jobs/" (job) "/CITATION.cff" } { "CITATION.cff" } " · "
        a #download-manifest href={ "/api/v1/jobs/" (job) "/manifest" } { "checksum manifest" }
    }
}

/// Jobs with their state and counts, linked to their pages and datasets.
pub(super) fn jobs_table(jobs: &[JobStatus]) -> Markup {
    html! {
        table #jobs {
            thead { tr {
                th.num { "job" } th { "name" } th { "researcher" } th { "state" } th { "progress" }
                th.num { "validated" } th.num { "units" } th.num { "in progress" } th.num { "failed" }
                th { "dataset" }
            } }
            tbody {
                @for j in jobs {
                    tr data-job=(j.id) {
                        td.num { (j.id) }
                        td.job-name { a href={ "/jobs/" (j.id) } { (j.name) } }
                        td.researcher { (j.researcher) }
                        td.state data-state=(job_state(j)) { (job_state(j)) }
                        td { progress max=(j.units_total.max(1)) value=(j.validated) {} }
                        td.num.validated { (j.validated) }
                        td.num.units-total { (j.units_total) }
                        td.num.in-progress { (j.in_progress) }
                        td.num.failed { (j.failed) }
                        td { (downloads_inline(j.id)) }
                    }
                }
            }
        }
    }
}

/// A job's state in a word: `finished` (every unit validated or failed),
/// `running` (copies out on hosts) or `waiting` (for a host to take one).
pub fn job_state(j: &JobStatus) -> &'static str {
    if j.cancelled_ms.is_some() {
        "cancelled"
    } else if j.finished {
        "finished"
    } else if j.in_progress > 0 {
        "running"
    } else {
        "waiting"
    }
}

fn downloads_inline(job: JobId) -> Markup {
    html! {
        a href={ "/api/v1/jobs/" (job) "/results?format=csv" } { "csv" } " "
        a href={ "/api/v1/jobs/" (job) "/results?format=jsonl" } { "jsonl" } " "
        a href={ "/dataset?job=" (job) } { "browse" }
    }
}

fn minute_chart(
    t: &Throughput,
    now: u64,
    y_label: &str,
    mean: Option<f64>,
    value: impl Fn(u64, u64) -> f64,
) -> String {
    charts::render(&Bars {
        x_label: "minutes ago",
        y_label,
        x_range: -60.0..1.0,
        bar_width: 1.0,
        mean,
        bars: t
            .buckets
            .iter()
            .map(|b| {
                let x = (b.start_ms as f64 - now as f64) / 60_000.0;
                (x, value(b.count, b.fuel))
            })
            .collect(),
    })
}

pub fn overview(p: &Project, o: &Overview, t: &Throughput, join: &str) -> String {
    // The line across each chart is the hour's average, the card's number.
    let results_chart = minute_chart(
        t,
        o.now_ms,
        "results / s",
        Some(o.results_per_second),
        |n, _| n as f64 / 60.0,
    );
    let fuel_chart = minute_chart(t, o.now_ms, "fuel / s", Some(o.fuel_per_second), |_, f| {
        f as f64 / 60.0
    });
    layout(
        p,
        "",
        html! {
            h1 #project-name { (p.display_name()) }
            @if let Some(first) = p.paragraphs().next() {
                p #project-summary { (first) " " a href="/about" { "About this project" } }
            }
            div.cards {
                (card("workers-online", "workers online (last 2 min)", html! { (o.workers_online) }))
                (card("hosts-total", "hosts ever", html! { (o.hosts_total) }))
                (card("results-per-second", "results / s, average of the last hour (the red line)", html! { (format!("{:.2}", o.results_per_second)) }))
                (card("fuel-per-second", "fuel / s, average of the last hour", html! { (format!("{:.2e}", o.fuel_per_second)) }))
                (card("results-last-hour", "results in the last hour", html! { (o.results_last_hour) }))
                (card("dataset-rows", "dataset rows", html! { (o.dataset.rows) }))
                div.card {
                    span.v { (bytes(o.dataset.bytes)) }
                    span.k { "dataset size (" span #dataset-bytes { (o.dataset.bytes) } " bytes)" }
                }
            }
            h2 { "Throughput, last hour" }
            figure #chart-results { (PreEscaped(results_chart)) figcaption { "Successful results per second: each bar is one minute's average, the red line the hour's (the number above)." } }
            figure #chart-fuel { (PreEscaped(fuel_chart)) figcaption { "Compute rate: fuel per second, each bar one minute, the red line the hour's average. " (FUEL) } }
            h2 { "Jobs in progress (" span #jobs-in-progress { (o.jobs_in_progress.len()) } " of " span #jobs-total { (o.jobs_total) } ")" }
            @if o.jobs_in_progress.is_empty() {
                p.small { "No job is running. Finished jobs' datasets are in the " a href="/dataset" { "dataset browser" } "." }
            } @else {
                (jobs_table(&o.jobs_in_progress))
            }
            h2 { "Volunteer" }
            p { "Run a worker: " code #join-command { "peergrid-worker run --data DIR --join '" (join) "'" }
                " (" a href="/about#join" { "how to join" } ")" }
            p.small { "Machine-readable: " a href="/api/v1/overview" { "/api/v1/overview" } ", "
                a href="/api/v1/throughput" { "/api/v1/throughput" } "; stats dumps "
                a href="/stats/hosts.gz" { "hosts.gz" } ", " a href="/stats/credit.gz" { "credit.gz" } "." }
            script { (PreEscaped(OVERVIEW_SCRIPT)) }
        },
    )
}

pub fn job(p: &Project, v: &JobView, plots: Option<&JobPlots>) -> String {
    let s = &v.status;
    let width_min = v.progress.bucket_ms as f64 / 60_000.0;
    let from = v.progress.from_ms as f64;
    let end = v.progress.buckets.len() as f64 * width_min;
    let chart = charts::render(&Bars {
        x_label: "minutes since the job was submitted",
        y_label: "units validated",
        x_range: 0.0..end.max(1.0),
        bar_width: width_min,
        mean: None,
        bars: v
            .progress
            .buckets
            .iter()
            .map(|b| ((b.start_ms as f64 - from) / 60_000.0, b.count as f64))
            .collect(),
    });
    let settings = &s.settings;
    layout(
        p,
        &s.name,
        html! {
            h1 { "Job " span #job-id { (s.id) } ": " span #job-name { (s.name) } }
            p { progress #job-progress max=(s.units_total.max(1)) value=(s.validated) {} " "
                span #validated-total { (s.validated) } " of " span #units-total { (s.units_total) } " units validated"
                @if s.finished { " · " strong #job-finished { "finished" } } }
            div.cards {
                (card("in-progress-total", "in progress", html! { (s.in_progress) }))
                (card("pending-total", "waiting for a host", html! { (s.pending) }))
                (card("failed-total", "failed", html! { (s.failed) }))
                (card("validated-last-hour", "validated in the last hour", html! { (v.validated_last_hour) }))
                (card("validated-per-minute", "validated / min (whole job)", html! { (format!("{:.2}", v.validated_per_minute)) }))
            }
            h2 { "Progress" }
            figure #chart-validated { (PreEscaped(chart))
                figcaption { "Units validated per " (format!("{width_min:.0}")) "-minute interval." } }
            (job_plots(s.id, plots))
            h2 { "Provenance" }
            dl {
                dt { "researcher" } dd #researcher { (s.researcher) }
                dt { "module (BLAKE3)" } dd { code #module-hash { (s.module.to_hex()) } }
                dt { "submitted" } dd #created { (time(s.created_ms)) }
            }
            h2 { "Validation settings" }
            dl #settings {
                dt { "quorum (agreeing hosts, min_quorum)" } dd data-setting="quorum" { (settings.quorum) }
                dt { "copies issued at first (target_nresults)" } dd data-setting="target_nresults" { (settings.target_nresults()) }
                dt { "most copies per unit (max_total_results)" } dd data-setting="max_total_results" { (settings.max_total_results()) }
                dt { "most errors per unit (max_error_results)" } dd data-setting="max_error_results" { (settings.max_error_results) }
                dt { "most disagreeing results (max_success_results)" } dd data-setting="max_success_results" { (settings.max_success_results()) }
                dt { "deadline (s, delay_bound)" } dd data-setting="deadline_secs" { (settings.deadline_secs) }
                dt { "grace after the deadline (s)" } dd data-setting="grace_secs" { (settings.grace_secs) }
                dt { "copies to distinct volunteers" } dd data-setting="distinct_volunteers" { (settings.distinct_volunteers) }
                dt { "adaptive replication" } dd data-setting="adaptive_replication" { (settings.adaptive_replication) }
                dt { "memory (MiB)" } dd data-setting="memory_mb" { (settings.memory_mb) }
                @match settings.metering {
                    Metering::Fuel => {
                        dt { abbr title=(FUEL) { "fuel" } " per task (most a task may use)" } dd data-setting="fuel" { (settings.fuel) }
                    }
                    Metering::Fixed => {
                        dt { "metering" } dd data-setting="metering" { "fixed: no fuel counted; the deadline stops a runaway task" }
                        dt { "credit per validated unit (declared)" } dd data-setting="credit" { (settings.credit.unwrap_or(0)) }
                    }
                }
            }
            p.small #fuel-meaning { (FUEL) }
            h2 { "Dataset" }
            p { span #dataset-rows { (v.dataset.rows) } " rows, " (bytes(v.dataset.bytes))
                " (" span #dataset-bytes { (v.dataset.bytes) } " bytes of output). "
                a href={ "/dataset?job=" (s.id) } { "Browse" } }
            p { "Download: " (downloads(s.id)) }
            (terms(s))
            @if s.failed > 0 {
                p { a #failed-units-link href={ "/jobs/" (s.id) "/failed" } { "Failed units" }
                    ": why each failed, its last error and the end of its stderr" }
            }
        },
    )
}

/// The job's declared plots, each a figure with what it was drawn from,
/// its SVG and its data; nothing when the job declares none.
fn job_plots(job: JobId, plots: Option<&JobPlots>) -> Markup {
    let Some(plots) = plots.filter(|p| !p.plots.is_empty()) else {
        return html! {};
    };
    html! {
        h2 { "Plots" }
        @for d in &plots.plots {
            @let n = d.data.plot;
            figure.plot id={ "plot-" (n) } data-plot=(n) data-kind=(d.data.spec.kind.name())
                data-shown=(d.data.shown()) data-skipped=(d.data.skipped) {
                (PreEscaped(&d.svg))
                figcaption {
                    strong.plot-title { (d.data.title) } ": " span.plot-caption { (d.data.caption()) } ". "
                    a href={ "/jobs/" (job) "/plots/" (n) ".svg" } { "SVG" } " · "
                    a href={ "/api/v1/jobs/" (job) "/plots/" (n) } { "data (JSON)" }
                }
            }
        }
    }
}

pub fn hosts(p: &Project, v: &HostsPage) -> String {
    let entries = &v.entries;
    let first_rank = (v.page - 1) * v.per_page;
    layout(
        p,
        "Hosts",
        html! {
            h1 { "Hosts by credit" }
            p.small { "1 credit = 1 unit of wasmtime fuel ≈ one wasm instruction; shown in Gfuel (10⁹). "
                "A validated unit grants its fuel to every host that agreed on it. "
                "Recent average: credit per day, exponentially weighted with a 7-day half-life." }
            p { span #hosts-total { (v.total) } " hosts · page " span #page { (v.page) } " of " span #pages { (v.pages) } }
            nav.pager {
                @if v.page > 1 { a #page-prev href={ "/hosts?page=" (v.page - 1) } { "← previous" } }
                @if v.page < v.pages { a #page-next href={ "/hosts?page=" (v.page + 1) } { "next →" } }
            }
            table #leaderboard {
                thead { tr {
                    th.num { "#" } th { "host" } th { "volunteer" } th { "team" }
                    th.num { abbr title="task slots: the cores the volunteer gives the grid (of the machine's cores)" { "cores" } }
                    th { "CPU" } th { "platform" }
                    th.num { "total (" abbr title=(FUEL) { "Gfuel" } ")" } th.num { "recent (" abbr title=(FUEL) { "Gfuel" } "/day)" } th { "online" } th { "last seen" }
                } }
                tbody {
                    @for (i, e) in entries.iter().enumerate() {
                        tr data-host=(e.host.public_key) data-host-id=(e.host.id) {
                            td.num.rank { (first_rank + i as u64 + 1) }
                            td.host-name { a href={ "/hosts/" (e.host.id) } title=(e.host.public_key) { (e.host.display_name()) } }
                            td.account data-account=(e.host.account) { (e.host.account_name) }
                            td.team { @if let Some(t) = e.host.team_id { (team_link(t, &e.host.team)) } }
                            td.num.slots data-slots=(e.host.slots) data-cores=(e.host.cores) { (slots(&e.host)) }
                            td.cpu-model { (e.host.cpu_model) }
                            td { (e.host.os) " / " (e.host.arch) }
                            td.num.credit-total data-fuel=(e.credit.total) { (gfuel(e.credit.total as f64)) }
                            td.num.credit-recent data-fuel-per-day=(format!("{:.3}", e.credit.recent)) { (gfuel(e.credit.recent)) }
                            td.online data-online=(e.online) {
                                @if e.online { span.ok { "online" } } @else { span.off { "offline" } }
                            }
                            td { (time(e.host.last_seen_ms)) }
                        }
                    }
                }
            }
            @if entries.is_empty() { p #no-hosts { "No host has joined yet." } }
        },
    )
}

pub fn volunteers(p: &Project, entries: &[super::VolunteerEntry]) -> String {
    layout(
        p,
        "Volunteers",
        html! {
            h1 { "Volunteers by credit" }
            p.small { "A volunteer is an account: a key that signs the attachment of each of its hosts ("
                code { "peergrid-worker run --account NAME --account-key FILE" }
                "), so nobody else can add hosts to it; its credit is the sum over its hosts. Names are chosen freely; the key after each tells accounts apart. A host without an account counts on its own. "
                "1 credit = 1 unit of wasmtime fuel; shown in Gfuel (10⁹)." }
            table #volunteers {
                thead { tr {
                    th.num { "#" } th { "volunteer" } th { "team" } th { "hosts" }
                    th.num { "total (" abbr title=(FUEL) { "Gfuel" } ")" } th.num { "recent (" abbr title=(FUEL) { "Gfuel" } "/day)" } th { "online" }
                } }
                tbody {
                    @for (i, v) in entries.iter().enumerate() {
                        tr data-volunteer=(v.name) data-account=(v.account) {
                            td.num.rank { (i + 1) }
                            td.name {
                                (v.name)
                                @if v.has_account { " " code.account-key title=(v.account) { (short(&v.account)) } }
                            }
                            td.team { @if let Some(t) = v.team_id { (team_link(t, &v.team)) } }
                            td.host-count data-count=(v.hosts.len()) {
                                @for (j, (h, name)) in v.hosts.iter().zip(&v.host_names).enumerate() {
                                    @if j > 0 { ", " }
                                    a href={ "/hosts/" (h) } title=(h) { (name) }
                                }
                            }
                            td.num.credit-total data-fuel=(v.credit.total) { (gfuel(v.credit.total as f64)) }
                            td.num.credit-recent data-fuel-per-day=(format!("{:.3}", v.credit.recent)) { (gfuel(v.credit.recent)) }
                            td.online data-online=(v.online) {
                                @if v.online { span.ok { "online" } } @else { span.off { "offline" } }
                            }
                        }
                    }
                }
            }
            @if entries.is_empty() { p #no-volunteers { "No volunteer has joined yet." } }
        },
    )
}

/// A host's slots as the "cores" column shows them: `2 of 8`, or the
/// machine's cores alone when its worker did not say.
fn slots(h: &HostSummary) -> String {
    if h.slots == 0 {
        h.cores.to_string()
    } else {
        format!("{} of {}", h.slots, h.cores)
    }
}

/// A link to a team's page by id (names are the volunteers' and may hold
/// anything a URL would have to escape).
pub fn team_link(id: u64, name: &str) -> Markup {
    html! { a.team href={ "/teams/" (id) } data-team-id=(id) { (name) } }
}

/// A host's page; `tasks` is its task table (`tasks::tasks_html`).
pub fn host(p: &Project, v: &HostView, tasks: Markup) -> String {
    let h = &v.entry.host;
    let r = &v.record;
    layout(
        p,
        &h.display_name(),
        html! {
            h1 { span #host-name { (h.display_name()) } " " span.small { "(host " span #host-id { (h.id) } ")" } }
            p { code #host-key { (h.public_key) } }
            p {
                @if h.account.is_empty() { "Anonymous host" } @else {
                    "Volunteer " span #host-account data-account=(h.account) { (h.account_name) }
                    " " code.account-key title=(h.account) { (short(&h.account)) }
                }
                @if let Some(t) = h.team_id { " · team " span #host-team { (team_link(t, &h.team)) } }
            }
            div.cards {
                div.card { span.v #credit-total data-fuel=(v.entry.credit.total) { (gfuel(v.entry.credit.total as f64)) } span.k { "total credit (Gfuel)" } }
                div.card { span.v #credit-recent data-fuel-per-day=(format!("{:.3}", v.entry.credit.recent)) { (gfuel(v.entry.credit.recent)) } span.k { "recent average (Gfuel/day)" } }
                (card("trust", "trust: consecutive valid results", html! { (v.trust) }))
                (card("daily-quota", "daily task quota", html! {
                    @match v.daily_quota { Some(q) => (q), None => "full" }
                }))
                (card("valid-results", "valid results", html! { (r.valid) }))
                (card("invalid-results", "invalid results", html! { (r.invalid) }))
                (card("error-results", "errors", html! { (r.errors) }))
                (card("timeout-results", "timeouts", html! { (r.timeouts) }))
                (card("pending-results", "awaiting validation", html! { (r.unvalidated) }))
                (card("in-progress-results", "running now", html! { (r.in_progress) }))
            }
            h2 { "Machine" }
            dl {
                dt { "status" } dd #online data-online=(v.entry.online) { @if v.entry.online { span.ok { "online" } } @else { span.off { "offline" } } }
                dt { "CPU" } dd #cpu-model { (h.cpu_model) }
                dt { "cores used (task slots)" } dd #slots data-slots=(h.slots) { (slots(h)) }
                dt { "cores" } dd #cores { (h.cores) }
                dt { "memory" } dd { (bytes(h.memory_bytes)) " (" span #memory-bytes { (h.memory_bytes) } " bytes)" }
                dt { "OS" } dd #os { (h.os) }
                dt { "architecture" } dd #arch { (h.arch) }
                dt { "worker version" } dd #version { (h.version) }
                dt { "first seen" } dd #first-seen { (time(h.first_seen_ms)) }
                dt { "last seen" } dd #last-seen { (time(h.last_seen_ms)) }
            }
            p.small #fuel-meaning { (FUEL) }
            p.small { "Valid: successful results in the agreeing set of a validated unit. Invalid: successful results "
                "of a validated unit that disagreed. Trust counts valid results since the last invalid result, error or timeout." }
            (tasks)
        },
    )
}

pub fn dataset(p: &Project, v: &DatasetView) -> String {
    let link = |page: u64| match v.job {
        Some(j) => format!("/dataset?job={j}&page={page}"),
        None => format!("/dataset?page={page}"),
    };
    layout(
        p,
        "Dataset",
        html! {
            h1 { "Dataset" }
            form method="get" action="/dataset" {
                label { "Job " select name="job" {
                    option value="" selected[v.job.is_none()] { "every job" }
                    @for (id, name) in &v.jobs {
                        option value=(id) selected[v.job == Some(*id)] { (id) ": " (name) }
                    }
                } }
                " " button type="submit" { "Show" }
            }
            p { span #dataset-total-rows { (v.total_rows) } " validated rows · page "
                span #page { (v.page) } " of " span #pages { (v.pages) } }
            @if let Some(j) = v.job { p { "Download job " (j) ": " (downloads(j)) } }
            nav.pager {
                @if v.page > 1 { a #page-prev href=(link(v.page - 1)) { "← previous" } }
                @if v.page < v.pages { a #page-next href=(link(v.page + 1)) { "next →" } }
            }
            table #dataset {
                thead { tr {
                    th.num { "unit" } th.num { "job" } th { "name" } th { "hashes (BLAKE3)" }
                    th { "output" } th { "agreeing hosts" } th { "engines" } th.num { "fuel" } th { "validated" }
                } }
                tbody {
                    @for (r, out) in v.rows.iter().zip(&v.previews) {
                        tr data-unit=(r.unit) data-job=(r.job) {
                            td.num.unit { (r.unit) }
                            td.num { a href={ "/jobs/" (r.job) } { (r.job) } }
                            td.name { (r.name) }
                            td.small {
                                "in " code.input-hash data-hash=(r.input_hash.to_hex()) title=(r.input_hash.to_hex()) { (short(&r.input_hash.to_hex())) } br;
                                "mod " code.module-hash data-hash=(r.module_hash.to_hex()) title=(r.module_hash.to_hex()) { (short(&r.module_hash.to_hex())) } br;
                                "out " code.output-hash data-hash=(r.output_hash.to_hex()) title=(r.output_hash.to_hex()) { (short(&r.output_hash.to_hex())) }
                            }
                            td.output data-bytes=(out.bytes) {
                                @if out.binary { span.small { "binary, hex: " } }
                                code.output-preview { (out.text) @if out.truncated { "…" } }
                                @if out.truncated { br; span.small { (bytes(out.bytes)) " in all" } }
                            }
                            td.hosts data-count=(r.hosts.len()) {
                                @for h in &r.hosts { a href={ "/hosts/" (h) } { code { (short(h)) } } " " }
                            }
                            td.small.engines { @for e in &r.engines { code { (e) } br; } }
                            td.num.fuel { (r.fuel) }
                            td.small.validated { (time(r.validated_ms)) }
                        }
                    }
                }
            }
            @if v.rows.is_empty() { p #no-rows { "No validated rows yet." } }
            p.small { "Each row's output hash is the BLAKE3 of its output bytes; the per-job manifest lists them and the "
                "BLAKE3 of each whole export. To re-run a row's unit on your machine in the same sandbox and "
                "check its output hash and fuel: " code { "peergrid verify JOB UNIT" } "." }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
