//! Tests of the shared config helpers, the TLS settings and the meta service's config.

#[test]
fn format_size_reads_back() {
    assert_eq!(format_size(512), "512 B");
    assert_eq!(format_size(1536), "1.5 KiB");
    for bytes in [1u64 << 10, 8 << 20, 3 << 30, 2 << 40] {
        assert_eq!(
            parse_size(&format_size(bytes).replace(".0", "")).unwrap(),
            bytes
        );
    }
}

use super::*;
use std::io::Write;

const GIB: u64 = 1 << 30;

#[test]
fn sizes() {
    let ok = [
        ("0", 0),
        ("512", 512),
        ("512B", 512),
        ("512 b", 512),
        ("1K", 1024),
        ("1k", 1024),
        ("2048KB", 2048 * 1024),
        ("2048kib", 2048 * 1024),
        ("200mb", 200 << 20),
        ("200MB", 200 << 20),
        ("200MiB", 200 << 20),
        ("200 M", 200 << 20),
        ("1GB", GIB),
        ("1g", GIB),
        ("1 GiB", GIB),
        ("  1gib  ", GIB),
        ("1.5GB", 3 * GIB / 2),
        ("0.5k", 512),
        ("2TB", 2 << 40),
        ("1t", 1 << 40),
        ("1tib", 1 << 40),
        ("18446744073709551615", u64::MAX),
        ("16777215TB", 16_777_215u64 << 40),
    ];
    for (s, want) in ok {
        assert_eq!(parse_size(s).unwrap(), want, "{s}");
    }
    let bad = [
        "",
        "  ",
        "GB",
        "abc",
        "-1",
        "-1GB",
        "+1",
        "1.5",
        "0.3k",
        "1..5GB",
        ".5GB",
        "1.GB",
        "1PB",
        "1 G B",
        "1GBx",
        "1e3",
        "0x10",
        "18446744073709551616",
        "16777216TB",
        "99999999999999999999999GB",
        "1.0000000000000000001GB",
    ];
    for s in bad {
        let e = parse_size(s).unwrap_err();
        assert!(matches!(e, ConfigError::Value { .. }), "{s}: {e:?}");
        assert!(e.to_string().contains(&format!("`{s}`")), "{e}");
    }
}

#[test]
fn urls() {
    let a = |s: &str| parse_tcp_url(s).unwrap().to_string();
    assert_eq!(a("tcp://127.0.0.1:5000"), "127.0.0.1:5000");
    assert_eq!(a("TCP://10.1.2.3:80"), "10.1.2.3:80");
    assert_eq!(a("127.0.0.1:5000"), "127.0.0.1:5000");
    assert_eq!(a(" tcp://0.0.0.0:0 "), "0.0.0.0:0");
    assert_eq!(a("tcp://[::1]:7000"), "[::1]:7000");
    assert_eq!(a("localhost:5000"), "127.0.0.1:5000");
    assert_eq!(a("tcp://localhost:0"), "127.0.0.1:0");
    for bad in [
        "",
        "tcp://",
        "http://127.0.0.1:5000",
        "udp://1.2.3.4:5",
        "127.0.0.1",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:",
        "tcp://:5000",
        "tcp://127.0.0.1:65536",
        "tcp://127.0.0.1:-1",
        "tcp://127.0.0.1:5000/path",
        "tcp://::1:5000",
        "tcp://no such host:5000",
        "tcp://nonexistent.invalid:5000",
    ] {
        let e = parse_tcp_url(bad).unwrap_err();
        assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
    }
    assert_eq!(
        parse_metrics_url("http://0.0.0.0:9100/")
            .unwrap()
            .to_string(),
        "0.0.0.0:9100"
    );
    assert_eq!(
        parse_metrics_url("127.0.0.1:9100").unwrap().to_string(),
        "127.0.0.1:9100"
    );
    assert!(parse_metrics_url("https://1.2.3.4:1").is_err());
    assert!(parse_metrics_url("http://1.2.3.4:1/metrics").is_err());
}

#[test]
fn bools_ints_levels() {
    for t in ["true", "TRUE", "1", "yes", "on"] {
        assert!(parse_bool(t).unwrap(), "{t}");
    }
    for f in ["false", "0", "No", "off"] {
        assert!(!parse_bool(f).unwrap(), "{f}");
    }
    assert!(parse_bool("maybe").is_err());
    assert_eq!(parse_int::<u16>(" 90 ").unwrap(), 90);
    let e = parse_int::<u16>("70000").unwrap_err().to_string();
    assert!(e.contains("`70000`") && e.contains("u16"), "{e}");
    assert!(parse_int::<u32>("-1").is_err());

    let cases = [
        ("debug", LogLevel::Debug),
        ("0", LogLevel::Debug),
        ("INFO", LogLevel::Info),
        ("1", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("Warning", LogLevel::Warn),
        ("2", LogLevel::Warn),
        ("error", LogLevel::Error),
        (" 3 ", LogLevel::Error),
    ];
    for (s, want) in cases {
        assert_eq!(LogLevel::parse(s).unwrap(), want, "{s}");
    }
    for bad in ["4", "-1", "trace", "", "verbose"] {
        assert!(LogLevel::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(LogLevel::Debug.as_i32(), 0);
    assert_eq!(LogLevel::Error.as_i32(), 3);
    assert_eq!(LogLevel::Warn.as_filter_str(), "warn");
    assert_eq!(LogLevel::default(), LogLevel::Info);
    for l in [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ] {
        assert_eq!(LogLevel::from_i32(l.as_i32()), Some(l));
        assert_eq!(LogLevel::parse(&l.to_string()).unwrap(), l);
    }
    assert_eq!(LogLevel::from_i32(4), None);
}

#[test]
fn ock_parsing() {
    let text = "\u{feff}# a comment\n\
                \n\
                ock.mmc.a = 1\n\
                \t ock.mmc.b=two words   \n\
                ock.mmc.c = \"quoted # not a comment\"  # comment\n\
                ock.mmc.d = 'single'\n\
                ock.mmc.e = value # trailing comment\n\
                ock.mmc.f = a#b\n\
                ock.mmc.g =\n\
                ock.mmc.h = # only a comment\n\
                \x20  # indented comment\n\
                ock.mmc.a = 3\r\n\
                ock.mmc.i = x = y\n";
    let f = OckFile::parse(text).unwrap();
    assert_eq!(f.get("ock.mmc.a"), Some("3"));
    assert_eq!(f.line("ock.mmc.a"), Some(12));
    assert_eq!(f.get("ock.mmc.b"), Some("two words"));
    assert_eq!(f.get("ock.mmc.c"), Some("quoted # not a comment"));
    assert_eq!(f.get("ock.mmc.d"), Some("single"));
    assert_eq!(f.get("ock.mmc.e"), Some("value"));
    assert_eq!(f.get("ock.mmc.f"), Some("a#b"));
    assert_eq!(f.get("ock.mmc.g"), Some(""));
    assert_eq!(f.get("ock.mmc.h"), Some(""));
    assert_eq!(f.get("ock.mmc.i"), Some("x = y"));
    assert_eq!(f.get("ock.mmc.zz"), None);
    assert_eq!(f.len(), 10);
    let keys: Vec<&str> = f.keys().collect();
    assert_eq!(keys[0], "ock.mmc.a");
    assert_eq!(keys[9], "ock.mmc.i");
    assert_eq!(f.entries().nth(1), Some(("ock.mmc.b", "two words", 4)));
    assert!(OckFile::parse("").unwrap().is_empty());
    assert!(OckFile::parse("# only\n\n").unwrap().is_empty());

    for (text, line) in [
        ("ock.mmc.a = 1\nthis line has no equals sign\n", 2),
        ("\n\n= value\n", 3),
        ("a b = c\n", 1),
        ("ock.mmc.a = \"unterminated\n", 1),
        ("ock.mmc.a = \"x\" y\n", 1),
    ] {
        let e = OckFile::parse(text).unwrap_err();
        assert!(
            matches!(e, ConfigError::Syntax { line: l, .. } if l == line),
            "{text:?}: {e:?}"
        );
        assert!(e.to_string().starts_with(&format!("line {line}:")), "{e}");
    }
}

#[test]
fn tls_from_ock_and_toml() {
    let ock = OckFile::parse(
        "ock.mmc.tls.enable = true\n\
         ock.mmc.tls.ca.path = /ca\n\
         ock.mmc.tls.crl.path = /crl\n\
         ock.mmc.tls.cert.path = /cert\n\
         ock.mmc.tls.key.path = /key\n\
         ock.mmc.tls.key.pass.path = /pass\n\
         ock.mmc.tls.package.path = /pkg\n\
         ock.mmc.tls.decrypter.path = /lib.so\n",
    )
    .unwrap();
    let want = TlsConfig {
        enable: true,
        ca_path: "/ca".into(),
        crl_path: "/crl".into(),
        cert_path: "/cert".into(),
        key_path: "/key".into(),
        key_pass_path: "/pass".into(),
        package_path: "/pkg".into(),
        decrypter_lib_path: "/lib.so".into(),
    };
    assert_eq!(TlsConfig::from_ock(&ock).unwrap(), want);
    want.validate().unwrap();
    let e = TlsConfig::from_ock(&OckFile::parse("ock.mmc.tls.enable = sure").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ock.mmc.tls.enable") && e.contains("sure"),
        "{e}"
    );

    let toml_cfg = MetaConfig::from_toml_str(
        "[tls]\nenable = true\nca_path = \"/ca\"\ncrl_path = \"/crl\"\ncert_path = \"/cert\"\n\
         key_path = \"/key\"\nkey_pass_path = \"/pass\"\npackage_path = \"/pkg\"\n\
         decrypter_lib_path = \"/lib.so\"\n",
    )
    .unwrap();
    assert_eq!(toml_cfg.tls, want);
    let e = MetaConfig::from_toml_str("[tls]\nenabled = true\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("enabled"), "{e}");

    let missing = TlsConfig {
        enable: true,
        ca_path: "/ca".into(),
        ..TlsConfig::default()
    };
    let e = missing.validate().unwrap_err().to_string();
    assert!(e.contains("tls.cert_path"), "{e}");
    TlsConfig::default().validate().unwrap();
    let long = TlsConfig {
        ca_path: "x".repeat(256),
        ..TlsConfig::default()
    };
    assert!(long
        .validate()
        .unwrap_err()
        .to_string()
        .contains("tls.ca_path"));
}

#[test]
fn meta_from_toml() {
    let c = MetaConfig::from_toml_str(
        "listen_url = \"tcp://0.0.0.0:6000\"\nlog_level = \"debug\"\n\
         evict_threshold_high = 95\nevict_threshold_low = 70\n\
         metrics_url = \"http://0.0.0.0:9100\"\nlease_ms = 1\npending_timeout_ms = 2\n\
         member_timeout_ms = 3\nmember_grace_ms = 4\n\
         etcd_url = \"etcd://10.0.0.1:2379,10.0.0.2:2379\"\n\
         advertise_url = \"tcp://10.0.0.5:6000\"\netcd_lease_s = 5\n\
         [tls]\nenable = false\nca_path = \"/ca\"\n",
    )
    .unwrap();
    assert_eq!(
        c,
        MetaConfig {
            listen_url: "tcp://0.0.0.0:6000".into(),
            etcd_url: "etcd://10.0.0.1:2379,10.0.0.2:2379".into(),
            advertise_url: "tcp://10.0.0.5:6000".into(),
            etcd_lease_s: 5,
            log_level: LogLevel::Debug,
            evict_threshold_high: 95,
            evict_threshold_low: 70,
            metrics_url: "http://0.0.0.0:9100".into(),
            tls: TlsConfig {
                ca_path: "/ca".into(),
                ..TlsConfig::default()
            },
            lease_ms: 1,
            pending_timeout_ms: 2,
            member_timeout_ms: 3,
            member_grace_ms: 4,
            rebuild_window_ms: 2000,
            heartbeat_ms: 0,
            suspect_on_close: true,
            probe_dead: true,
            probe_attempts: 3,
            probe_interval_ms: 100,
            replica_policy: crate::ReplicaPolicy::Strict,
        }
    );
    c.validate().unwrap();

    assert_eq!(
        MetaConfig::from_toml_str("").unwrap(),
        MetaConfig::default()
    );
    MetaConfig::default().validate().unwrap();
    let c =
        MetaConfig::from_toml_str("discovery_url = \"tcp://1.2.3.4:1\"\nlog_level = 3").unwrap();
    assert_eq!(c.listen_url, "tcp://1.2.3.4:1");
    assert_eq!(c.log_level, LogLevel::Error);

    let e =
        MetaConfig::from_toml_str("listen_url = \"tcp://1.2.3.4:1\"\nbogus_key = 1\n").unwrap_err();
    assert!(matches!(e, ConfigError::Toml(_)));
    assert!(e.to_string().contains("bogus_key"), "{e}");
    let e = MetaConfig::from_toml_str("log_level = \"loud\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("log_level") && e.contains("loud"), "{e}");
    let e = MetaConfig::from_toml_str("log_level = 7")
        .unwrap_err()
        .to_string();
    assert!(e.contains("log_level"), "{e}");
    let e = MetaConfig::from_toml_str("evict_threshold_high = 70000")
        .unwrap_err()
        .to_string();
    assert!(e.contains("evict_threshold_high"), "{e}");
    let e = MetaConfig::from_toml_str("lease_ms = \"10s\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("lease_ms"), "{e}");
    assert!(MetaConfig::from_toml_str("not toml at all").is_err());
}

#[test]
fn meta_from_ock() {
    let ock = OckFile::parse(
        "# mmc-meta.conf\n\
         ock.mmc.meta_service_url = tcp://0.0.0.0:6000\n\
         ock.mmc.meta_service.metrics_url = http://0.0.0.0:9100\n\
         ock.mmc.log_level = warning\n\
         ock.mmc.evict_threshold_high = 85\n\
         ock.mmc.evict_threshold_low = 60\n\
         ock.mmc.meta.lease_ms = 1000\n\
         ock.mmc.meta.pending_timeout_ms = 2000\n\
         ock.mmc.meta.member_timeout_ms = 3000\n\
         ock.mmc.tls.enable = false\n\
         ock.mmc.tls.ca.path = /ca\n\
         ock.mmc.some.future_key = 1\n",
    )
    .unwrap();
    let c = MetaConfig::from_ock(&ock).unwrap();
    assert_eq!(
        c,
        MetaConfig {
            listen_url: "tcp://0.0.0.0:6000".into(),
            etcd_url: String::new(),
            advertise_url: String::new(),
            etcd_lease_s: 3,
            log_level: LogLevel::Warn,
            evict_threshold_high: 85,
            evict_threshold_low: 60,
            metrics_url: "http://0.0.0.0:9100".into(),
            tls: TlsConfig {
                ca_path: "/ca".into(),
                ..TlsConfig::default()
            },
            lease_ms: 1000,
            pending_timeout_ms: 2000,
            member_timeout_ms: 3000,
            member_grace_ms: 20_000,
            rebuild_window_ms: 2000,
            heartbeat_ms: 0,
            suspect_on_close: true,
            probe_dead: true,
            probe_attempts: 3,
            probe_interval_ms: 100,
            replica_policy: crate::ReplicaPolicy::Strict,
        }
    );
    // The unknown key is a warning, not an error.
    assert_eq!(
        ock.unknown_keys(MetaConfig::is_ock_key),
        vec![("ock.mmc.some.future_key", 12)]
    );
    assert_eq!(ock.warn_unknown("test", &MetaConfig::ock_keys()), 1);

    for (line, key) in [
        (
            "ock.mmc.evict_threshold_high = lots",
            "ock.mmc.evict_threshold_high",
        ),
        (
            "ock.mmc.evict_threshold_low = -5",
            "ock.mmc.evict_threshold_low",
        ),
        ("ock.mmc.log_level = chatty", "ock.mmc.log_level"),
        (
            "ock.mmc.meta_service_url = tcp://nowhere",
            "ock.mmc.meta_service_url",
        ),
        (
            "ock.mmc.meta_service.metrics_url = ftp://x:1",
            "ock.mmc.meta_service.metrics_url",
        ),
        ("ock.mmc.meta.lease_ms = 1.5", "ock.mmc.meta.lease_ms"),
        (
            "ock.mmc.meta.pending_timeout_ms = x",
            "ock.mmc.meta.pending_timeout_ms",
        ),
        (
            "ock.mmc.meta.member_timeout_ms = ",
            "ock.mmc.meta.member_timeout_ms",
        ),
    ] {
        let e = MetaConfig::from_ock(&OckFile::parse(line).unwrap()).unwrap_err();
        assert!(matches!(e, ConfigError::KeyValue { .. }), "{line}: {e:?}");
        assert!(e.to_string().contains(&format!("`{key}`")), "{e}");
    }
}

#[test]
fn meta_validate() {
    let with = |low, high| MetaConfig {
        evict_threshold_low: low,
        evict_threshold_high: high,
        ..MetaConfig::default()
    };
    with(80, 90).validate().unwrap();
    with(1, 100).validate().unwrap();
    for (low, high) in [(90, 90), (95, 90), (0, 90), (80, 101), (0, 0)] {
        let e = with(low, high).validate().unwrap_err();
        assert!(
            e.to_string().contains("evict_threshold"),
            "{low} {high}: {e}"
        );
    }
    let e = with(90, 80).validate().unwrap_err().to_string();
    assert!(e.contains("evict_threshold_low"), "{e}");

    let bad_url = MetaConfig {
        listen_url: "nope".into(),
        ..MetaConfig::default()
    };
    assert!(bad_url
        .validate()
        .unwrap_err()
        .to_string()
        .contains("listen_url"));
    let bad_metrics = MetaConfig {
        metrics_url: "x".into(),
        ..MetaConfig::default()
    };
    assert!(bad_metrics
        .validate()
        .unwrap_err()
        .to_string()
        .contains("metrics_url"));
    let zero = MetaConfig {
        member_timeout_ms: 0,
        ..MetaConfig::default()
    };
    assert!(zero
        .validate()
        .unwrap_err()
        .to_string()
        .contains("member_timeout_ms"));
    let long = MetaConfig {
        listen_url: format!("tcp://{}:1", "a".repeat(1100)),
        ..MetaConfig::default()
    };
    assert!(long.validate().is_err());
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

#[test]
fn format_detection_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml_p = write(d, "meta.toml", "listen_url = \"tcp://127.0.0.1:7001\"\n");
    let ock_p = write(
        d,
        "mmc-meta.conf",
        "# comment\n\nock.mmc.meta_service_url = tcp://127.0.0.1:7002\n",
    );
    let toml_noext = write(d, "meta", "# c\nlisten_url = \"tcp://127.0.0.1:7003\"\n");
    // A `.toml` file is TOML even when it looks like ock (this one is valid TOML).
    let ock_in_toml = write(d, "x.toml", "ock.mmc.meta_service_url = \"x\"\n");

    assert_eq!(load_text(&toml_p).unwrap().1, Format::Toml);
    assert_eq!(load_text(&ock_p).unwrap().1, Format::Ock);
    assert_eq!(load_text(&toml_noext).unwrap().1, Format::Toml);
    assert_eq!(load_text(&ock_in_toml).unwrap().1, Format::Toml);
    assert_eq!(
        Format::detect(Path::new("a.TOML"), "ock.mmc.x = 1"),
        Format::Toml
    );
    assert_eq!(Format::detect(Path::new("a.conf"), ""), Format::Toml);

    let c = MetaConfig::load(Some(&toml_p)).unwrap();
    assert_eq!(c.listen_url, "tcp://127.0.0.1:7001");
    let c = MetaConfig::load(Some(&ock_p)).unwrap();
    assert_eq!(c.listen_url, "tcp://127.0.0.1:7002");
    let c = MetaConfig::load(Some(&toml_noext)).unwrap();
    assert_eq!(c.listen_url, "tcp://127.0.0.1:7003");

    // Errors name the file (and the key).
    let e = MetaConfig::load(Some(&ock_in_toml))
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.toml") && e.contains("ock"), "{e}");
    let missing = d.join("missing.toml");
    let e = MetaConfig::load(Some(&missing)).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(e.to_string().contains("missing.toml"), "{e}");
    let bad_ock = write(d, "bad.conf", "ock.mmc.log_level = info\ngarbage\n");
    let e = MetaConfig::load(Some(&bad_ock)).unwrap_err().to_string();
    assert!(e.contains("bad.conf") && e.contains("line 2"), "{e}");
    let invalid = write(
        d,
        "invalid.toml",
        "evict_threshold_high = 50\nevict_threshold_low = 60\n",
    );
    let e = MetaConfig::load(Some(&invalid)).unwrap_err().to_string();
    assert!(
        e.contains("invalid.toml") && e.contains("evict_threshold_low"),
        "{e}"
    );
}

#[test]
fn meta_death_detection_keys() {
    let c = MetaConfig::from_toml_str(
        "member_timeout_ms = 1000\nheartbeat_ms = 200\nsuspect_on_close = false\n\
         probe_dead = false\nprobe_attempts = 5\nprobe_interval_ms = 50\n",
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(
        (c.heartbeat_ms, c.suspect_on_close, c.probe_dead),
        (200, false, false)
    );
    assert_eq!((c.probe_attempts, c.probe_interval_ms), (5, 50));
    assert_eq!(c.heartbeat_period_ms(), 200);
    let ock = OckFile::parse(
        "ock.mmc.meta.heartbeat_ms = 300\nock.mmc.meta.suspect_on_close = false\n\
         ock.mmc.meta.probe_dead = false\nock.mmc.meta.probe_attempts = 2\n\
         ock.mmc.meta.probe_interval_ms = 20\n",
    )
    .unwrap();
    let o = MetaConfig::from_ock(&ock).unwrap();
    assert_eq!(ock.unknown_keys(MetaConfig::is_ock_key), vec![]);
    assert_eq!(
        (o.heartbeat_ms, o.suspect_on_close, o.probe_dead),
        (300, false, false)
    );
    assert_eq!((o.probe_attempts, o.probe_interval_ms), (2, 20));
    // 0 keeps the derivation from the member timeout: / 5, clamped to 50..1000 ms.
    let derived = |timeout: u64| MetaConfig {
        member_timeout_ms: timeout,
        ..MetaConfig::default()
    };
    assert_eq!(MetaConfig::default().heartbeat_period_ms(), 1000);
    assert_eq!(derived(2000).heartbeat_period_ms(), 400);
    assert_eq!(derived(100).heartbeat_period_ms(), 50);
    assert_eq!(derived(60_000).heartbeat_period_ms(), 1000);
    let d = MetaConfig::default();
    assert!(d.suspect_on_close && d.probe_dead && d.heartbeat_ms == 0);
    // Combinations and ranges: each error names the key and says why.
    for (toml, key, why) in [
        (
            "heartbeat_ms = 3000",
            "heartbeat_ms",
            "half of member_timeout_ms",
        ),
        (
            "member_timeout_ms = 500\nheartbeat_ms = 251",
            "heartbeat_ms",
            "half of member_timeout_ms (500 ms)",
        ),
        ("heartbeat_ms = 5", "heartbeat_ms", "below 10 ms"),
        ("probe_attempts = 0", "probe_attempts", ""),
        ("probe_attempts = 11", "probe_attempts", ""),
        ("probe_interval_ms = 0", "probe_interval_ms", ""),
        ("probe_interval_ms = 1001", "probe_interval_ms", ""),
    ] {
        let e = MetaConfig::from_toml_str(toml)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains(why), "{toml}: {e}");
    }
    let edge = "member_timeout_ms = 500\nheartbeat_ms = 250";
    MetaConfig::from_toml_str(edge).unwrap().validate().unwrap();
    let e = MetaConfig::from_toml_str("probe_dead = \"maybe\"").unwrap_err();
    assert!(e.to_string().contains("probe_dead"), "{e}");
}

/// The only test that touches `MMC_META_CONFIG_PATH` (environment variables are process-wide).
#[test]
fn load_via_env_var() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "mmc-meta.conf",
        "ock.mmc.meta_service_url = tcp://127.0.0.1:7010\n",
    );
    std::env::remove_var(META_CONFIG_ENV);
    assert_eq!(MetaConfig::load(None).unwrap(), MetaConfig::default());
    std::env::set_var(META_CONFIG_ENV, "");
    assert_eq!(MetaConfig::load(None).unwrap(), MetaConfig::default());
    std::env::set_var(META_CONFIG_ENV, &p);
    assert_eq!(
        MetaConfig::load(None).unwrap().listen_url,
        "tcp://127.0.0.1:7010"
    );
    // An explicit path wins over the variable.
    let q = write(
        dir.path(),
        "other.toml",
        "listen_url = \"tcp://127.0.0.1:7011\"\n",
    );
    assert_eq!(
        MetaConfig::load(Some(&q)).unwrap().listen_url,
        "tcp://127.0.0.1:7011"
    );
    std::env::set_var(META_CONFIG_ENV, dir.path().join("nope.conf"));
    let e = MetaConfig::load(None).unwrap_err().to_string();
    assert!(e.contains("nope.conf"), "{e}");
    std::env::remove_var(META_CONFIG_ENV);
}
