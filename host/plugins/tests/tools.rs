//! The author tools: `check` explains in plain words why a file is not a plugin, and
//! `call_once` runs one call from JSON.

mod common;

use common::*;
use hephaestus_plugins::model::Request;
use hephaestus_plugins::{CheckError, FaultKind, Manifest, ToolError, World};

fn check(bytes: &[u8], manifest: &str) -> Result<hephaestus_plugins::CheckReport, CheckError> {
    let t = tools_host();
    t.host.check(bytes, &Manifest::parse(manifest).unwrap())
}

fn tools_host() -> &'static TestHost {
    static HOST: std::sync::OnceLock<TestHost> = std::sync::OnceLock::new();
    HOST.get_or_init(|| test_host(|_| {}))
}

fn message(result: Result<hephaestus_plugins::CheckReport, CheckError>) -> String {
    match result {
        Ok(report) => panic!("expected a check error, got {report:?}"),
        Err(error) => error.to_string(),
    }
}

fn component(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("test WAT is valid")
}

/// A component exporting `interface` with the given functions, all `func()`.
fn exporting(interface: &str, functions: &[&str]) -> Vec<u8> {
    let exports: String = functions
        .iter()
        .map(|f| format!("(export \"{f}\" (func $f))"))
        .collect();
    component(&format!(
        r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (instance $api {exports})
            (export "{interface}" (instance $api)))"#
    ))
}

/// A pricer whose core module runs `body` as its start function.
fn starting_with(body: &str) -> Vec<u8> {
    component(&format!(
        r#"(component
            (core module $m (func $start {body}) (start $start) (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (instance $api (export "quote" (func $f)) (export "recommend" (func $f)))
            (export "hephaestus:plugins/pricer@0.1.0" (instance $api)))"#
    ))
}

#[test]
fn check_names_the_world_of_real_plugins() {
    for (file, world) in [
        ("volume-pricing.wasm", World::Pricing),
        ("volume-pricing-js.wasm", World::Pricing),
        ("lifecycle-segments.wasm", World::Segmentation),
        ("lifecycle-segments-py.wasm", World::Segmentation),
        ("segment-subjects.wasm", World::Personalization),
        ("lifecycle-triggers.wasm", World::CampaignTrigger),
        // Without its lying manifest the wrong-world fixture is a fine segmenter.
        ("hostile/wrong-world.wasm", World::Segmentation),
    ] {
        let bytes = read_fixture(file);
        let report = check(&bytes, "").unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(report.world, world, "{file}");
        assert_eq!(report.version, hephaestus_plugins::content_hash(&bytes));
        assert!(
            report
                .exports
                .iter()
                .any(|e| e.starts_with("hephaestus:plugins/"))
        );
    }
}

#[test]
fn check_explains_what_is_wrong_in_plain_words() {
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"#!/bin/sh\necho hi\n".to_vec(), "", "not WebAssembly"),
        (Vec::new(), "", "not WebAssembly"),
        (
            component("(module (func (export \"quote\")))"),
            "",
            "this is a core WebAssembly module, not a component (build for wasm32-wasip2 or run `wasm-tools component new`)",
        ),
        (
            component("(component)"),
            "",
            "exports none of the plugin interfaces",
        ),
        (
            component(r#"(component (import "wasi:http/outgoing-handler@0.2.0" (instance)))"#),
            "",
            "imports `wasi:http/outgoing-handler`, which the host does not grant",
        ),
        (
            component(r#"(component (import "hephaestus:plugins/secrets@0.1.0" (instance)))"#),
            "",
            "imports `hephaestus:plugins/secrets`, which the host does not grant",
        ),
        (
            component(r#"(component (import "hephaestus:plugins/log@0.2.0" (instance)))"#),
            "",
            "built against hephaestus:plugins@0.2.0, this host supports hephaestus:plugins@0.1.0",
        ),
        (
            exporting("hephaestus:plugins/pricer@0.2.0", &["quote", "recommend"]),
            "",
            "built against hephaestus:plugins@0.2.0, this host supports hephaestus:plugins@0.1.0",
        ),
        (
            exporting("hephaestus:plugins/pricer@0.1.0", &["quote"]),
            "",
            "missing export hephaestus:plugins/pricer@0.1.0 function `recommend`",
        ),
        (
            exporting("hephaestus:plugins/pricer@0.1.0", &["quote", "recommend"]),
            "",
            "export hephaestus:plugins/pricer@0.1.0 does not match the contract",
        ),
        (
            read_fixture("hostile/wrong-world.wasm"),
            "world = \"pricing\"",
            "missing export hephaestus:plugins/pricer@0.1.0 (needed by world `pricing`); it exports: hephaestus:plugins/segmenter@0.1.0",
        ),
        (
            {
                let good = read_fixture("volume-pricing.wasm");
                good[..good.len() / 3].to_vec()
            },
            "",
            "not a valid WebAssembly component",
        ),
        (
            starting_with("unreachable"),
            "",
            "fails while starting, before any call: wasm trap: wasm `unreachable` instruction executed",
        ),
        (
            starting_with("(loop $l (br $l))"),
            "",
            "fails while starting, before any call: fuel budget used up",
        ),
        (
            read_fixture("volume-pricing.wasm"),
            "[limits]\nmemory_mib = 0",
            "limits.memory_mib must be positive",
        ),
    ];
    for (bytes, manifest, expected) in cases {
        let text = message(check(&bytes, manifest));
        assert!(
            text.contains(expected),
            "{text:?} should contain {expected:?}"
        );
        // Plain words: one line, no wasmtime backtrace dump.
        assert!(
            !text.contains('\n') && !text.contains("Stack backtrace"),
            "{text}"
        );
    }
}

#[test]
fn check_reports_limits_cut_to_the_host_ceilings() {
    let report = check(
        &read_fixture("volume-pricing.wasm"),
        "[limits]\nmemory_mib = 4096\ntimeout_ms = 20",
    )
    .unwrap();
    assert_eq!(report.limits.memory_bytes, 64 << 20);
    assert_eq!(report.limits.timeout, std::time::Duration::from_millis(20));
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(
        report.warnings[0].contains("limits.memory_mib = 4096")
            && report.warnings[0].contains("64 applies"),
        "{:?}",
        report.warnings
    );
}

#[test]
fn call_once_runs_one_call_from_json() {
    let t = tools_host();
    let bytes = read_fixture("volume-pricing.wasm");
    let manifest = Manifest::parse(&fixture_manifest("volume-pricing.wasm").unwrap()).unwrap();
    let input = serde_json::to_value(Request::Quote(quote_request(9700, 10, &[]))).unwrap();
    let report = t.host.call_once(&bytes, None, input, &manifest).unwrap();
    assert_eq!(report.world, World::Pricing);
    assert_eq!(report.function, "quote");
    assert!(report.fault.is_none(), "{report:?}");
    assert_eq!(
        report.output.unwrap(),
        serde_json::json!({"quote": {
            "amount": {"amount_minor": 87300, "currency": "USD"},
            "discount": {"amount_minor": 9700, "currency": "USD"},
            "reason": "10% volume discount for 10+ units"
        }})
    );
    assert!(report.fuel_used > 0 && report.peak_memory > 0);

    // A trap is reported, not raised, with what the plugin printed before it.
    let trap = read_fixture("hostile/trap.wasm");
    let input = serde_json::to_value(Request::Quote(quote_request(100, 1, &[]))).unwrap();
    let relaxed = Manifest::parse("[limits]\ntimeout_ms = 5000").unwrap();
    let report = t
        .host
        .call_once(&trap, None, input.clone(), &relaxed)
        .unwrap();
    assert_eq!(report.fault.as_ref().map(|f| f.kind), Some(FaultKind::Trap));
    assert!(
        report
            .log
            .iter()
            .any(|l| l.message.contains("deliberate panic")),
        "{:?}",
        report.log
    );

    // Inputs that do not fit are refused with an explanation.
    let segmenter = read_fixture("lifecycle-segments.wasm");
    match t
        .host
        .call_once(&segmenter, None, input, &Manifest::default())
    {
        Err(ToolError::WorldMismatch { needs, world, .. }) => {
            assert_eq!((needs, world), (World::Pricing, World::Segmentation))
        }
        other => panic!("{other:?}"),
    }
    let err = t
        .host
        .call_once(&bytes, None, serde_json::json!({"price": {}}), &manifest)
        .unwrap_err();
    assert!(err.to_string().contains("input is not a request"), "{err}");
}
