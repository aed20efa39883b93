//! `holdfast-load`: a thin main over [`holdfast::load`].

// The package's wasm build (the browser client) compiles its binaries too; they are
// native-only, so there they are empty.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    app::main()
}

/// The same allocator as the server: thousands of client engines and proxied sockets
/// make the same many small allocations.
#[cfg(not(target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(target_arch = "wasm32"))]
mod app {

    use clap::Parser;
    use holdfast::load::cli::{Cli, Figure};
    use holdfast::load::{fds_needed, raise_nofile_limit};
    use std::process::ExitCode;

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        if let Some(Figure::ProxyWorker { upstream }) = cli.figure {
            return match holdfast::load::worker::serve_proxy_worker(upstream) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("holdfast-load proxy-worker: {e}");
                    ExitCode::from(1)
                }
            };
        }
        // Client sockets, two proxy sockets per session, and the server child (which
        // inherits this limit).
        let want = fds_needed(cli.sessions());
        let got = raise_nofile_limit(want);
        // Short of it, the proxy moves to worker processes, unless told not to.
        if got < want && cli.proxy_workers == Some(0) {
            eprintln!(
                "holdfast-load: warning: open-files limit is {got}, {want} wanted for {} sessions",
                cli.sessions()
            );
        }
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("holdfast-load: cannot start the runtime: {e}");
                return ExitCode::from(1);
            }
        };
        let max_time = cli.max_time;
        if let Some(Figure::Chaos(args)) = &cli.figure {
            let result = runtime
                .block_on(async { tokio::time::timeout(max_time, cli.run_chaos(args)).await });
            runtime.shutdown_background();
            return match result {
                Ok(Ok(report)) => {
                    if cli.json {
                        match serde_json::to_string_pretty(&report) {
                            Ok(json) => println!("{json}"),
                            Err(e) => eprintln!("holdfast-load: {e}"),
                        }
                    } else {
                        print!("{}", report.render());
                    }
                    // Exit status 3: the oracle counted a violated guarantee.
                    if report.violations() > 0 {
                        ExitCode::from(3)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Ok(Err(e)) => {
                    eprintln!("holdfast-load: {e}");
                    ExitCode::from(1)
                }
                Err(_) => {
                    eprintln!("holdfast-load: stopped after --max-time {max_time:?}");
                    ExitCode::from(2)
                }
            };
        }
        let result = runtime.block_on(async { tokio::time::timeout(max_time, cli.run(got)).await });
        // Session tasks may still be winding down; do not wait for them.
        runtime.shutdown_background();
        match result {
            Ok(Ok(report)) => {
                if cli.json {
                    match serde_json::to_string_pretty(&report) {
                        Ok(json) => println!("{json}"),
                        Err(e) => {
                            eprintln!("holdfast-load: {e}");
                            return ExitCode::from(1);
                        }
                    }
                } else {
                    print!("{}", report.render());
                }
                ExitCode::SUCCESS
            }
            Ok(Err(e)) => {
                eprintln!("holdfast-load: {e}");
                ExitCode::from(1)
            }
            Err(_) => {
                eprintln!("holdfast-load: stopped after --max-time {max_time:?}");
                ExitCode::from(2)
            }
        }
    }
}
