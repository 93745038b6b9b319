//! Compile once: a second host on the same cache folder loads every plugin from the
//! precompiled artifacts, with zero compiles.

mod common;

use common::*;
use hephaestus_plugins::{HostConfig, LoadResult, PluginHost};

#[test]
fn a_restarted_host_loads_from_the_cache_without_compiling() {
    init_tracing();
    let plugins = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    for name in [
        "volume-pricing",
        "lifecycle-segments",
        "lifecycle-triggers",
        "segment-subjects",
    ] {
        std::fs::copy(
            fixture(&format!("{name}.wasm")),
            plugins.path().join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    let start = |dir: &std::path::Path| {
        let mut config = HostConfig::new(plugins.path());
        config.cache_dir = Some(dir.to_owned());
        PluginHost::new(config).unwrap()
    };

    let first = start(cache.path());
    let loaded = first.load_all();
    assert_eq!(loaded.len(), 4);
    assert!(
        loaded.iter().all(|(_, r)| *r == LoadResult::Loaded),
        "{loaded:?}"
    );
    assert_eq!(first.cache_stats().compiles, 4);
    assert_eq!(first.cache_stats().hits, 0);
    let answer = first.decide(&quote_request(1000, 10, &[]));
    drop(first);

    let second = start(cache.path());
    let loaded = second.load_all();
    assert!(
        loaded.iter().all(|(_, r)| *r == LoadResult::Loaded),
        "{loaded:?}"
    );
    let stats = second.cache_stats();
    assert_eq!((stats.compiles, stats.hits), (0, 4), "{stats:?}");
    assert!(second.list().iter().all(|s| s.from_cache == Some(true)));
    // Same plugin, same answer, same version.
    let again = second.decide(&quote_request(1000, 10, &[]));
    assert_eq!(again.value, answer.value);
    assert_eq!(again.decided_by, answer.decided_by);

    // A corrupt artifact is rejected cleanly and rebuilt. (Live hosts mmap artifacts, so
    // nothing may rewrite one in place: the host itself only ever renames new files in.)
    drop(second);
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let tmp = path.with_extension("corrupt");
        std::fs::write(&tmp, &bytes[..bytes.len() / 2]).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    let third = start(cache.path());
    let loaded = third.load_all();
    assert!(
        loaded.iter().all(|(_, r)| *r == LoadResult::Loaded),
        "{loaded:?}"
    );
    let stats = third.cache_stats();
    assert_eq!((stats.compiles, stats.rejected), (4, 4), "{stats:?}");
    assert!(third.decide(&quote_request(1000, 10, &[])).by_plugin());
}
