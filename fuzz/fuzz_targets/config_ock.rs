//! Ascend MemCache's `ock.mmc.*` key = value files on arbitrary text: the syntax ([`OckFile`]),
//! then the meta, local, client and TLS settings read from it, then validation.
//!
//! Checked: nothing panics, and nothing leaves the machine (host names resolve only when
//! numeric); a parsed file written back out as `key = value` lines parses to the same entries and
//! the same settings; reading the text directly and reading the parsed file agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmc_config::{
    client_and_local_from_text, ClientConfig, Format, LocalConfig, MetaConfig, OckFile, TlsConfig,
};

mmc_fuzz::harness!();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ock) = OckFile::parse(text) else {
        assert!(MetaConfig::from_text(text, Format::Ock).is_err());
        return;
    };
    assert!(ock.len() <= text.lines().count());
    for (key, value, line) in ock.entries() {
        assert!(line >= 1 && line <= text.lines().count());
        assert!(!key.is_empty() && !key.contains('='));
        let _ = value;
    }
    for key in ock.keys() {
        // The last setting of a key wins.
        let last = ock.entries().filter(|(k, _, _)| *k == key).last();
        assert_eq!(ock.get(key), last.map(|(_, v, _)| v));
        assert_eq!(ock.line(key), last.map(|(_, _, l)| l));
    }

    let rendered = render(&ock);
    let again = OckFile::parse(&rendered)
        .unwrap_or_else(|e| panic!("a parsed file written back does not parse: {e}\n{rendered}"));
    let pairs = |f: &OckFile| {
        f.entries()
            .map(|(k, v, _)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(pairs(&ock), pairs(&again), "written back:\n{rendered}");

    let meta = MetaConfig::from_ock(&ock);
    assert_eq!(
        meta.as_ref().ok(),
        MetaConfig::from_text(text, Format::Ock).as_ref().ok()
    );
    assert_eq!(
        meta.as_ref().ok(),
        MetaConfig::from_ock(&again).as_ref().ok()
    );
    if let Ok(c) = &meta {
        let _ = c.validate();
    }
    let local = LocalConfig::from_ock(&ock);
    assert_eq!(
        local.as_ref().ok(),
        LocalConfig::from_ock(&again).as_ref().ok()
    );
    if let Ok(c) = &local {
        let _ = c.validate();
    }
    let client = ClientConfig::from_ock(&ock);
    assert_eq!(
        client.as_ref().ok(),
        ClientConfig::from_ock(&again).as_ref().ok()
    );
    if let Ok(c) = &client {
        let _ = c.validate();
    }
    if let Ok(tls) = TlsConfig::from_ock(&ock) {
        let _ = tls.validate();
    }
    let pair = client_and_local_from_text(text, Format::Ock);
    assert_eq!(
        pair.as_ref().ok(),
        client
            .as_ref()
            .ok()
            .zip(local.as_ref().ok())
            .map(|(c, l)| (c.clone(), l.clone()))
            .as_ref()
    );
});

/// The entries as `key = value` lines: unquoted when the value reads back as itself, else in
/// quotes it does not contain (a value holding both quote characters came unquoted).
fn render(ock: &OckFile) -> String {
    // A first line of its own: a byte-order mark is only stripped from the very start.
    let mut out = String::from("# written back\n");
    for (key, value, _) in ock.entries() {
        let line = if reads_back_unquoted(value) {
            format!("{key} = {value}\n")
        } else if !value.contains('"') {
            format!("{key} = \"{value}\"\n")
        } else {
            assert!(!value.contains('\''), "value {value:?} holds both quotes");
            format!("{key} = '{value}'\n")
        };
        out.push_str(&line);
    }
    out
}

fn reads_back_unquoted(v: &str) -> bool {
    let b = v.as_bytes();
    let comment = (0..b.len()).any(|i| b[i] == b'#' && (i == 0 || b[i - 1].is_ascii_whitespace()));
    v.trim() == v && !v.starts_with(['"', '\'']) && !comment
}
