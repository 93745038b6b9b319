//! `/openapi.json` is a valid OpenAPI 3.1 document, as judged by an implementation that is
//! not ours: `openapi-spec-validator` (Python, installed by tests/run into the test venv
//! that `TEST_PYTHON` names). Generated clients are built from this document, so an invalid
//! one breaks them before they send a request.

use std::process::Command;

use serde_json::Value;

use crate::both_dbs;
use crate::common::{Db, TestServer};

both_dbs!(the_document_is_valid_openapi_3_1);

/// Validates `doc` as OpenAPI 3.1; `Err` with the validator's words when it is not.
fn validate(doc: &Value) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let python = std::env::var("TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import json, sys
try:
    from openapi_spec_validator import OpenAPIV31SpecValidator, validate
except ImportError as e:
    print(f"MISSING: {e}")
    sys.exit(3)
with open(sys.argv[1]) as f:
    spec = json.load(f)
try:
    validate(spec, cls=OpenAPIV31SpecValidator)
except Exception as e:
    print(f"INVALID: {e}")
    sys.exit(1)
print("VALID")
"#;
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} (TEST_PYTHON): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) if stdout.trim() == "VALID" => Ok(()),
        Some(1) => Err(stdout),
        _ => panic!(
            "openapi-spec-validator is needed in the Python that TEST_PYTHON names \
             (tests/run installs it into target/test-venv): {stdout}{stderr}"
        ),
    }
}

async fn the_document_is_valid_openapi_3_1(db: Db) {
    let s = TestServer::start(db).await;
    let doc = s.openapi().await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    if let Err(e) = validate(&doc) {
        panic!("/openapi.json is not valid OpenAPI 3.1: {e}");
    }
    // The validator does judge: the same document with a broken operation is refused.
    let mut broken = doc.clone();
    broken["paths"]["/health"]["get"]["responses"] = Value::String("none".into());
    assert!(
        validate(&broken).is_err(),
        "the validator accepted a broken document"
    );
}
