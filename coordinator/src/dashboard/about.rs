//! The project's page, `/about` (and its JSON twin `/api/v1/project`):
//! what the project is, in the operator's words (`init --name
//! --description --url --operator`, `project set`), who runs it, and how
//! a volunteer joins: which program, where to get it, the command with the
//! join string.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use maud::html;
use serde::Serialize;

use super::page_or_error;
use super::pages::layout;
use crate::api::Api;
use crate::project::Project;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/about", get(about_page))
        .route("/api/v1/project", get(project_json))
}

/// The project as `/api/v1/project` shows it: the operator's text and the
/// join string.
#[derive(Serialize)]
pub struct ProjectView {
    #[serde(flatten)]
    pub project: Project,
    /// The name pages show ("peergrid" until the operator names it).
    pub display_name: String,
    /// What volunteers give `peergrid-worker` to join.
    pub join: String,
}

async fn project_json(State(api): State<Arc<Api>>) -> Json<ProjectView> {
    let project = (*api.project.get()).clone();
    Json(ProjectView {
        display_name: project.display_name().to_string(),
        project,
        join: api.join.clone(),
    })
}

async fn about_page(State(api): State<Arc<Api>>) -> Response {
    let p = api.project.get();
    page_or_error(&p, Ok(about(&p, &api.join)))
}

/// The page `/about`.
pub fn about(p: &Project, join: &str) -> String {
    layout(
        p,
        "About",
        html! {
            h1 { "About " span #project-name { (p.display_name()) } }
            div #project-description {
                @for para in p.paragraphs() { p { (para) } }
                @if p.description.trim().is_empty() {
                    p.small { "The operator has not described this project yet." }
                }
            }
            dl {
                @if !p.operator.is_empty() {
                    dt { "run by" } dd #project-operator { (p.operator) }
                }
                @if !p.url.is_empty() {
                    dt { "web site" } dd #project-url {
                        @match p.link() {
                            Some(url) => a href=(url) rel="nofollow noopener" { (url) },
                            None => (p.url),
                        }
                    }
                }
            }
            h2 #join { "Join: give your computer's spare time" }
            p { "Volunteers run " strong { code { "peergrid-worker" } } ", one program for Linux, macOS and Windows. "
                "It computes only while the machine is otherwise idle (it yields when you work and pauses on battery), "
                "runs every task in a WebAssembly sandbox with hard limits on memory and time, and can never touch your files or network." }
            ol {
                li { "Get " code { "peergrid-worker" } ": "
                    @match p.download_link() {
                        Some(url) => { "download it from " a #worker-download href=(url) rel="nofollow noopener" { (url) } "." }
                        None => { "build it from the peergrid source with "
                            code #worker-build { "cargo build --release -p peergrid-worker" } " (the program is "
                            code { "target/release/peergrid-worker" } ")." }
                    }
                }
                li { "Install it as a service that starts at boot (Linux, systemd):" br;
                    code #install-command { "peergrid-worker install --join '" (join) "'" } }
                li { "Or run it in a terminal:" br;
                    code #run-command { "peergrid-worker run --data ~/.local/share/peergrid-worker --join '" (join) "'" } }
                li { "See what it is doing and the credit it earned: " code { "peergrid-worker status" } "." }
            }
            p.small { "Add " code { "--account NAME" } " to either command to show your name on the "
                a href="/volunteers" { "volunteers" } " page; to gather several machines under one account, copy the account key ("
                code { "DATA/account.key" } ") to each (see the worker's documentation)." }
            h2 { "What you see here" }
            p { "Every result is computed on volunteers' machines, and kept only once enough of them agree as the job asks (bit for bit unless it says otherwise). "
                "The " a href="/jobs" { "jobs" } " list every computation the project ran, the "
                a href="/dataset" { "dataset" } " every agreed result with the hashes to check it, and the "
                a href="/hosts" { "hosts" } " page the machines that computed them." }
        },
    )
}
