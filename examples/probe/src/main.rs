//! `probe`: prints, as one JSON line, what this module can observe that
//! might differ between runs or hosts (see [`peergrid_example_probe::probe`]).
//! Stdin, if any, is echoed back as a tag.

fn main() -> std::process::ExitCode {
    peergrid_example_probe::main_with("probe", |input| {
        Ok(peergrid_example_probe::probe::run(
            input,
            std::env::args().collect(),
        ))
    })
}
