//! The configuration examples in README.md parse, with the values they show.

use mmc_config::{ClientConfig, LocalConfig, MetaConfig};

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

const KEYS_BEGIN: &str = "<!-- BEGIN config keys (generated) -->\n";
const KEYS_END: &str = "<!-- END config keys (generated) -->\n";

/// The README's key list is exactly what the key tables generate. Regenerate with
/// `UPDATE_README=1 cargo test -p mmc-config --test readme_configs`.
#[test]
fn readme_key_list_matches_the_tables() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme
        .find(KEYS_BEGIN)
        .expect("README has the begin marker")
        + KEYS_BEGIN.len();
    let end = readme.find(KEYS_END).expect("README has the end marker");
    assert!(start <= end, "markers out of order");
    let want = format!("\n{}\n", mmc_config::keys_markdown());
    if std::env::var_os("UPDATE_README").is_some() {
        let text = format!("{}{want}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, text).unwrap();
        return;
    }
    assert!(
        readme[start..end] == want,
        "README's key list differs from the key tables; run \
         UPDATE_README=1 cargo test -p mmc-config --test readme_configs and commit"
    );
}
