//! Teams, the recognition a volunteer community is built on (BOINC's team
//! pages): `/teams?page=N`, the leaderboard of teams by credit, and
//! `/teams/{id or name}`, one team with its members by credit; their JSON
//! twins `/api/v1/teams?page=N` (an array with `X-Total-Count` and `Link`,
//! as `/api/v1/hosts`) and `/api/v1/teams/{id or name}`.
//!
//! A team is named in an account's signed attachment (`peergrid-worker run
//! --account NAME --team TEAM`): the first account to name it founds it.
//! Its members are the accounts whose hosts name it; its credit is the sum
//! over those hosts. Totals are summed here from the hosts' credit tallies
//! ([`tally_teams`], pure), so they always agree with the host and
//! volunteer pages.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use maud::{Markup, html};
use serde::Serialize;

use super::credit::gfuel;
use super::pages::{FUEL, layout, short, team_link, time};
use super::{ONLINE_MS, PageQuery, page_or_error, paged_json, view};
use crate::api::{Api, ApiError, ApiResult, MAX_ROW_ID};
use crate::credit::Credit;
use crate::project::Project;
use crate::store::{HostSummary, ReadStore, StoreError, Team};

/// Teams per page of `/teams` and `/api/v1/teams?page=N`.
pub const TEAMS_PER_PAGE: usize = 100;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/teams", get(teams_page))
        .route("/teams/{team}", get(team_page))
        .route("/api/v1/teams", get(teams_json))
        .route("/api/v1/teams/{team}", get(team_json))
}

/// A team with its totals, as the leaderboard shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TeamEntry {
    pub id: u64,
    pub name: String,
    /// The founding account's key (hex) and name ('' when no host of the
    /// account is in the team any more).
    pub founder: String,
    pub founder_name: String,
    pub created_ms: u64,
    /// Accounts with a host in the team.
    pub members: u64,
    pub hosts: u64,
    /// Hosts that exchanged within the last two minutes.
    pub hosts_online: u64,
    /// The sum of its hosts' credit.
    pub credit: Credit,
}

/// One member of a team: an account and its hosts in the team.
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    /// The account key (hex).
    pub account: String,
    /// The name the account shows ('' if it chose none).
    pub name: String,
    /// The member's hosts in the team: ids and the names pages show.
    pub hosts: Vec<(u64, String)>,
    pub online: bool,
    pub credit: Credit,
}

/// A team's page: its totals and its members, highest credit first.
#[derive(Clone, Debug, Serialize)]
pub struct TeamView {
    #[serde(flatten)]
    pub team: TeamEntry,
    pub members: Vec<Member>,
}

/// One page of the team leaderboard.
#[derive(Clone, Debug, Serialize)]
pub struct TeamsPage {
    /// 1-based, clamped to the pages there are.
    pub page: u64,
    pub pages: u64,
    pub per_page: u64,
    pub total: u64,
    pub teams: Vec<TeamEntry>,
}

/// Every team with its totals from `hosts` (the hosts in any team), by
/// total credit, then recent credit, highest first, then by id. Pure.
pub fn tally_teams(teams: Vec<Team>, hosts: &[HostSummary], now: u64) -> Vec<TeamEntry> {
    let mut entries: BTreeMap<u64, (TeamEntry, std::collections::BTreeSet<&str>)> = teams
        .into_iter()
        .map(|t| {
            let entry = TeamEntry {
                id: t.id,
                name: t.name,
                founder: t.founder,
                founder_name: String::new(),
                created_ms: t.created_ms,
                members: 0,
                hosts: 0,
                hosts_online: 0,
                credit: Credit::default(),
            };
            (t.id, (entry, Default::default()))
        })
        .collect();
    for h in hosts {
        let Some((e, accounts)) = h.team_id.and_then(|t| entries.get_mut(&t)) else {
            continue;
        };
        e.hosts += 1;
        e.hosts_online += u64::from(online(h, now));
        e.credit.add(h.credit.at(now));
        if !h.account.is_empty() {
            accounts.insert(&h.account);
        }
        if h.account == e.founder && e.founder_name.is_empty() {
            e.founder_name = h.account_name.clone();
        }
    }
    let mut out: Vec<TeamEntry> = entries
        .into_values()
        .map(|(mut e, accounts)| {
            e.members = accounts.len() as u64;
            e
        })
        .collect();
    out.sort_by(|a, b| {
        b.credit
            .total
            .cmp(&a.credit.total)
            .then(b.credit.recent.total_cmp(&a.credit.recent))
            .then(a.id.cmp(&b.id))
    });
    out
}

/// A team's members from its hosts, highest total credit first. Pure.
pub fn members(hosts: &[HostSummary], now: u64) -> Vec<Member> {
    let mut by_account: BTreeMap<&str, Member> = BTreeMap::new();
    for h in hosts {
        let m = by_account.entry(&h.account).or_insert_with(|| Member {
            account: h.account.clone(),
            name: h.account_name.clone(),
            hosts: Vec::new(),
            online: false,
            credit: Credit::default(),
        });
        m.hosts.push((h.id, h.display_name()));
        m.online |= online(h, now);
        m.credit.add(h.credit.at(now));
    }
    let mut out: Vec<Member> = by_account.into_values().collect();
    out.sort_by(|a, b| {
        b.credit
            .total
            .cmp(&a.credit.total)
            .then(b.credit.recent.total_cmp(&a.credit.recent))
            .then(a.account.cmp(&b.account))
    });
    out
}

fn online(h: &HostSummary, now: u64) -> bool {
    h.last_seen_ms >= now.saturating_sub(ONLINE_MS)
}

/// Page `page` (1-based, clamped) of the teams by credit.
pub fn teams_view(store: &dyn ReadStore, now: u64, page: u64) -> Result<TeamsPage, StoreError> {
    let all = tally_teams(store.teams()?, &store.team_hosts(None)?, now);
    let total = all.len() as u64;
    let per_page = TEAMS_PER_PAGE as u64;
    let pages = total.div_ceil(per_page).max(1);
    let page = page.clamp(1, pages);
    let teams = all
        .into_iter()
        .skip(((page - 1) * per_page) as usize)
        .take(TEAMS_PER_PAGE)
        .collect();
    Ok(TeamsPage {
        page,
        pages,
        per_page,
        total,
        teams,
    })
}

/// The team with id `key` or, failing that, named `key` (any ASCII case).
pub fn team_view(
    store: &dyn ReadStore,
    key: &str,
    now: u64,
) -> Result<Option<TeamView>, StoreError> {
    let by_id = match key.parse::<u64>() {
        Ok(id) if id <= MAX_ROW_ID => store.team(id)?,
        _ => None,
    };
    let team = match by_id {
        Some(t) => Some(t),
        None => store.team_by_name(key)?,
    };
    let Some(team) = team else {
        return Ok(None);
    };
    let hosts = store.team_hosts(Some(team.id))?;
    let Some(entry) = tally_teams(vec![team], &hosts, now).pop() else {
        return Ok(None);
    };
    Ok(Some(TeamView {
        team: entry,
        members: members(&hosts, now),
    }))
}

async fn teams_page(
    State(api): State<Arc<Api>>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let p = api.project.get();
    let page = async {
        let Query(q) = q?;
        let page = q.page()?;
        let v = view(&api, move |s, now| teams_view(s, now, page)).await?;
        Ok(teams_html(&p, &v))
    };
    page_or_error(&p, page.await)
}

async fn teams_json(
    State(api): State<Arc<Api>>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let page = q.page()?;
    let v = view(&api, move |s, now| teams_view(s, now, page)).await?;
    Ok(paged_json(
        "/api/v1/teams",
        v.page,
        v.pages,
        v.total,
        v.teams,
    ))
}

async fn team_view_or_404(api: &Api, key: String) -> ApiResult<TeamView> {
    let shown = key.clone();
    view(api, move |s, now| team_view(s, &key, now))
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no team {shown}")))
}

async fn team_page(
    State(api): State<Arc<Api>>,
    key: Result<Path<String>, PathRejection>,
) -> Response {
    let p = api.project.get();
    let page = async {
        let Path(key) = key?;
        Ok(team_html(&p, &team_view_or_404(&api, key).await?))
    };
    page_or_error(&p, page.await)
}

async fn team_json(
    State(api): State<Arc<Api>>,
    key: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<TeamView>> {
    let Path(key) = key?;
    Ok(Json(team_view_or_404(&api, key).await?))
}

fn credit_cells(c: &Credit) -> Markup {
    html! {
        td.num.credit-total data-fuel=(c.total) { (gfuel(c.total as f64)) }
        td.num.credit-recent data-fuel-per-day=(format!("{:.3}", c.recent)) { (gfuel(c.recent)) }
    }
}

fn founder(t: &TeamEntry) -> Markup {
    html! {
        @if t.founder_name.is_empty() { "account " } @else { (t.founder_name) " " }
        code.account-key title=(t.founder) { (short(&t.founder)) }
    }
}

/// The page `/teams`.
pub fn teams_html(p: &Project, v: &TeamsPage) -> String {
    let first_rank = (v.page - 1) * v.per_page;
    layout(
        p,
        "Teams",
        html! {
            h1 { "Teams by credit" }
            p.small { "A team is named by its members' accounts ("
                code { "peergrid-worker run --account NAME --team TEAM" }
                "); the first account to name it founds it. Its credit is the sum over its members' hosts. "
                "1 credit = 1 unit of wasmtime fuel; shown in Gfuel (10⁹)." }
            p { span #teams-total { (v.total) } " teams · page " span #page { (v.page) } " of " span #pages { (v.pages) } }
            nav.pager {
                @if v.page > 1 { a #page-prev href={ "/teams?page=" (v.page - 1) } { "← previous" } }
                @if v.page < v.pages { a #page-next href={ "/teams?page=" (v.page + 1) } { "next →" } }
            }
            table #teams {
                thead { tr {
                    th.num { "#" } th { "team" } th.num { "members" } th.num { "hosts" }
                    th.num { "total (" abbr title=(FUEL) { "Gfuel" } ")" } th.num { "recent (" abbr title=(FUEL) { "Gfuel" } "/day)" }
                    th { "founded by" } th { "founded" }
                } }
                tbody {
                    @for (i, t) in v.teams.iter().enumerate() {
                        tr data-team-id=(t.id) data-team=(t.name) {
                            td.num.rank { (first_rank + i as u64 + 1) }
                            td.name { (team_link(t.id, &t.name)) }
                            td.num.members data-count=(t.members) { (t.members) }
                            td.num.hosts data-count=(t.hosts) data-online=(t.hosts_online) { (t.hosts) }
                            (credit_cells(&t.credit))
                            td.founder { (founder(t)) }
                            td { (time(t.created_ms)) }
                        }
                    }
                }
            }
            @if v.teams.is_empty() { p #no-teams { "No team yet: name one with " code { "--team" } "." } }
            p.small { "The same as JSON: " a href={ "/api/v1/teams?page=" (v.page) } { "/api/v1/teams?page=" (v.page) } "." }
        },
    )
}

/// The page `/teams/{id}`.
pub fn team_html(p: &Project, v: &TeamView) -> String {
    let t = &v.team;
    layout(
        p,
        &format!("Team {}", t.name),
        html! {
            h1 { "Team " span #team-name { (t.name) } }
            div.cards {
                div.card { span.v #credit-total data-fuel=(t.credit.total) { (gfuel(t.credit.total as f64)) } span.k { "total credit (Gfuel)" } }
                div.card { span.v #credit-recent data-fuel-per-day=(format!("{:.3}", t.credit.recent)) { (gfuel(t.credit.recent)) } span.k { "recent average (Gfuel/day)" } }
                div.card { span.v #members-total { (t.members) } span.k { "members" } }
                div.card { span.v #hosts-total { (t.hosts) } span.k { "hosts (" (t.hosts_online) " online)" } }
            }
            dl {
                dt { "founded by" } dd #founder { (founder(t)) }
                dt { "founded" } dd #founded { (time(t.created_ms)) }
            }
            h2 { "Members by credit" }
            table #members {
                thead { tr {
                    th.num { "#" } th { "member" } th { "hosts" }
                    th.num { "total (" abbr title=(FUEL) { "Gfuel" } ")" } th.num { "recent (" abbr title=(FUEL) { "Gfuel" } "/day)" } th { "online" }
                } }
                tbody {
                    @for (i, m) in v.members.iter().enumerate() {
                        tr data-account=(m.account) {
                            td.num.rank { (i + 1) }
                            td.name {
                                @if m.name.is_empty() { "account " } @else { (m.name) " " }
                                code.account-key title=(m.account) { (short(&m.account)) }
                            }
                            td.hosts data-count=(m.hosts.len()) {
                                @for (j, (id, name)) in m.hosts.iter().enumerate() {
                                    @if j > 0 { ", " }
                                    a href={ "/hosts/" (id) } { (name) }
                                }
                            }
                            (credit_cells(&m.credit))
                            td.online data-online=(m.online) {
                                @if m.online { span.ok { "online" } } @else { span.off { "offline" } }
                            }
                        }
                    }
                }
            }
            p.small { a href="/teams" { "All teams" } " · the same as JSON: "
                a href={ "/api/v1/teams/" (t.id) } { "/api/v1/teams/" (t.id) } "." }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credit::CreditTally;

    fn host(id: u64, account: &str, team: Option<u64>, total: u64, seen: u64) -> HostSummary {
        HostSummary {
            id,
            public_key: format!("{id:064x}"),
            cores: 4,
            memory_bytes: 0,
            os: String::new(),
            arch: String::new(),
            version: String::new(),
            first_seen_ms: 0,
            last_seen_ms: seen,
            account: account.into(),
            account_name: format!("name of {account}"),
            name: String::new(),
            cpu_model: String::new(),
            slots: 1,
            team_id: team,
            team: String::new(),
            credit: CreditTally {
                total,
                recent: 0.0,
                at_ms: 0,
            },
        }
    }

    fn team(id: u64, name: &str, founder: &str) -> Team {
        Team {
            id,
            name: name.into(),
            founder: founder.into(),
            created_ms: 5,
        }
    }

    #[test]
    fn teams_sum_their_hosts_and_count_accounts_once() {
        let now = 1_000_000;
        let hosts = [
            host(1, "aa", Some(1), 10, now),
            host(2, "aa", Some(1), 5, 0),
            host(3, "bb", Some(1), 1, 0),
            host(4, "cc", Some(2), 100, 0),
            // A host whose team is not listed (deleted meanwhile) counts
            // nowhere.
            host(5, "dd", Some(9), 1000, now),
        ];
        let teams = tally_teams(
            vec![
                team(1, "Rust", "bb"),
                team(2, "C", "zz"),
                team(3, "empty", "yy"),
            ],
            &hosts,
            now,
        );
        let by_name: Vec<(&str, u64, u64, u64, u64)> = teams
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.credit.total,
                    t.members,
                    t.hosts,
                    t.hosts_online,
                )
            })
            .collect();
        assert_eq!(
            by_name,
            [
                ("C", 100, 1, 1, 0),
                ("Rust", 16, 2, 3, 1),
                ("empty", 0, 0, 0, 0)
            ]
        );
        assert_eq!(teams[1].founder_name, "name of bb");
        assert_eq!(teams[0].founder_name, "", "the founder left the team");

        let m = members(&hosts[..3], now);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].account.as_str(), m[0].credit.total, m[0].online),
            ("aa", 15, true)
        );
        assert_eq!(m[0].hosts.len(), 2);
        assert_eq!(m[0].hosts[0].1, "host-00000000");
        assert_eq!(
            (m[1].account.as_str(), m[1].credit.total, m[1].online),
            ("bb", 1, false)
        );
    }
}
