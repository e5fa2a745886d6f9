//! The `proxy` command: parse the arguments, set up logging, run, map the result to an
//! exit code (0 clean shutdown, 1 runtime failure, 2 bad arguments).

use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use proxy_cli::args::{Cli, Command, LogFormat};
use proxy_cli::logging::LogFlush;
use proxy_cli::run;

fn main() -> ExitCode {
    // First, while no descriptor of the process's own is open: see `Inherited`.
    let inherited = proxy_cli::systemd::Inherited::take();
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (mut cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            // Help and version go to stdout with code 0; errors to stderr with code 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    // `proxy run --config FILE` takes its log format and threads from the file, unless the
    // command line says otherwise. (A file with errors is reported by `run`.)
    if let Command::Run(args) = &cli.command
        && let Ok(file) = proxy_cli::config::load(&args.config)
    {
        if matches.value_source("log_format") != Some(ValueSource::CommandLine)
            && let Some(format) = file.log_format
        {
            cli.log_format = format;
        }
        cli.threads = cli.threads.or(file.threads);
    }
    // Written out when it drops, at the end of `main`, and before any line printed
    // directly to stderr, so the lines stay in order.
    let logs = run::init_logging(&cli);
    run::raise_open_files_limit(&cli);
    let log_format = cli.log_format;
    // A config file's errors are about the file, not the command line.
    let from_file = matches!(cli.command, Command::Run(_));
    let mut builder = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.into());
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            drop(logs);
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run::run(cli, inherited));
    // Every connection has finished or been closed by now; do not wait long for a
    // name lookup still running on the blocking pool.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let flush = || logs.as_ref().map(LogFlush::flush);
    flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `proxy forward ... -- CMD` exits as CMD did; that is no error of proxy's.
            if let Some(code) = proxy_cli::forward::command_exit_code(&e) {
                return code;
            }
            let code = run::exit_code(&e);
            if log_format == LogFormat::Json {
                // Every stderr line stays one JSON object.
                tracing::error!("{e:#}");
                flush();
                return code;
            }
            eprintln!("error: {e:#}");
            if let Some(hint) = run::hint(&e) {
                eprintln!("hint: {hint}");
            }
            if code == ExitCode::from(2) && !from_file {
                eprintln!("\nFor more information, try '--help'.");
            }
            code
        }
    }
}
