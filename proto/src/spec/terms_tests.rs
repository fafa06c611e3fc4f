#![allow(clippy::unwrap_used)]

use super::*;
use crate::citation::CITATION_FIELDS;

const BASE: &str = "name = \"x\"\nmodule = \"m.wasm\"\n[inputs]\ndir = \"in\"\n";

#[test]
fn licence_and_citation_parse_and_are_checked() {
    let spec = JobSpec::from_toml(&format!(
        "license = \"cc-by-4.0\"\n{BASE}[citation]\ntitle = \"T\"\nauthors = [\"Lovelace, Ada\"]\n\
         doi = \"10.1/x\"\nurl = \"https://e.org\"\ndate_released = \"2024-01-02\"\nmessage = \"m\"\n"
    ))
    .unwrap();
    let terms = spec.terms().unwrap();
    assert_eq!(terms.license.as_deref(), Some("CC-BY-4.0"));
    assert_eq!(terms.citation.unwrap().authors, ["Lovelace, Ada"]);
    let e = JobSpec::from_toml(&format!("license = \"CC-BY-4\"\n{BASE}")).unwrap_err();
    assert!(
        e.to_string().starts_with("`license` names `CC-BY-4`"),
        "{e}"
    );
    let e = JobSpec::from_toml(&format!("{BASE}[citation]\ntitel = \"T\"\n")).unwrap_err();
    assert!(e.to_string().contains("titel"), "{e}");
    let e = JobSpec::from_toml(&format!("{BASE}[citation]\nurl = \"ftp://x\"\n")).unwrap_err();
    assert!(e.to_string().starts_with("`citation.url`"), "{e}");
    // Without either, as before.
    assert!(
        JobSpec::from_toml(BASE)
            .unwrap()
            .terms()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_citation_field_list_is_every_field() {
    let full = Citation {
        title: Some(String::new()),
        authors: vec![String::new()],
        doi: Some(String::new()),
        url: Some(String::new()),
        date_released: Some(String::new()),
        message: Some(String::new()),
    };
    let table = toml::Table::try_from(full).unwrap();
    let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut fields = CITATION_FIELDS.to_vec();
    fields.sort_unstable();
    assert_eq!(keys, fields);
}

/// An older client's submission (no `license`, no `citation`) still
/// reads, and the terms sit at the submission's top level.
#[test]
fn submissions_carry_the_terms_at_the_top_level_and_may_omit_them() {
    let sub = JobSubmission {
        name: "x".into(),
        module: Hash([1; 32]),
        args: vec![],
        settings: JobSettings::default(),
        units: vec![],
        validator: Validator::Bitwise,
        signature: crate::signing::ModuleSignature {
            endorsement: crate::signing::Endorsement {
                researcher_key: String::new(),
                name: String::new(),
                project_signature: String::new(),
            },
            signature: String::new(),
        },
        plots: vec![],
        terms: DatasetTerms {
            license: Some("CC0-1.0".into()),
            citation: None,
        },
    };
    let mut v = serde_json::to_value(&sub).unwrap();
    assert_eq!(v["license"], "CC0-1.0");
    assert!(v.get("citation").is_none(), "{v}");
    v.as_object_mut().unwrap().remove("license");
    let old: JobSubmission = serde_json::from_value(v).unwrap();
    assert!(old.terms.is_empty());
}
