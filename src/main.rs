//! The `heal` binary: parses the command line, sets up logging, and hands
//! over to `heal::cli`.

use std::process::ExitCode;

use argh::FromArgs;
use heal::{cli, error};

fn main() -> ExitCode {
    // argh reads a lone "-" as an unknown option; for file arguments it means stdin.
    let args: Vec<String> = std::env::args()
        .map(|a| if a == "-" { "/dev/stdin".into() } else { a })
        .collect();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    if strs.get(1..) == Some(&["--version"]) {
        cli::print_to_a_closed_pipe_ends_quietly();
        println!("heal {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let heal = match cli::Heal::from_args(&["heal"], strs.get(1..).unwrap_or_default()) {
        Ok(heal) => heal,
        Err(early) => {
            cli::print_to_a_closed_pipe_ends_quietly();
            return if early.status.is_ok() {
                println!("{}", early.output);
                ExitCode::SUCCESS
            } else {
                eprintln!("{}", early.output.trim_end());
                eprintln!("Try: heal --help");
                ExitCode::from(2)
            };
        }
    };
    init_logging();
    match cli::run(heal) {
        Ok(()) => ExitCode::SUCCESS,
        // The wrapped command spoke for itself.
        Err(e @ error::Error::Exit(_)) => ExitCode::from(e.exit_code()),
        Err(e) => {
            eprintln!("heal: error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Logs go to stderr; HEAL_LOG sets the level (error, warn, info, debug, trace; default info).
fn init_logging() {
    let level = match std::env::var("HEAL_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        "off" => log::LevelFilter::Off,
        _ => log::LevelFilter::Info,
    };
    let config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(log::LevelFilter::Off)
        .set_target_level(log::LevelFilter::Off)
        .add_filter_ignore_str("tiny_http")
        .add_filter_ignore_str("ureq")
        .build();
    // One write per line: unbuffered stderr would take each piece of a line as its own write.
    let _ =
        simplelog::WriteLogger::init(level, config, std::io::LineWriter::new(std::io::stderr()));
}
