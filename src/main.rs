//! The `loopgate` binary: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    loopgate::cli::main()
}
