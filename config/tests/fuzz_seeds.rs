//! The seed corpus of the config fuzz targets (fuzz/corpus/config_*), made from the key tables
//! and the README's examples: every key set to its default in TOML and in `ock.mmc.*` files,
//! every default value and a few edge cases. The committed seeds must be exactly what this makes;
//! regenerate with `MMC_WRITE_FUZZ_SEEDS=1 cargo test -p mmc-config --test fuzz_seeds` and
//! commit.

use std::path::{Path, PathBuf};

use mmc_config::table::Key;
use mmc_config::{
    client_and_local_from_text, ClientConfig, Format, LocalConfig, MetaConfig, OckFile,
    CLIENT_KEYS, LOCAL_KEYS, META_KEYS, TLS_KEYS,
};

/// The README's ```toml block whose first line is `first_line`.
fn readme_block(first_line: &str) -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find(&format!("```toml\n{first_line}\n"))
        .unwrap_or_else(|| panic!("README has no toml block starting with {first_line:?}"));
    let body = &readme[start + "```toml\n".len()..];
    body[..body.find("```").expect("closed block")].to_string()
}

/// `name = default` lines for `keys`: the default as a bare TOML value when `parses` accepts it
/// so, else quoted (keys whose default is empty, and a second key of one field, are left out).
fn toml_lines<C>(keys: &[Key<C>], parses: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    let mut fields = Vec::new();
    for k in keys.iter().filter(|k| !k.default.is_empty()) {
        if fields.contains(&k.field) {
            continue;
        }
        fields.push(k.field);
        let line = [
            format!("{} = {}\n", k.name, k.default),
            format!("{} = {:?}\n", k.name, k.default),
        ]
        .into_iter()
        .find(|l| parses(l))
        .unwrap_or_else(|| panic!("the default of {} parses neither bare nor quoted", k.name));
        out.push_str(&line);
    }
    out
}

fn toml_seeds() -> Vec<(String, String)> {
    let meta_ok = |l: &str| MetaConfig::from_toml_str(l).is_ok();
    let tls_ok = |l: &str| MetaConfig::from_toml_str(&format!("[tls]\n{l}")).is_ok();
    let local_ok = |l: &str| LocalConfig::from_toml_str(l).is_ok();
    let client_ok = |l: &str| ClientConfig::from_toml_str(&format!("[client]\n{l}")).is_ok();
    let meta = format!(
        "{}[tls]\n{}",
        toml_lines(META_KEYS, meta_ok),
        toml_lines(TLS_KEYS, tls_ok)
    );
    let local = format!(
        "{}[client]\n{}[tls]\n{}",
        toml_lines(LOCAL_KEYS, local_ok),
        toml_lines(CLIENT_KEYS, client_ok),
        toml_lines(TLS_KEYS, tls_ok)
    );
    vec![
        ("readme-meta".into(), readme_block("# meta.toml")),
        (
            "readme-local".into(),
            readme_block("# local.toml (also read by clients: one file can configure both)"),
        ),
        ("readme-rank0".into(), readme_block("# rank0.toml")),
        ("meta-every-key".into(), meta),
        ("local-and-client-every-key".into(), local),
        (
            "edge-errors".into(),
            "listen_url = \"tcp://127.0.0.1:5000\"\ndiscovery_url = \"tcp://[::1]:0\"\n\
             evict_threshold_high = \"ninety\"\nevict_threshlod_low = 80\n[tls]\nenable = 1\n"
                .into(),
        ),
    ]
}

/// `ock = default` lines for the keys of `keys` that have an `ock.mmc.*` name.
fn ock_lines<C>(keys: &[Key<C>]) -> String {
    keys.iter()
        .filter_map(|k| k.ock.map(|o| format!("{o} = {}\n", k.default)))
        .collect()
}

fn ock_seeds() -> Vec<(String, String)> {
    vec![
        (
            "meta-every-key".into(),
            format!("# mmc-meta.conf\n{}{}", ock_lines(META_KEYS), ock_lines(TLS_KEYS)),
        ),
        (
            "local-and-client-every-key".into(),
            format!(
                "# mmc-local.conf\n{}{}{}",
                ock_lines(LOCAL_KEYS),
                ock_lines(CLIENT_KEYS),
                ock_lines(TLS_KEYS)
            ),
        ),
        (
            "edge-syntax".into(),
            "\u{feff}# comment\n\nock.mmc.meta_service_url = \"tcp://127.0.0.1:5000\" # trailing\n\
             ock.mmc.log_level = 'debug'\nock.mmc.log_level = info\nock.mmc.evict_threshold_high=95\n\
             ock.mmc.unknown_key = 1\nock.mmc.local_service.dram.size = \"1.5 GB\" # a comment\n\
             ock.mmc.tls.ca.path = '/etc/ca#1.pem'\n"
                .into(),
        ),
        (
            "edge-errors".into(),
            "ock.mmc.log_level\nock.mmc.meta_service_url = \"tcp://x:1\nock.mmc.evict_threshold_low = 'a' b\n"
                .into(),
        ),
    ]
}

fn value_seeds() -> Vec<(String, String)> {
    let mut seeds: Vec<(String, String)> = Vec::new();
    // One seed per distinct value, under a name no other seed has.
    let mut add = |name: String, value: &str| {
        if seeds.iter().any(|(_, v)| v == value) {
            return;
        }
        let mut unique = name.clone();
        for n in 2.. {
            if !seeds.iter().any(|(s, _)| *s == unique) {
                break;
            }
            unique = format!("{name}-{n}");
        }
        seeds.push((unique, value.to_string()));
    };
    macro_rules! defaults {
        ($($keys:expr),*) => {$(
            for k in $keys.iter().filter(|k| !k.default.is_empty()) {
                add(format!("default-{}", k.name), k.default);
            }
        )*};
    }
    defaults!(META_KEYS, LOCAL_KEYS, CLIENT_KEYS, TLS_KEYS);
    for (name, v) in [
        ("size-fraction", "1.5 GiB"),
        ("size-max", "16777215TB"),
        ("size-overflow", "18446744073709551616"),
        ("url-v6", "tcp://[::1]:5000"),
        ("url-metrics", "http://0.0.0.0:9100/"),
        ("url-host", "tcp://localhost:0"),
        ("int-negative", "-2147483648"),
        ("bool-word", "On"),
        ("log-number", "3"),
        ("protocol", "host_shm"),
        ("poller", "io_uring"),
    ] {
        add(name.to_string(), v);
    }
    seeds
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// With `MMC_WRITE_FUZZ_SEEDS` set, writes `seeds` as `seed-NAME` files of the target's corpus
/// (removing other `seed-*` files); without, checks that the committed ones are exactly these.
fn write_or_check(target: &str, seeds: &[(String, String)]) {
    let dir = corpus_dir(target);
    let want: Vec<(String, &String)> = seeds
        .iter()
        .map(|(n, b)| (format!("seed-{n}"), b))
        .collect();
    let committed = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("seed-"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    if std::env::var_os("MMC_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for name in committed(&dir) {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
        for (name, text) in &want {
            std::fs::write(dir.join(name), text).unwrap();
        }
        return;
    }
    let hint = "run MMC_WRITE_FUZZ_SEEDS=1 cargo test -p mmc-config --test fuzz_seeds and commit";
    let mut names: Vec<String> = want.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(
        committed(&dir),
        names,
        "seed files of {target} differ; {hint}"
    );
    for (name, text) in &want {
        let got = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(&got == *text, "{target}/{name} is stale; {hint}");
    }
}

#[test]
fn toml_seeds_are_current() {
    let seeds = toml_seeds();
    // The seeds that should parse do, with every key: the fuzzer starts from whole configs.
    for (name, text) in seeds.iter().filter(|(n, _)| !n.starts_with("edge-")) {
        if name.starts_with("meta") || name == "readme-meta" {
            MetaConfig::from_text(text, Format::Toml).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            client_and_local_from_text(text, Format::Toml)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    let every = &seeds.iter().find(|(n, _)| n == "meta-every-key").unwrap().1;
    let keys = META_KEYS.iter().filter(|k| !k.default.is_empty()).count();
    assert!(
        every.lines().count() > keys,
        "every meta key and the [tls] line"
    );
    write_or_check("config_toml", &seeds);
}

#[test]
fn ock_seeds_are_current() {
    let seeds = ock_seeds();
    for (name, text) in &seeds {
        let parsed = OckFile::parse(text);
        assert_eq!(parsed.is_err(), name == "edge-errors", "{name}: {parsed:?}");
    }
    let meta = &seeds[0].1;
    MetaConfig::from_text(meta, Format::Ock).unwrap();
    client_and_local_from_text(&seeds[1].1, Format::Ock).unwrap();
    client_and_local_from_text(&seeds[2].1, Format::Ock).unwrap();
    write_or_check("config_ock", &seeds);
}

#[test]
fn value_seeds_are_current() {
    let seeds = value_seeds();
    assert!(seeds.len() > 15, "{} distinct values", seeds.len());
    write_or_check("config_values", &seeds);
}
