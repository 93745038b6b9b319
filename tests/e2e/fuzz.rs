//! The server against its own `/openapi.json`, judged by schemathesis (PyPI; tests/run
//! installs it into the venv `TEST_PYTHON` names), an implementation that is not ours. Every
//! operation is sent valid and invalid input drawn from the document, for a bounded number of
//! examples with a fixed seed, then chains of calls that follow the document's links; every
//! answer is checked with `--checks all`: never a 5xx, only documented statuses, content
//! types and headers, bodies that match their schema, invalid input refused, valid input
//! accepted. A client generated from the document can believe it.

use std::process::Command;

use hephaestus_api::ApiConfig;
use hephaestus_core::keys::Scope;
use hephaestus_core::secret::Secret;

use crate::both_dbs;
use crate::common::{Db, TestServer, test_config};

both_dbs!(the_server_does_what_its_document_says);

/// Cases per operation and phase. With the stateful phase this keeps one run within about
/// two minutes per database on a 2-core machine.
const MAX_EXAMPLES: &str = "20";
/// Fixed, so a failure seen once is seen again.
const SEED: &str = "18";

async fn the_server_does_what_its_document_says(db: Db) {
    let config = ApiConfig {
        // With a secret set the webhook route checks signatures, as in production.
        stripe_webhook_secrets: vec![Secret::new("whsec_fuzz")],
        ..test_config()
    };
    let s = TestServer::start_with(db, config).await;
    let key = s.key(Scope::Write).await;
    let python = std::env::var("TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let report = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "-m",
        "schemathesis.cli",
        "run",
        &s.url("/openapi.json"),
        "--checks",
        "all",
        "--header",
        &format!("Authorization: Bearer {key}"),
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        SEED,
        "--generation-deterministic",
        "--generation-database",
        "none",
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--no-color",
        "--output-truncate",
        "false",
        "--report-dir",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([report.path().display().to_string()])
    .collect();
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args(&args)
            .current_dir(report.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python} (TEST_PYTHON): {e}"))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named schemathesis"),
        "schemathesis is needed in the Python that TEST_PYTHON names \
         (tests/run installs it into target/test-venv): {stderr}"
    );
    assert!(
        out.status.success(),
        "schemathesis found the server and its document disagreeing \
         ({:?}):\n{stdout}\n{stderr}",
        started.elapsed()
    );
    // It did test: every operation, and none left out.
    let summary = stdout
        .lines()
        .find(|l| l.contains("operations tested") || l.contains("API Operations"))
        .unwrap_or_default()
        .to_string();
    eprintln!(
        "{db:?}: schemathesis ran {:?}: {summary}",
        started.elapsed()
    );
}
