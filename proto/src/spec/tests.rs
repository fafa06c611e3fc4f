use super::*;

#[test]
fn parses_with_defaults() {
    let spec =
        JobSpec::from_toml("name = \"x\"\nmodule = \"m.wasm\"\n[inputs]\ndir = \"in\"\n").unwrap();
    assert_eq!(spec.settings, JobSettings::default());
    assert_eq!(spec.settings.max_total_results(), 6);
}

#[test]
fn broken_specs_name_the_problem() {
    let e = JobSpec::from_toml("name = \"x\"\nmodule = \"m.wasm\"\n").unwrap_err();
    assert!(e.to_string().contains("inputs"), "{e}");
    let e = JobSpec::from_toml(
        "name = \"x\"\nmodule = \"m.wasm\"\nquorum = 0\n[inputs]\ndir = \"in\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("quorum"), "{e}");
    let e = JobSpec::from_toml("name = \"x\"\nmodul = \"m.wasm\"\n").unwrap_err();
    assert!(e.to_string().contains("modul"), "{e}");
    let e = JobSpec::from_toml("name = ").unwrap_err();
    assert!(matches!(e, SpecError::Toml(_)));
}

#[test]
fn an_unknown_top_level_field_is_named_with_its_line() {
    let e = JobSpec::from_toml(
        "name = \"x\"\nmodule = \"m.wasm\"\nquorom = 3\n[inputs]\ndir = \"in\"\n",
    )
    .unwrap_err();
    assert_eq!(
        e,
        SpecError::UnknownField {
            field: "quorom".into(),
            line: Some(3)
        }
    );
    let text = e.to_string();
    assert!(
        text.starts_with(
            "unknown field `quorom` on line 3; the valid fields are name, module, inputs"
        ),
        "{text}"
    );
    assert!(!text.contains("column 1"), "{text}");
    // As a table too.
    let e = JobSpec::from_toml(
        "name = \"x\"\nmodule = \"m.wasm\"\n[inputs]\ndir = \"in\"\n[extra]\na = 1\n",
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("unknown field `extra` on line 5"),
        "{e}"
    );
}

#[test]
fn the_field_list_is_every_field() {
    let mut spec = JobSpec::from_toml(
        "name = \"x\"\nmodule = \"m.wasm\"\nargs = [\"a\"]\n[inputs]\ndir = \"in\"\n\
         [[plot]]\nkind = \"histogram\"\nx = \"a\"\n",
    )
    .unwrap();
    spec.settings.target_nresults = Some(2);
    spec.settings.max_total_results = Some(2);
    spec.settings.max_success_results = Some(2);
    spec.settings.credit = Some(1);
    spec.settings.metering = Metering::Fixed;
    spec.license = Some("MIT".into());
    spec.citation = Some(Citation::default());
    let table: toml::Table = toml::from_str(&toml::to_string(&spec).unwrap()).unwrap();
    let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
    // `validator` (bitwise) is written too.
    keys.sort_unstable();
    let mut fields: Vec<&str> = FIELDS
        .iter()
        .copied()
        .filter(|f| !matches!(*f, "min_quorum" | "delay_bound"))
        .collect();
    fields.sort_unstable();
    assert_eq!(keys, fields);
    // The aliases are accepted.
    JobSpec::from_toml("name = \"x\"\nmodule = \"m.wasm\"\nmin_quorum = 2\ndelay_bound = 9\n[inputs]\ndir = \"in\"\n").unwrap();
}

/// docs/job-spec.md names every field a spec can have, each in a
/// table row of its own (`| `field` …`): top level (with the
/// aliases), `[inputs]` and `[validator]`, and every validator kind.
#[test]
fn the_job_spec_reference_names_every_field() {
    let doc = include_str!("../../../docs/job-spec.md");
    let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
    let documented = |field: &str| rows.iter().any(|row| row.contains(&format!("`{field}`")));
    let inputs = toml::Table::try_from(InputSpec {
        dir: Some(String::new()),
        jsonl: Some(String::new()),
    })
    .unwrap();
    let validators = [
        Validator::<String>::Bitwise,
        Validator::Tolerance {
            abs_epsilon: 0.0,
            rel_epsilon: 0.0,
        },
        Validator::Custom {
            module: String::new(),
        },
    ];
    let mut fields: Vec<String> = FIELDS.iter().map(|f| f.to_string()).collect();
    fields.extend(inputs.keys().cloned());
    fields.extend(
        crate::citation::CITATION_FIELDS
            .iter()
            .map(|f| f.to_string()),
    );
    for v in validators {
        let table = toml::Table::try_from(v).unwrap();
        fields.extend(table.keys().cloned());
        fields.push(table["kind"].as_str().unwrap().to_string());
        assert!(
            rows.iter()
                .any(|r| r.contains(&format!("\"{}\"", table["kind"].as_str().unwrap()))),
            "docs/job-spec.md does not name the validator kind {:?}",
            table["kind"]
        );
    }
    fields.retain(|f| !matches!(f.as_str(), "bitwise" | "tolerance" | "custom"));
    fields.extend(plot::PLOT_FIELDS.iter().map(|f| f.to_string()));
    for kind in [PlotKind::Scatter, PlotKind::Line, PlotKind::Histogram] {
        assert!(
            rows.iter()
                .any(|r| r.contains(&format!("\"{}\"", kind.name()))),
            "docs/job-spec.md does not name the plot kind {kind:?}"
        );
    }
    let missing: Vec<&String> = fields.iter().filter(|f| !documented(f)).collect();
    assert!(
        missing.is_empty(),
        "docs/job-spec.md has no table row for {missing:?}"
    );
}

/// `metering = "fixed"` takes a declared credit per unit, which a fuel
/// job refuses; a misspelt mode is named.
#[test]
fn fixed_metering_needs_a_declared_credit() {
    let spec = |extra: &str| {
        JobSpec::from_toml(&format!(
            "name = \"x\"\nmodule = \"m.wasm\"\n{extra}\n[inputs]\ndir = \"in\"\n"
        ))
    };
    let fixed = spec("metering = \"fixed\"\ncredit = 40_000").unwrap();
    assert_eq!(fixed.settings.metering, Metering::Fixed);
    assert_eq!(fixed.settings.credit_of(123), 40_000);
    assert_eq!(fixed.settings.fuel_limit(), 0);
    assert_eq!(
        crate::wire::TaskLimits::for_job(&fixed.settings).metering,
        Metering::Fixed
    );
    let fuel = spec("metering = \"fuel\"").unwrap();
    assert_eq!(fuel.settings, JobSettings::default());
    // Written out, a fuel job's settings read as before the field existed.
    let json = serde_json::to_value(fuel.settings).unwrap();
    assert!(
        json.get("metering").is_none() && json.get("credit").is_none(),
        "{json}"
    );
    assert_eq!(fuel.settings.credit_of(123), 123);
    let e = spec("metering = \"fixed\"").unwrap_err();
    assert!(e.to_string().contains("`credit` is required"), "{e}");
    let e = spec("metering = \"fixed\"\ncredit = 0").unwrap_err();
    assert!(e.to_string().contains("`credit` must be between 1"), "{e}");
    let e = spec("credit = 5").unwrap_err();
    assert!(
        e.to_string().contains("only for `metering = \"fixed\"`"),
        "{e}"
    );
    let e = spec("metering = \"fast\"").unwrap_err();
    assert!(e.to_string().contains("fast"), "{e}");
}

#[test]
fn boinc_names_and_validators_parse() {
    let spec = JobSpec::from_toml(
        "name = \"x\"\nmodule = \"m.wasm\"\nmin_quorum = 3\ntarget_nresults = 4\n\
         delay_bound = 60\ngrace_secs = 30\ndistinct_volunteers = true\n\
         [inputs]\ndir = \"in\"\n\
         [validator]\nkind = \"tolerance\"\nrel_epsilon = 1e-9\n",
    )
    .unwrap();
    assert_eq!(spec.settings.quorum, 3);
    assert_eq!(spec.settings.target_nresults(), 4);
    assert_eq!(spec.settings.deadline_secs, 60);
    assert!(spec.settings.distinct_volunteers);
    assert_eq!(
        spec.validator,
        Validator::Tolerance {
            abs_epsilon: 0.0,
            rel_epsilon: 1e-9
        }
    );
    let e = JobSpec::from_toml(
        "name = \"x\"\nmodule = \"m.wasm\"\nquorum = 2\ntarget_nresults = 9\n[inputs]\ndir = \"in\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("target_nresults"), "{e}");
    let e = JobSpec::from_toml(
        "name = \"x\"\nmodule = \"m.wasm\"\n[inputs]\ndir = \"in\"\n[validator]\nkind = \"tolerance\"\nabs_epsilon = -1.0\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("validator"), "{e}");
    let e = JobSpec::from_toml(
        "name = \"x\"\nmodule = \"m.wasm\"\n[inputs]\ndir = \"in\"\n[validator]\nkind = \"fuzzy\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("fuzzy"), "{e}");
}
