//! Tests of the key tables and what is derived from them: defaults, unknown keys and the closest
//! known one, conflicts, flags.

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::flags::{apply_flags, with_flags};
use super::table::{self, closest, Key};
use super::*;

/// Names are unique within a table (TOML names and aliases, `ock.mmc.*` names, flags), every
/// default parses and validates, and docs fit in a README table cell.
pub fn check_table<C: Default + 'static>(keys: &[Key<C>], prefix: &str) {
    let mut seen = Vec::new();
    for k in keys {
        for name in std::iter::once(k.name).chain(k.aliases.iter().copied()) {
            assert!(!seen.contains(&name), "TOML name `{name}` twice");
            seen.push(name);
        }
        assert!(
            !k.doc.contains(['|', '\n']) && k.doc.ends_with('.'),
            "doc of `{}`: one line, no `|`, ends with a period",
            k.name
        );
        let mut c = C::default();
        (k.apply)(&mut c, table::Input::Text(k.default)).unwrap();
        (k.check)(k, &c, k.name).unwrap();
    }
    let ock: Vec<_> = table::ock_names(keys).collect();
    let flags: Vec<_> = keys
        .iter()
        .filter_map(|k| k.flag)
        .map(|f| f.long())
        .collect();
    for list in [&ock, &flags] {
        let mut sorted = list.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), list.len(), "duplicate in {list:?}");
    }
    assert!(ock.iter().all(|o| o.starts_with("ock.mmc.")), "{ock:?}");
    table::validate(keys, &C::default(), prefix).unwrap();
}

#[test]
fn tables_are_well_formed() {
    check_table(META_KEYS, "");
    check_table(TLS_KEYS, "tls.");
    MetaConfig::default().validate().unwrap();
    assert_eq!(MetaConfig::default().lease_ms, 10_000);
    assert!(!TlsConfig::default().enable);
}

#[test]
fn closest_known_key() {
    let known = MetaConfig::ock_keys();
    let c = |k: &str| closest(k, known.iter().copied()).unwrap();
    assert_eq!(c("ock.mmc.meta.lease_sm"), "ock.mmc.meta.lease_ms");
    assert_eq!(
        c("ock.mmc.evict_threshold_hi"),
        "ock.mmc.evict_threshold_high"
    );
    assert_eq!(c("ock.mmc.tls.ca_path"), "ock.mmc.tls.ca.path");
    assert_eq!(closest("x", std::iter::empty()), None);
}

/// Found by the `config_ock` fuzz target: the closest-key hint compared the whole of an unknown
/// key with every known one, so a 1 MiB key took seconds per table (6 s for one file read as
/// meta, local and client settings). Only the first `CLOSEST_NAME_MAX` bytes count now.
#[test]
fn a_huge_unknown_key_costs_no_more_than_a_long_one() {
    let known = MetaConfig::ock_keys();
    let c = |k: &str| closest(k, known.iter().copied()).unwrap();
    let head = format!("ock.mmc.meta.lease_m{}", "é".repeat(60));
    let huge = format!("{head}{}", "x".repeat(4 << 20));
    assert_eq!(c(&huge), c(&head));
    assert_eq!(c(&huge), "ock.mmc.meta.lease_ms");
    // A two-byte character across the cut (byte 128 falls inside an `é`).
    let across = format!("a{}", "é".repeat(100));
    assert!(!across.is_char_boundary(table::CLOSEST_NAME_MAX));
    assert_eq!(c(&across), c(&across[..table::CLOSEST_NAME_MAX - 1]));

    let text = format!("{huge} = 1\n");
    let start = std::time::Instant::now();
    assert!(MetaConfig::from_text(&text, Format::Ock).is_ok());
    assert!(client_and_local_from_text(&text, Format::Ock).is_ok());
    let toml = format!("{} = 1\n", "x".repeat(4 << 20));
    assert!(MetaConfig::from_text(&toml, Format::Toml).is_err());
    let took = start.elapsed();
    println!("a 4 MiB unknown key, read four ways: {took:?}");
    // About 25 s before the cut (dev profile); milliseconds after. A generous bound.
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
}

#[test]
fn unknown_toml_keys_are_errors_naming_the_closest_key() {
    let e = MetaConfig::from_toml_str("lease_msx = 1").unwrap_err();
    assert!(matches!(e, ConfigError::Toml(_)), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("`lease_msx`") && e.contains("`lease_ms`"), "{e}");
    let e = MetaConfig::from_toml_str("[tls]\nca = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`ca`") && e.contains("[tls]") && e.contains("`ca_path`"),
        "{e}"
    );
    let e = MetaConfig::from_toml_str("tls = 1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tls"), "{e}");
}

#[test]
fn a_key_and_its_alias_conflict() {
    let e = MetaConfig::from_toml_str(
        "listen_url = \"tcp://127.0.0.1:1\"\ndiscovery_url = \"tcp://127.0.0.1:2\"",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("discovery_url") && e.contains("listen_url"),
        "{e}"
    );
    let e = MetaConfig::from_toml_str("[tls]\ndecrypter_path = \"a\"\ndecrypter_lib_path = \"b\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tls.decrypter"), "{e}");
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with a subscriber that records warnings; returns them.
pub fn warnings_of(f: impl FnOnce()) -> String {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = out.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn unknown_ock_keys_warn_naming_the_closest_key() {
    let ock = OckFile::parse(
        "ock.mmc.meta.lease_ms = 5\nock.mmc.meta.lease_sm = 7\nock.mmc.tls.ca_path = /x\n",
    )
    .unwrap();
    let mut c = None;
    let log = warnings_of(|| c = Some(MetaConfig::from_ock(&ock).unwrap()));
    assert_eq!(c.unwrap().lease_ms, 5);
    assert!(
        log.contains("`ock.mmc.meta.lease_sm` (line 2)")
            && log.contains("closest known key is `ock.mmc.meta.lease_ms`"),
        "{log}"
    );
    assert!(
        log.contains("`ock.mmc.tls.ca_path`") && log.contains("`ock.mmc.tls.ca.path`"),
        "{log}"
    );
    let quiet = OckFile::parse("ock.mmc.meta.lease_ms = 5\n").unwrap();
    assert_eq!(warnings_of(|| drop(MetaConfig::from_ock(&quiet))), "");
}

#[test]
fn flags_come_from_the_table() {
    let cmd = || with_flags(clap::Command::new("mmc-meta"), META_KEYS);
    let m = cmd()
        .try_get_matches_from([
            "mmc-meta",
            "--listen",
            "tcp://127.0.0.1:7000",
            "--evict-high",
            "95",
            "--log-level",
            "debug",
        ])
        .unwrap();
    let mut c = MetaConfig::default();
    apply_flags(META_KEYS, &m, &mut c).unwrap();
    assert_eq!(c.listen_url, "tcp://127.0.0.1:7000");
    assert_eq!(c.evict_threshold_high, 95);
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.member_timeout_ms, MetaConfig::default().member_timeout_ms);

    let m = cmd()
        .try_get_matches_from(["mmc-meta", "--evict-low", "lots"])
        .unwrap();
    let e = apply_flags(META_KEYS, &m, &mut c).unwrap_err().to_string();
    assert!(e.contains("`--evict-low`") && e.contains("lots"), "{e}");
    // Keys without a flag have none.
    assert!(cmd()
        .try_get_matches_from(["mmc-meta", "--lease-ms", "1"])
        .is_err());
}
