//! A dataset's terms: the licence a job declares for its dataset (an SPDX
//! licence expression) and how to cite it, checked where a spec or a
//! submission is read, and rendered as a Citation File Format 1.2.0
//! document (`CITATION.cff`).
//!
//! **The licence check.** An expression is parsed by SPDX's grammar
//! (`AND`, `OR`, `WITH`, parentheses) and each licence id must be one of
//! [`COMMON_LICENSES`] (matched without regard to case and written back in
//! SPDX's spelling) or a `LicenseRef-…` of the researcher's own. A plain
//! syntactic check would let `CC-BY-4` or `CC-BY-4.0-SA` through and leave
//! a dataset effectively unlicensed without anyone noticing; the full SPDX
//! list (700 ids, most of them software licences nobody puts on data)
//! would be a large table to keep in step. The list holds the data and
//! content licences (Creative Commons, Open Data Commons, CDLA, national
//! open-government licences) and the common software ones; anything else
//! is still expressible as `LicenseRef-<name>`, as SPDX intends.
//! Exceptions after `WITH` are checked for their syntax only.
//!
//! Everything here is researcher text that the public's browsers and
//! other people's tools read: lengths are bounded, control characters are
//! refused, and [`citation_cff`] quotes every string.

use serde::{Deserialize, Serialize};

/// Longest licence expression.
pub const MAX_LICENSE: usize = 200;
/// Longest title, author, DOI or message.
pub const MAX_CITATION_TEXT: usize = 500;
/// Longest URL.
pub const MAX_CITATION_URL: usize = 2000;
/// Most authors of one citation.
pub const MAX_AUTHORS: usize = 100;

/// SPDX ids a dataset licence may name (see the module's doc).
pub const COMMON_LICENSES: &[&str] = &[
    // Data and content
    "CC0-1.0",
    "CC-BY-4.0",
    "CC-BY-SA-4.0",
    "CC-BY-ND-4.0",
    "CC-BY-NC-4.0",
    "CC-BY-NC-SA-4.0",
    "CC-BY-NC-ND-4.0",
    "CC-BY-3.0",
    "CC-BY-SA-3.0",
    "CC-BY-ND-3.0",
    "CC-BY-NC-3.0",
    "CC-BY-NC-SA-3.0",
    "CC-BY-NC-ND-3.0",
    "CC-BY-2.5",
    "CC-BY-2.0",
    "CC-BY-SA-2.0",
    "CC-PDDC",
    "PDDL-1.0",
    "ODC-By-1.0",
    "ODbL-1.0",
    "CDLA-Permissive-1.0",
    "CDLA-Permissive-2.0",
    "CDLA-Sharing-1.0",
    "OGL-UK-3.0",
    "OGL-Canada-2.0",
    "etalab-2.0",
    "DL-DE-BY-2.0",
    "DL-DE-ZERO-2.0",
    "GFDL-1.3-only",
    "GFDL-1.3-or-later",
    "OFL-1.1",
    "Unlicense",
    // Software
    "0BSD",
    "MIT",
    "MIT-0",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "BSL-1.0",
    "MPL-2.0",
    "EPL-2.0",
    "EUPL-1.2",
    "CECILL-2.1",
    "Artistic-2.0",
    "UPL-1.0",
    "BlueOak-1.0.0",
    "PostgreSQL",
    "Python-2.0",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "AGPL-3.0-only",
    "AGPL-3.0-or-later",
];

/// What a job says about its dataset's reuse: both optional. Flattened
/// into the submission and the job's API bodies as `license` and
/// `citation`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetTerms {
    /// An SPDX licence expression, in SPDX's spelling (see [`check_license`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citation: Option<Citation>,
}

/// How to cite a dataset (the job spec's `[citation]` table). Every field
/// is optional: the title defaults to the job's name and the authors to
/// the endorsed name of the researcher who signed it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Citation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// People as `"Family, Given"`; anything without a comma (a team, an
    /// organisation) is cited as one name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
    /// A DOI such as `10.5281/zenodo.1234567`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doi: Option<String>,
    /// Where the dataset or the project is described (`http(s)://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Release date, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_released: Option<String>,
    /// What users of the dataset are asked to do, in one paragraph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Every key of the spec's `[citation]` table (a test keeps it true).
pub const CITATION_FIELDS: &[&str] =
    &["title", "authors", "doi", "url", "date_released", "message"];

/// Why terms were refused; the caller names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {problem}")]
pub struct TermsError {
    pub field: &'static str,
    pub problem: String,
}

fn refuse(field: &'static str, problem: impl Into<String>) -> TermsError {
    TermsError {
        field,
        problem: problem.into(),
    }
}

impl DatasetTerms {
    /// Checks both and writes the licence in SPDX's spelling.
    pub fn normalise(&mut self) -> Result<(), TermsError> {
        if let Some(l) = &self.license {
            self.license = Some(check_license(l)?);
        }
        if let Some(c) = &self.citation {
            c.validate()?;
        }
        Ok(())
    }

    /// Checks both, as they are (a submission carries them normalised).
    pub fn validate(&self) -> Result<(), TermsError> {
        if let Some(l) = &self.license
            && check_license(l)? != *l
        {
            return Err(refuse(
                "license",
                "must be written in SPDX's spelling, as `peergrid job submit` writes it",
            ));
        }
        if let Some(c) = &self.citation {
            c.validate()?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.license.is_none() && self.citation.is_none()
    }
}

/// A token of a licence expression.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    Open,
    Close,
    And,
    Or,
    With,
    Word(&'a str),
}

impl std::fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Open => f.write_str("`(`"),
            Token::Close => f.write_str("`)`"),
            Token::And => f.write_str("AND"),
            Token::Or => f.write_str("OR"),
            Token::With => f.write_str("WITH"),
            Token::Word(w) => write!(f, "`{w}`"),
        }
    }
}

fn tokens(expr: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in expr.char_indices() {
        let boundary = c.is_whitespace() || c == '(' || c == ')';
        if boundary {
            if let Some(s) = start.take() {
                out.push(word(&expr[s..i]));
            }
            match c {
                '(' => out.push(Token::Open),
                ')' => out.push(Token::Close),
                _ => {}
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(word(&expr[s..]));
    }
    out
}

fn word(w: &str) -> Token<'_> {
    match w {
        "AND" => Token::And,
        "OR" => Token::Or,
        "WITH" => Token::With,
        w => Token::Word(w),
    }
}

fn is_idstring(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A licence id in SPDX's spelling, or why it is refused.
fn license_id(w: &str) -> Result<String, TermsError> {
    if let Some(known) = COMMON_LICENSES.iter().find(|l| l.eq_ignore_ascii_case(w)) {
        return Ok(known.to_string());
    }
    let own = |s: &str| s.strip_prefix("LicenseRef-").is_some_and(is_idstring);
    if own(w)
        || w.strip_prefix("DocumentRef-")
            .and_then(|r| r.split_once(':'))
            .is_some_and(|(doc, lic)| is_idstring(doc) && own(lic))
    {
        return Ok(w.to_string());
    }
    if matches!(w.to_ascii_lowercase().as_str(), "and" | "or" | "with") {
        return Err(refuse(
            "license",
            format!("has `{w}`: write the operators AND, OR and WITH in capitals"),
        ));
    }
    Err(refuse(
        "license",
        format!(
            "names `{w}`, which is not a licence id peergrid knows; use an SPDX id such as \
             CC-BY-4.0, CC0-1.0 or ODbL-1.0 (the list is in docs/job-spec.md), or \
             LicenseRef-<name> for a licence of your own"
        ),
    ))
}

/// Parses by SPDX's grammar (`OR` binds loosest, then `AND`, then `WITH`).
struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    at: usize,
    out: String,
}

impl Parser<'_> {
    fn next(&mut self) -> Option<&Token<'_>> {
        let t = self.tokens.get(self.at);
        self.at += 1;
        t
    }

    fn peek(&self) -> Option<&Token<'_>> {
        self.tokens.get(self.at)
    }

    fn expr(&mut self) -> Result<(), TermsError> {
        self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            self.out.push_str(" OR ");
            self.and()?;
        }
        Ok(())
    }

    fn and(&mut self) -> Result<(), TermsError> {
        self.with()?;
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            self.out.push_str(" AND ");
            self.with()?;
        }
        Ok(())
    }

    fn with(&mut self) -> Result<(), TermsError> {
        self.primary()?;
        if self.peek() == Some(&Token::With) {
            self.at += 1;
            match self.next() {
                Some(Token::Word(e)) if is_idstring(e) => {
                    let e = e.to_string();
                    self.out.push_str(" WITH ");
                    self.out.push_str(&e);
                }
                _ => {
                    return Err(refuse(
                        "license",
                        "needs an exception id after WITH, such as Classpath-exception-2.0",
                    ));
                }
            }
        }
        Ok(())
    }

    fn primary(&mut self) -> Result<(), TermsError> {
        match self.next() {
            Some(Token::Open) => {
                self.out.push('(');
                self.expr()?;
                if self.next() != Some(&Token::Close) {
                    return Err(refuse("license", "has a `(` without its `)`"));
                }
                self.out.push(')');
                Ok(())
            }
            Some(Token::Word(w)) => {
                let id = license_id(w)?;
                self.out.push_str(&id);
                Ok(())
            }
            Some(t) => Err(refuse(
                "license",
                format!(
                    "is not an SPDX licence expression: unexpected {t} where a licence id belongs"
                ),
            )),
            None => Err(refuse(
                "license",
                "ends where a licence id belongs: an SPDX expression is ids joined by AND, OR, WITH",
            )),
        }
    }
}

/// Checks an SPDX licence expression (see the module's doc) and returns
/// it in SPDX's spelling, with single spaces.
pub fn check_license(expr: &str) -> Result<String, TermsError> {
    if expr.len() > MAX_LICENSE {
        return Err(refuse(
            "license",
            format!("must be at most {MAX_LICENSE} bytes"),
        ));
    }
    if expr.chars().any(|c| c.is_control() && c != ' ') {
        return Err(refuse("license", "must not contain control characters"));
    }
    let mut p = Parser {
        tokens: tokens(expr),
        at: 0,
        out: String::new(),
    };
    if p.tokens.is_empty() {
        return Err(refuse(
            "license",
            "is empty: name an SPDX id such as CC-BY-4.0, or leave it out",
        ));
    }
    p.expr()?;
    if let Some(Token::Word(w)) = p.peek()
        && matches!(w.to_ascii_lowercase().as_str(), "and" | "or" | "with")
    {
        return Err(refuse(
            "license",
            format!("has `{w}`: write the operators AND, OR and WITH in capitals"),
        ));
    }
    if let Some(t) = p.peek() {
        return Err(refuse(
            "license",
            format!(
                "is not an SPDX licence expression: unexpected {t}; join ids with AND, OR or WITH"
            ),
        ));
    }
    Ok(p.out)
}

/// The ids Citation File Format can carry for `expr`: one id, or ids
/// joined by `OR` (a list, the user's choice), all from SPDX's list.
/// `None` for expressions CFF 1.2.0 cannot state (`AND`, `WITH`,
/// `LicenseRef-…`).
pub fn cff_licenses(expr: &str) -> Option<Vec<&str>> {
    let mut ids = Vec::new();
    for (i, t) in tokens(expr).into_iter().enumerate() {
        match t {
            Token::Word(w) if i % 2 == 0 && COMMON_LICENSES.contains(&w) => ids.push(w),
            Token::Or if i % 2 == 1 => {}
            _ => return None,
        }
    }
    (!ids.is_empty()).then_some(ids)
}

fn text(field: &'static str, s: &str, max: usize) -> Result<(), TermsError> {
    if s.trim().is_empty() {
        return Err(refuse(field, "must not be empty; leave it out instead"));
    }
    if s.len() > max {
        return Err(refuse(field, format!("must be at most {max} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(refuse(
            field,
            "must not contain control characters (line breaks included)",
        ));
    }
    Ok(())
}

impl Citation {
    pub fn validate(&self) -> Result<(), TermsError> {
        if let Some(t) = &self.title {
            text("citation.title", t, MAX_CITATION_TEXT)?;
        }
        if self.authors.len() > MAX_AUTHORS {
            return Err(refuse(
                "citation.authors",
                format!("has more than {MAX_AUTHORS} entries"),
            ));
        }
        for a in &self.authors {
            text("citation.authors", a, MAX_CITATION_TEXT)?;
        }
        if let Some(d) = &self.doi {
            text("citation.doi", d, MAX_CITATION_TEXT)?;
            let ok = d
                .strip_prefix("10.")
                .and_then(|r| r.split_once('/'))
                .is_some_and(|(registrant, suffix)| {
                    !registrant.is_empty()
                        && registrant.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                        && !suffix.is_empty()
                        && !suffix.contains(char::is_whitespace)
                });
            if !ok {
                return Err(refuse(
                    "citation.doi",
                    "must be a bare DOI such as 10.5281/zenodo.1234567 (without https://doi.org/)",
                ));
            }
        }
        if let Some(u) = &self.url {
            text("citation.url", u, MAX_CITATION_URL)?;
            if !(u.starts_with("https://") || u.starts_with("http://"))
                || u.contains(char::is_whitespace)
            {
                return Err(refuse(
                    "citation.url",
                    "must be an http:// or https:// address without spaces",
                ));
            }
        }
        if let Some(d) = &self.date_released
            && !is_date(d)
        {
            return Err(refuse(
                "citation.date_released",
                "must be a date written YYYY-MM-DD",
            ));
        }
        if let Some(m) = &self.message {
            text("citation.message", m, MAX_CITATION_TEXT)?;
        }
        Ok(())
    }
}

/// `YYYY-MM-DD` with a month and a day that exist.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|p| p.parse::<u32>().ok());
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    if !s[..4].bytes().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// `s` as a YAML double-quoted scalar: quotes and backslashes escaped,
/// every control character, line or paragraph separator and byte-order
/// mark written as an escape, so no text can end the string or the line.
pub fn yaml_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What a `CITATION.cff` needs to know of the job besides its terms.
#[derive(Clone, Debug)]
pub struct CitedJob<'a> {
    pub id: u64,
    pub name: &'a str,
    /// The endorsed name of the researcher who signed the job: the author
    /// when the citation names none.
    pub researcher: &'a str,
}

/// The default `message` of a `CITATION.cff`.
pub const DEFAULT_CFF_MESSAGE: &str =
    "If you use this dataset, please cite it using the metadata from this file.";

/// A Citation File Format 1.2.0 document for a job's dataset (`type:
/// dataset`): title, authors, message, DOI, URL, licence, release date,
/// and the job as a keyword. It depends on the job's stored fields only
/// (not on the project's editable name), so the Parquet export that
/// embeds it keeps its checksum. Every researcher string is double-quoted
/// ([`yaml_quoted`]); a licence CFF cannot state ([`cff_licenses`]) is
/// left to a comment and the licence-url is omitted.
pub fn citation_cff(job: &CitedJob<'_>, terms: &DatasetTerms) -> String {
    let empty = Citation::default();
    let c = terms.citation.as_ref().unwrap_or(&empty);
    let mut y = String::new();
    y.push_str(&format!(
        "# Citation File Format (https://citation-file-format.github.io/) for the\n\
         # dataset of peergrid job {}.\n",
        job.id
    ));
    y.push_str("cff-version: 1.2.0\n");
    let message = c.message.as_deref().unwrap_or(DEFAULT_CFF_MESSAGE);
    y.push_str(&format!("message: {}\n", yaml_quoted(message)));
    y.push_str("type: dataset\n");
    let title = c.title.as_deref().unwrap_or(job.name);
    y.push_str(&format!("title: {}\n", yaml_quoted(title)));
    y.push_str("authors:\n");
    let default_author = [job.researcher.to_string()];
    let authors = if c.authors.is_empty() {
        &default_author[..]
    } else {
        &c.authors[..]
    };
    for a in authors {
        match a.split_once(',') {
            Some((family, given)) if !family.trim().is_empty() && !given.trim().is_empty() => {
                y.push_str(&format!(
                    "  - family-names: {}\n    given-names: {}\n",
                    yaml_quoted(family.trim()),
                    yaml_quoted(given.trim())
                ));
            }
            _ => y.push_str(&format!("  - name: {}\n", yaml_quoted(a.trim()))),
        }
    }
    if let Some(doi) = &c.doi {
        y.push_str(&format!("doi: {}\n", yaml_quoted(doi)));
    }
    if let Some(url) = &c.url {
        y.push_str(&format!("url: {}\n", yaml_quoted(url)));
    }
    if let Some(license) = &terms.license {
        match cff_licenses(license).as_deref() {
            Some([one]) => y.push_str(&format!("license: {}\n", yaml_quoted(one))),
            Some(many) => {
                y.push_str("license:\n");
                for l in many {
                    y.push_str(&format!("  - {}\n", yaml_quoted(l)));
                }
            }
            None => {
                // Checked by `check_license`: ids, operators, parentheses
                // and spaces only, so it cannot break out of the comment.
                let safe: String = license
                    .chars()
                    .filter(|c| c.is_ascii_graphic() || *c == ' ')
                    .collect();
                y.push_str(&format!(
                    "# license (an SPDX expression CFF 1.2.0 cannot state): {safe}\n"
                ));
            }
        }
    }
    if let Some(d) = &c.date_released {
        y.push_str(&format!("date-released: {}\n", yaml_quoted(d)));
    }
    y.push_str("keywords:\n");
    y.push_str(&format!(
        "  - {}\n",
        yaml_quoted(&format!("peergrid job {}", job.id))
    ));
    y
}

#[cfg(test)]
mod tests;
