use std::process::ExitCode;

fn main() -> ExitCode {
    hephaestus::cli::main()
}
