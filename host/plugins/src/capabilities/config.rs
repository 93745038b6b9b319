//! A plugin's own configuration: the `[config]` table of its manifest, values as text.

use std::sync::Arc;

/// Shared by every call of one plugin version; a plugin only ever sees its own table.
#[derive(Debug, Clone, Default)]
pub struct PluginConfig(Arc<Vec<(String, String)>>);

impl PluginConfig {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self(Arc::new(pairs))
    }

    /// `config.get`: the value for `key`. Tables are small, so a scan beats a map here.
    pub fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// `config.all`: every pair in manifest order.
    pub fn all(&self) -> Vec<(String, String)> {
        self.0.as_ref().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_and_all_follow_the_manifest() {
        let config = PluginConfig::new(vec![("b".into(), "2".into()), ("a".into(), "1".into())]);
        assert_eq!(config.get("a").as_deref(), Some("1"));
        assert_eq!(config.get("missing"), None);
        assert_eq!(
            config.all(),
            vec![("b".into(), "2".into()), ("a".into(), "1".into())]
        );
    }
}
