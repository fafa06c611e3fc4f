//! `sieve`: the integer benchmark kernel; stdin holds the limit and the
//! number of rounds (see [`peergrid_example_probe::sieve`]).

fn main() -> std::process::ExitCode {
    peergrid_example_probe::main_with("sieve", peergrid_example_probe::sieve::run)
}
