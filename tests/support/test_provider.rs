//! What the providers written inside tests (the library binary's scripted and real-names
//! providers) say about themselves: they emulate nothing and run no proxy.

use meshfed::provider::ProviderInfo;

/// `ProviderInfo` of a test-only provider named `name`: mode `test`, proxy `none`.
pub fn test_provider_info(name: &str) -> ProviderInfo {
    ProviderInfo {
        name: name.into(),
        emulates: None,
        mode: "test".into(),
        proxy: "none".into(),
    }
}
