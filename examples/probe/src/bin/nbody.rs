//! `nbody`: the float benchmark kernel; stdin holds the number of steps (see
//! [`peergrid_example_probe::nbody`]).

fn main() -> std::process::ExitCode {
    peergrid_example_probe::main_with("nbody", peergrid_example_probe::nbody::run)
}
