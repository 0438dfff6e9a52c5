//! The TOML config parsers of the meta service, the local service and the client (and the pair
//! parser of an embedded deployment), on arbitrary text, then validation of what parsed.
//!
//! Checked: nothing panics, and nothing leaves the machine (host names in URLs resolve only when
//! numeric, see `mmc_fuzz::numeric_getaddrinfo`); the two ways into each parser agree.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mmc_config::{client_and_local_from_text, ClientConfig, Format, LocalConfig, MetaConfig};

mmc_fuzz::harness!();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    assert_eq!(Format::detect(Path::new("x.toml"), text), Format::Toml);
    let _ = Format::detect(Path::new("mmc.conf"), text);

    let meta = MetaConfig::from_text(text, Format::Toml);
    assert_eq!(
        meta.as_ref().ok(),
        MetaConfig::from_toml_str(text).as_ref().ok(),
        "from_text and from_toml_str disagree"
    );
    if let Ok(c) = meta {
        let _ = c.validate();
    }
    let local = LocalConfig::from_text(text, Format::Toml);
    if let Ok(c) = &local {
        let _ = c.validate();
    }
    let client = ClientConfig::from_text(text, Format::Toml);
    if let Ok(c) = &client {
        let _ = c.validate();
    }
    if let Ok((c, l)) = client_and_local_from_text(text, Format::Toml) {
        let _ = c.validate();
        let _ = l.validate();
    }
});
