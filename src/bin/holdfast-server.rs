//! `holdfast-server`: a thin main over [`holdfast::server::run`].

// The package's wasm build (the browser client) compiles its binaries too; they are
// native-only, so there they are empty.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(allocator::give_back_freed_pages)
        .build();
    match runtime {
        Ok(rt) => rt.block_on(app::main()),
        Err(e) => {
            eprintln!("holdfast-server: cannot start the async runtime: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// mimalloc instead of glibc's allocator: a socket's buffers and frames are many small
/// short-lived allocations, spread over the runtime's threads.
#[cfg(not(target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(target_arch = "wasm32"))]
mod allocator {
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    /// How often an idle worker hands pages back, at most.
    const EVERY: Duration = Duration::from_secs(1);

    /// Called when a runtime worker has nothing to do. mimalloc hands the pages freed by
    /// a thread back to the OS only after a delay, and only when that thread calls into
    /// it again; after a burst (ten thousand upgrades at once, each with its request
    /// buffer and first messages) a worker that then sits idle kept them, about 0.5 KiB
    /// per session a server holds. Collecting when idle gives them back without the
    /// cost of purging at once in the middle of the burst.
    pub fn give_back_freed_pages() {
        thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
        let now = Instant::now();
        if LAST.get().is_some_and(|at| now.duration_since(at) < EVERY) {
            return;
        }
        LAST.set(Some(now));
        // SAFETY: `mi_collect` only walks and trims this thread's own heap.
        unsafe { libmimalloc_sys::mi_collect(true) };
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod app {

    use clap::Parser;
    use holdfast::server::config::Cli;
    use holdfast::server::{run_with_metrics_listener, AuthMode, RunConfig};
    use std::process::ExitCode;

    pub async fn main() -> ExitCode {
        let cli = Cli::parse();
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        if cli.log_format == "json" {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .json()
                .init();
        } else {
            tracing_subscriber::fmt().with_env_filter(filter).init();
        }
        let auth = match (&cli.jwt_secret, cli.dev) {
            (Some(secret), _) => AuthMode::Jwt(secret.clone()),
            (None, true) => AuthMode::Dev,
            (None, false) => {
                eprintln!("holdfast-server: no authentication configured: pass --jwt-secret (or HOLDFAST_JWT_SECRET), or --dev for local use");
                return ExitCode::from(2);
            }
        };
        let listener = match holdfast::server::bind(cli.listen) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("holdfast-server: cannot listen on {}: {e}", cli.listen);
                return ExitCode::from(1);
            }
        };
        let metrics_listener = match cli.metrics_listen.map(holdfast::server::bind) {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(e)) => {
                eprintln!(
                    "holdfast-server: cannot listen on {:?}: {e}",
                    cli.metrics_listen
                );
                return ExitCode::from(1);
            }
        };
        let config = RunConfig {
            engine: cli.engine_config(),
            auth,
            static_dir: cli.static_dir.clone(),
            test_hooks: cli.test_hooks,
            jwt: cli.jwt_rules(),
            net: cli.net_limits(),
            store: cli.store.clone(),
            lease: cli.lease(),
            cluster: cli.cluster,
        };
        match run_with_metrics_listener(listener, metrics_listener, config, shutdown_signal()).await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("holdfast-server: {e}");
                ExitCode::from(1)
            }
        }
    }

    async fn shutdown_signal() {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    }
}
