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

/// Cases per operation in the examples, coverage and fuzzing phases (the stateful phase's
/// budget is in schemathesis.toml). Keeps one run within about two minutes per database on
/// a 2-core machine with the rest of the suite running beside it.
const MAX_EXAMPLES: &str = "30";
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
    let settings = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/e2e/schemathesis.toml")
        .display()
        .to_string();
    let report = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "-m",
        "schemathesis.cli",
        "--config-file",
        &settings,
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
        "--generation-database",
        "none",
        // One worker: Python 3.11's parser is not safe to run from several threads at
        // once, which schemathesis's workers do (a spurious "AST constructor recursion
        // depth mismatch").
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        "--output-truncate",
        "false",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let dir = report.path().to_path_buf();
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python} (TEST_PYTHON): {e}"))
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named schemathesis"),
        "schemathesis is needed in the Python that TEST_PYTHON names \
         (tests/run installs it into target/test-venv): {stderr}"
    );
    assert!(
        out.status.success(),
        "schemathesis found the server and its document disagreeing ({took:?}):\n{stdout}\n{stderr}"
    );
    // It did test: every operation of the document, and the write key got through.
    let tested = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let operations = s.openapi().await["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum::<usize>();
    // schemathesis leaves out the operation that serves the document it reads.
    assert_eq!(
        tested,
        operations - 1,
        "not every operation was tested:\n{stdout}"
    );
    for table in ["customers", "products", "prices"] {
        assert!(
            s.count(table).await > 0,
            "the fuzzer made no {table}: its requests did not get through\n{stdout}"
        );
    }
    let cases = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Test cases:"))
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string();
    eprintln!("{db:?}: schemathesis tested {tested} operations in {took:?}: {cases}");
}
