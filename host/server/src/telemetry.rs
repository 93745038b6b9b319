use tracing_subscriber::EnvFilter;

/// Logs go to stderr, so stdout carries only what a command prints for people or scripts
/// (a new key, a key list). `HEPHAESTUS_LOG` takes tracing's filter syntax.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_env(crate::config::LOG_SETTING)
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second init (tests start several servers in one process) is harmless.
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
