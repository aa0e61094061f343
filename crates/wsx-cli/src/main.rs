//! `wsx`: a WebSocket server with a browser demo page (`serve`), a wscat-like client
//! (`connect`) and a load generator (`bench`), built on the `wsx` library.

mod bench;
mod connect;
mod log;
mod parse;
mod serve;

use std::{future::Future, process::ExitCode};

use clap::{Parser, Subcommand};

/// WebSocket swiss-army knife: serve, connect, bench.
#[derive(Debug, Parser)]
#[command(name = "wsx", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Serve(serve::Args),
    Connect(connect::Args),
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            log::init(args.log_format);
            // One worker per core (tokio's default): a busy client must not hold up the rest.
            // Each worker, as it goes idle, gives back what a memory trim asked of it.
            report(run(Workers::PerCore, Some(serve::on_worker_park), serve::run(args)))
        }
        Command::Connect(args) => {
            log::init_quiet();
            match runtime(Workers::Exactly(1), None) {
                Ok(rt) => rt.block_on(connect::run(args)),
                Err(e) => fail(&e),
            }
        }
        Command::Bench(args) => {
            log::init_quiet();
            let workers = Workers::Exactly(args.threads as usize);
            report(run(workers, None, bench::run(args)))
        }
    }
}

/// How many threads run a command's tasks.
#[derive(Debug, Clone, Copy)]
enum Workers {
    /// This many: 1 is a current-thread runtime.
    Exactly(usize),
    /// One per core, or `TOKIO_WORKER_THREADS`.
    PerCore,
}

/// A runtime with `workers`, running `on_park` on a worker just before it goes idle.
fn runtime(workers: Workers, on_park: Option<fn()>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        Workers::Exactly(1) => tokio::runtime::Builder::new_current_thread(),
        Workers::Exactly(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        Workers::PerCore => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(hook) = on_park {
        builder.on_thread_park(hook);
    }
    Ok(builder.enable_all().build()?)
}

fn run(workers: Workers, on_park: Option<fn()>, task: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    runtime(workers, on_park)?.block_on(task)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("wsx: error: {e:#}");
    ExitCode::FAILURE
}
