use clap::Parser;
use darknet::cli::Cli;
use darknet::commands::Interrupted;
use std::io::Write;
use std::process::ExitCode;

/// Exit status of a run stopped by a signal after saving its checkpoint,
/// as shells report a process ended by SIGINT (128 + 2).
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let (args, notes) = darknet::cli::from_darknet_flags(std::env::args_os().collect());
    for note in notes {
        darknet::note!("{note}");
    }
    let cli = Cli::parse_from(args);
    match darknet::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed stderr (`2>&1 | head`) must not turn the exit into a panic.
            let mut stderr = std::io::stderr().lock();
            if err.downcast_ref::<Interrupted>().is_some() {
                let _ = writeln!(stderr, "{err:#}");
                ExitCode::from(EXIT_INTERRUPTED)
            } else {
                let _ = writeln!(stderr, "error: {err:#}");
                ExitCode::FAILURE
            }
        }
    }
}
