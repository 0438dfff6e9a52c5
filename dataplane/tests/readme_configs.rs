//! The configuration examples in README.md parse, with the values they show.

use mmc_controlplane::config::MetaConfig;
use mmc_dataplane::{ClientConfig, LocalConfig};

/// The ```toml block whose first line is `first_line`.
fn block(first_line: &str) -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find(&format!("```toml\n{first_line}\n"))
        .unwrap_or_else(|| panic!("README has no toml block starting with {first_line:?}"));
    let body = &readme[start + "```toml\n".len()..];
    body[..body.find("```").expect("closed block")].to_string()
}

#[test]
fn meta_example_parses() {
    let c = MetaConfig::from_toml_str(&block("# meta.toml")).unwrap();
    assert_eq!((c.evict_threshold_high, c.evict_threshold_low), (90, 80));
    assert_eq!(c.member_timeout_ms, 5000);
    c.validate().unwrap();
}

#[test]
fn local_and_client_example_parses() {
    let text = block("# local.toml (also read by clients: one file can configure both)");
    let local = LocalConfig::from_toml_str(&text).unwrap();
    assert_eq!(local.dram_bytes, 8 << 30);
    assert_eq!(local.data_shards, 0);
    let client = ClientConfig::from_toml_str(&text).unwrap();
    assert_eq!(client.meta_url, "tcp://10.0.0.1:5000");
    assert_eq!(client.transport, None);
}
