#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn licences_are_spdx_expressions_in_spdx_spelling() {
    assert_eq!(check_license("CC-BY-4.0").unwrap(), "CC-BY-4.0");
    assert_eq!(check_license("cc0-1.0").unwrap(), "CC0-1.0");
    assert_eq!(
        check_license("  MIT OR   apache-2.0 ").unwrap(),
        "MIT OR Apache-2.0"
    );
    assert_eq!(
        check_license("(MIT AND CC-BY-4.0) OR LicenseRef-Ours-1").unwrap(),
        "(MIT AND CC-BY-4.0) OR LicenseRef-Ours-1"
    );
    assert_eq!(
        check_license("GPL-2.0-or-later WITH Classpath-exception-2.0").unwrap(),
        "GPL-2.0-or-later WITH Classpath-exception-2.0"
    );
    assert_eq!(
        check_license("DocumentRef-spdx:LicenseRef-x").unwrap(),
        "DocumentRef-spdx:LicenseRef-x"
    );
    for (bad, says) in [
        ("CC-BY-4", "CC-BY-4"),
        ("", "empty"),
        ("MIT or CC0-1.0", "capitals"),
        ("MIT AND", "ends"),
        ("(MIT", "`)`"),
        ("MIT)", "unexpected"),
        ("MIT CC0-1.0", "unexpected"),
        ("LicenseRef-", "LicenseRef-"),
        ("LicenseRef-a b", "unexpected"),
        ("MIT WITH", "exception"),
        ("AND MIT", "unexpected"),
        ("MIT\nAND CC0-1.0", "control"),
        ("LicenseRef-\"x\"", "not a licence id"),
    ] {
        let e = check_license(bad).unwrap_err();
        assert_eq!(e.field, "license");
        assert!(e.to_string().contains(says), "{bad:?}: {e}");
    }
    let long = format!("LicenseRef-{}", "a".repeat(MAX_LICENSE));
    assert!(check_license(&long).is_err());
    // Deeply nested but short: bounded by the length.
    let nested = format!("{}MIT{}", "(".repeat(90), ")".repeat(90));
    assert_eq!(check_license(&nested).unwrap(), nested);
}

#[test]
fn cff_states_single_ids_and_choices_only() {
    assert_eq!(cff_licenses("CC-BY-4.0"), Some(vec!["CC-BY-4.0"]));
    assert_eq!(
        cff_licenses("MIT OR Apache-2.0"),
        Some(vec!["MIT", "Apache-2.0"])
    );
    assert_eq!(cff_licenses("MIT AND CC0-1.0"), None);
    assert_eq!(cff_licenses("LicenseRef-x"), None);
    assert_eq!(cff_licenses("(MIT)"), None);
    assert_eq!(
        cff_licenses("GPL-2.0-only WITH Classpath-exception-2.0"),
        None
    );
}

#[test]
fn citations_are_bounded_and_plain() {
    let ok = Citation {
        title: Some("Drifting signals".into()),
        authors: vec!["Lovelace, Ada".into(), "The SETI team".into()],
        doi: Some("10.5281/zenodo.1234567".into()),
        url: Some("https://example.org/seti".into()),
        date_released: Some("2024-02-29".into()),
        message: Some("Cite the paper too.".into()),
    };
    ok.validate().unwrap();
    let bad = |f: fn(&mut Citation), field: &str| {
        let mut c = ok.clone();
        f(&mut c);
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, field, "{e}");
    };
    bad(|c| c.title = Some("a\u{1b}[31m".into()), "citation.title");
    bad(|c| c.title = Some(" ".into()), "citation.title");
    bad(|c| c.title = Some("x".repeat(501)), "citation.title");
    bad(|c| c.authors.push("two\nlines".into()), "citation.authors");
    bad(
        |c| c.authors = vec!["a".into(); MAX_AUTHORS + 1],
        "citation.authors",
    );
    bad(
        |c| c.doi = Some("https://doi.org/10.1/x".into()),
        "citation.doi",
    );
    bad(|c| c.doi = Some("10.abc/x".into()), "citation.doi");
    bad(
        |c| c.url = Some("javascript:alert(1)".into()),
        "citation.url",
    );
    bad(
        |c| c.date_released = Some("2023-02-29".into()),
        "citation.date_released",
    );
    bad(
        |c| c.date_released = Some("2023-13-01".into()),
        "citation.date_released",
    );
    bad(|c| c.message = Some("\u{7f}".into()), "citation.message");
}

#[test]
fn terms_normalise_the_licence_and_a_submission_must_carry_it_normalised() {
    let mut t = DatasetTerms {
        license: Some("cc-by-4.0".into()),
        citation: None,
    };
    assert!(t.validate().is_err());
    t.normalise().unwrap();
    assert_eq!(t.license.as_deref(), Some("CC-BY-4.0"));
    t.validate().unwrap();
}

#[test]
fn yaml_quoting_escapes_what_could_end_a_string_or_line() {
    assert_eq!(yaml_quoted("plain"), "\"plain\"");
    assert_eq!(
        yaml_quoted("a\"b\\c\nd\u{2028}\u{1b}"),
        "\"a\\\"b\\\\c\\u000Ad\\u2028\\u001B\""
    );
    assert_eq!(yaml_quoted("é: #x"), "\"é: #x\"");
}

/// Hostile researcher text (quotes, line breaks, YAML syntax, a
/// terminal escape, Unicode separators) comes back from a YAML parser
/// as exactly the text given, in the field it was given for.
#[test]
fn hostile_text_reads_back_from_the_cff_unchanged() {
    use yaml_rust2::YamlLoader;
    let hostile = [
        "\"\ncff-version: 9\n",
        "a: b # c",
        "- [x] {y}",
        "\\\"\\",
        "line\u{2028}sep\u{85}nel\u{feff}",
        "\u{1b}[31mred",
        "&anchor *alias !tag |",
        "null",
        "'single'",
    ];
    for (i, text) in hostile.iter().enumerate() {
        let job = CitedJob {
            id: 7,
            name: text,
            researcher: text,
        };
        let terms = DatasetTerms {
            license: Some("MIT OR Apache-2.0".into()),
            citation: Some(Citation {
                // Control characters are refused in a citation, but a
                // job name and a researcher's name may hold them.
                message: (!text.contains(char::is_control)).then(|| text.to_string()),
                authors: vec![format!("{text}, Ada"), "Team".into()],
                doi: Some("10.1/\"x\"".into()),
                date_released: Some("2024-02-29".into()),
                ..Citation::default()
            }),
        };
        let doc = citation_cff(&job, &terms);
        let y = &YamlLoader::load_from_str(&doc).unwrap_or_else(|e| panic!("{i}: {e}\n{doc}"))[0];
        assert_eq!(y["cff-version"].as_str(), Some("1.2.0"), "{doc}");
        assert_eq!(y["type"].as_str(), Some("dataset"));
        assert_eq!(y["title"].as_str(), Some(*text), "{doc}");
        let family = text.split_once(',').map_or(*text, |(f, _)| f).trim();
        let first = &y["authors"][0];
        if family.is_empty() {
            assert_eq!(first["name"].as_str(), Some(format!("{text}, Ada").trim()));
        } else {
            assert_eq!(first["family-names"].as_str(), Some(family), "{doc}");
        }
        assert_eq!(y["authors"][1]["name"].as_str(), Some("Team"));
        let message = terms.citation.as_ref().unwrap().message.as_deref();
        assert_eq!(
            y["message"].as_str(),
            Some(message.unwrap_or(DEFAULT_CFF_MESSAGE))
        );
        assert_eq!(y["doi"].as_str(), Some("10.1/\"x\""));
        assert_eq!(y["license"][0].as_str(), Some("MIT"));
        assert_eq!(y["license"][1].as_str(), Some("Apache-2.0"));
        assert_eq!(y["date-released"].as_str(), Some("2024-02-29"));
        assert!(y["keywords"][0].as_str().is_some());
    }
}

#[test]
fn the_cff_document_has_every_field_given() {
    let job = CitedJob {
        id: 7,
        name: "seti",
        researcher: "Ada",
    };
    let bare = citation_cff(&job, &DatasetTerms::default());
    assert!(bare.contains("cff-version: 1.2.0\n"), "{bare}");
    assert!(bare.contains("title: \"seti\"\n"), "{bare}");
    assert!(bare.contains("authors:\n  - name: \"Ada\"\n"), "{bare}");
    assert!(!bare.contains("license"), "{bare}");
    let terms = DatasetTerms {
        license: Some("(MIT AND CC0-1.0)".into()),
        citation: Some(Citation {
            authors: vec!["Lovelace, Ada".into()],
            ..Citation::default()
        }),
    };
    let doc = citation_cff(&job, &terms);
    assert!(
        doc.contains("  - family-names: \"Lovelace\"\n    given-names: \"Ada\"\n"),
        "{doc}"
    );
    assert!(
        doc.contains("# license (an SPDX expression CFF 1.2.0 cannot state): (MIT AND CC0-1.0)\n"),
        "{doc}"
    );
}
