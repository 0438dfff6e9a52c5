//! Every config value parser on arbitrary text: each key of the meta, local, client and TLS key
//! tables set from the text (as a key = value file or a flag sets it), then checked by its kind
//! and range; and the value parsers the tables are built from, with what each must give back.
//!
//! Checked: nothing panics, and nothing leaves the machine (host names resolve only when
//! numeric); a parsed value written back the canonical way parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmc_config::table::{Input, Key};
use mmc_config::{
    check_capacity, check_tcp_url, format_size, parse_bool, parse_int, parse_metrics_url,
    parse_size, parse_tcp_url, url_string, ByteSize, ClientConfig, DataOpType, DataPoller,
    LocalConfig, LogLevel, MetaConfig, TlsConfig, CLIENT_KEYS, LOCAL_KEYS, META_KEYS, TLS_KEYS,
    URL_CAPACITY,
};

mmc_fuzz::harness!();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    every_key::<MetaConfig>(META_KEYS, text);
    every_key::<LocalConfig>(LOCAL_KEYS, text);
    every_key::<ClientConfig>(CLIENT_KEYS, text);
    every_key::<TlsConfig>(TLS_KEYS, text);

    if let Ok(n) = parse_size(text) {
        assert_eq!(parse_size(&n.to_string()).ok(), Some(n));
        assert_eq!(
            parse_size(&text.to_ascii_uppercase()).ok(),
            Some(n),
            "units ignore case"
        );
        let _ = format_size(n);
        assert_eq!(text.parse::<ByteSize>().ok(), Some(ByteSize(n)));
    }
    if let Ok(a) = parse_tcp_url(text) {
        assert_eq!(parse_tcp_url(&format!("tcp://{a}")).ok(), Some(a));
        assert_eq!(url_string(text).ok().as_deref(), Some(text.trim()));
        let _ = check_tcp_url("k", text);
    }
    if let Ok(a) = parse_metrics_url(text) {
        assert_eq!(parse_metrics_url(&format!("http://{a}/")).ok(), Some(a));
    }
    if let Ok(b) = parse_bool(text) {
        assert_eq!(parse_bool(&b.to_string()).ok(), Some(b));
    }
    ints(text);
    if let Ok(l) = LogLevel::parse(text) {
        assert_eq!(LogLevel::from_i32(l.as_i32()), Some(l));
        let _ = l.as_filter_str();
    }
    if let Ok(p) = DataOpType::parse(text) {
        assert_eq!(DataOpType::parse(p.as_str()).ok(), Some(p));
    }
    let _ = DataPoller::parse(text);
    let _ = check_capacity("k", text, URL_CAPACITY);
});

/// Sets each key of `keys` from `text` on the defaults, and validates the result.
fn every_key<C: Default + 'static>(keys: &'static [Key<C>], text: &str) {
    for k in keys {
        let mut c = C::default();
        if (k.apply)(&mut c, Input::Text(text)).is_ok() {
            let _ = (k.check)(k, &c, k.name);
        }
    }
}

fn ints(text: &str) {
    macro_rules! int {
        ($($t:ty),*) => {$(
            if let Ok(n) = parse_int::<$t>(text) {
                assert_eq!(parse_int::<$t>(&n.to_string()).ok(), Some(n));
            }
        )*};
    }
    int!(u8, u16, u32, u64, i32, i64, usize);
}
