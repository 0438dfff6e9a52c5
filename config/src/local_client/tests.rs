//! Tests of the local service's and the client's config.

use super::*;
use crate::LogLevel;
use std::io::Write;
use std::path::PathBuf;

const GIB: u64 = 1 << 30;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

const FULL_OCK: &str = "# mmc-local.conf\n\
    ock.mmc.meta_service_url = tcp://10.0.0.1:5000\n\
    ock.mmc.local_service.protocol = host_shm\n\
    ock.mmc.local_service.hcom_url = tcp://0.0.0.0:6000\n\
    ock.mmc.local_service.bm_ip_port = tcp://10.0.0.2:6000\n\
    ock.mmc.local_service.dram.size = 2GB\n\
    ock.mmc.local_service.hbm.size = 512mb\n\
    ock.mmc.local_service.world_size = 8\n\
    ock.mmc.local_service.rank_id = 3\n\
    ock.mmc.local_service.create_id = -7\n\
    ock.mmc.local_service.device_id = 2\n\
    ock.mmc.local_service.heartbeat_ms = 250\n\
    ock.mmc.local_service.prefault = false\n\
    ock.mmc.log_level = debug\n\
    \n\
    ock.mmc.client.timeout.seconds = 30\n\
    ock.mmc.client.read_thread_pool.size = 4\n\
    ock.mmc.client.write_thread_pool.size = 5\n\
    ock.mmc.client.verify_reads = true\n\
    ock.mmc.tls.enable = false\n\
    ock.mmc.tls.cert.path = \"/etc/cert.pem\"\n";

fn full_local() -> LocalConfig {
    LocalConfig {
        meta_url: "tcp://10.0.0.1:5000".into(),
        data_url: "tcp://0.0.0.0:6000".into(),
        advertise_url: "tcp://10.0.0.2:6000".into(),
        dram_bytes: 2 * GIB,
        hbm_bytes: 512 << 20,
        rank_id: Some(3),
        world_size: 8,
        create_id: -7,
        device_id: 2,
        device_backend: "auto".into(),
        protocol: Some(DataOpType::Shm),
        rdma_provider: RdmaProvider::Auto,
        log_level: LogLevel::Debug,
        log_format: crate::logging::LogFormat::Text,
        log_path: String::new(),
        log_rotation_file_size: 20 << 20,
        log_rotation_file_count: 50,
        tls: TlsConfig {
            cert_path: "/etc/cert.pem".into(),
            ..TlsConfig::default()
        },
        heartbeat_ms: 250,
        prefault: false,
        busy_poll_us: 0,
        data_shards: 0,
        data_poller: DataPoller::Mio,
        metrics_url: String::new(),
    }
}

fn full_client() -> ClientConfig {
    ClientConfig {
        meta_url: "tcp://10.0.0.1:5000".into(),
        rank_id: 3,
        timeout_ms: 30_000,
        read_threads: 4,
        write_threads: 5,
        transport: None,
        rdma_provider: RdmaProvider::Auto,
        rdma_caller_memory: RdmaCallerMemory::MrCache,
        busy_poll_us: 0,
        verify_reads: true,
        log_level: LogLevel::Debug,
        tls: TlsConfig {
            cert_path: "/etc/cert.pem".into(),
            ..TlsConfig::default()
        },
    }
}

#[test]
fn client_transport_from_toml_and_ock() {
    let c = ClientConfig::from_toml_str("[client]\ntransport = \"tcp\"").unwrap();
    assert_eq!(c.transport, Some(DataOpType::Tcp));
    let ock = OckFile::parse("ock.mmc.client.transport = host_shm").unwrap();
    assert_eq!(
        ClientConfig::from_ock(&ock).unwrap().transport,
        Some(DataOpType::Shm)
    );
    assert_eq!(ClientConfig::default().transport, None);
}

#[test]
fn client_verify_reads_from_toml_and_ock_default_off() {
    assert!(!ClientConfig::default().verify_reads);
    let c = ClientConfig::from_toml_str("[client]\nverify_reads = true").unwrap();
    assert!(c.verify_reads);
    let c = ClientConfig::from_toml_str("verify_reads = false").unwrap();
    assert!(!c.verify_reads);
    let ock = OckFile::parse("ock.mmc.client.verify_reads = true").unwrap();
    assert!(ClientConfig::from_ock(&ock).unwrap().verify_reads);
    let bad = OckFile::parse("ock.mmc.client.verify_reads = maybe").unwrap();
    let e = ClientConfig::from_ock(&bad).unwrap_err().to_string();
    assert!(e.contains("verify_reads"), "{e}");
}

#[test]
fn rdma_caller_memory_from_toml_and_ock_other_values_refused() {
    assert_eq!(
        ClientConfig::default().rdma_caller_memory,
        RdmaCallerMemory::MrCache
    );
    let c = ClientConfig::from_toml_str("[client]\nrdma_caller_memory = \"bounce\"").unwrap();
    assert_eq!(c.rdma_caller_memory, RdmaCallerMemory::Bounce);
    let ock = OckFile::parse("ock.mmc.client.rdma_caller_memory = MR_CACHE").unwrap();
    assert_eq!(
        ClientConfig::from_ock(&ock).unwrap().rdma_caller_memory,
        RdmaCallerMemory::MrCache
    );
    for bad in ["bouncy", "none"] {
        let ock = OckFile::parse(&format!("ock.mmc.client.rdma_caller_memory = {bad}")).unwrap();
        let e = ClientConfig::from_ock(&ock).unwrap_err().to_string();
        assert!(e.contains("rdma_caller_memory"), "{e}");
        assert!(ClientConfig::from_toml_str(&format!("rdma_caller_memory = \"{bad}\"")).is_err());
    }
}

#[test]
fn data_op_type() {
    for (s, want) in [
        ("tcp", DataOpType::Tcp),
        ("host_tcp", DataOpType::Tcp),
        ("TCP", DataOpType::Tcp),
        ("shm", DataOpType::Shm),
        ("Host_SHM", DataOpType::Shm),
        ("rdma", DataOpType::Rdma),
        (" host_rdma ", DataOpType::Rdma),
    ] {
        assert_eq!(DataOpType::parse(s).unwrap(), want, "{s}");
        assert_eq!(DataOpType::parse(want.as_str()).unwrap(), want);
    }
    for bad in ["", "udp", "host_udp", "tcp6"] {
        let e = DataOpType::parse(bad).unwrap_err().to_string();
        assert!(e.contains(&format!("`{bad}`")), "{e}");
    }
    assert_eq!(DataOpType::Rdma.to_string(), "rdma");
    assert_eq!(DataOpType::default(), DataOpType::Tcp);
}

#[test]
fn defaults() {
    let l = LocalConfig::default();
    assert_eq!(l.dram_bytes, 256 << 20);
    assert_eq!(l.rank_id, None);
    assert!(l.prefault);
    l.validate().unwrap();
    let c = ClientConfig::default();
    assert_eq!(c.timeout_ms, 60_000);
    c.validate().unwrap();
    assert_eq!(LocalConfig::from_toml_str("").unwrap(), l);
    assert_eq!(ClientConfig::from_toml_str("").unwrap(), c);
    assert!(!l.is_pure_client());
    assert!(LocalConfig { dram_bytes: 0, ..l }.is_pure_client());
}

#[test]
fn local_from_toml() {
    let text = "meta_url = \"tcp://10.0.0.1:5000\"\n\
        data_url = \"tcp://0.0.0.0:6000\"\n\
        advertise_url = \"tcp://10.0.0.2:6000\"\n\
        dram_size = \"2GB\"\n\
        hbm_size = 536870912\n\
        rank_id = 3\nworld_size = 8\ncreate_id = -7\ndevice_id = 2\n\
        protocol = \"host_shm\"\nlog_level = \"debug\"\nheartbeat_ms = 250\nprefault = false\n\
        [tls]\ncert_path = \"/etc/cert.pem\"\n";
    assert_eq!(LocalConfig::from_toml_str(text).unwrap(), full_local());

    // Aliases, and the same keys in a [local] section.
    let text = "discovery_url = \"tcp://10.0.0.1:5000\"\n\
        hcom_url = \"tcp://0.0.0.0:6000\"\nbm_ip_port = \"tcp://10.0.0.2:6000\"\n\
        [local]\ndram_size = \"2 GiB\"\nhbm_size = \"512M\"\nrank_id = 3\nworld_size = 8\n\
        create_id = -7\ndevice_id = 2\nprotocol = \"shm\"\nlog_level = 0\nheartbeat_ms = 250\n\
        prefault = false\n[local.tls]\ncert_path = \"/etc/cert.pem\"\n";
    assert_eq!(LocalConfig::from_toml_str(text).unwrap(), full_local());

    // Client keys are known (one file holds both); unknown keys are errors naming the key.
    LocalConfig::from_toml_str("timeout_seconds = 5\nread_thread_pool_size = 2").unwrap();
    for (text, key) in [
        ("dram_sise = 1", "dram_sise"),
        ("[local]\ntimeout_seconds = 1", "timeout_seconds"),
        ("[tls]\nca = \"x\"", "ca"),
        ("[extra]\nx = 1", "extra"),
    ] {
        let e = LocalConfig::from_toml_str(text).unwrap_err();
        assert!(matches!(e, ConfigError::Toml(_)), "{e:?}");
        assert!(e.to_string().contains(key), "{text}: {e}");
    }
    // Bad values name the key.
    for (text, key) in [
        ("dram_size = \"lots\"", "dram_size"),
        ("hbm_size = -1", "hbm_size"),
        ("hbm_size = \"1PB\"", "hbm_size"),
        ("protocol = \"udp\"", "protocol"),
        ("rank_id = -1", "rank_id"),
        ("prefault = \"yes please\"", "prefault"),
        ("[local]\nworld_size = \"8\"", "world_size"),
    ] {
        let e = LocalConfig::from_toml_str(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
}

#[test]
fn local_and_client_from_ock() {
    let ock = OckFile::parse(FULL_OCK).unwrap();
    assert_eq!(LocalConfig::from_ock(&ock).unwrap(), full_local());
    assert_eq!(ClientConfig::from_ock(&ock).unwrap(), full_client());
    // Neither warns about the other's keys.
    assert!(ock.unknown_keys(is_local_or_client_ock_key).is_empty());
    assert_eq!(
        client_and_local_from_text(FULL_OCK, Format::Ock).unwrap(),
        (full_client(), full_local())
    );

    // An unknown key is a warning, not an error.
    let text = format!("{FULL_OCK}ock.mmc.local_service.future_knob = 1\n");
    let ock = OckFile::parse(&text).unwrap();
    assert_eq!(LocalConfig::from_ock(&ock).unwrap(), full_local());
    assert_eq!(ClientConfig::from_ock(&ock).unwrap(), full_client());
    assert_eq!(
        ock.unknown_keys(is_local_or_client_ock_key),
        vec![("ock.mmc.local_service.future_knob", 22)]
    );

    // Empty rank id = not fixed; timeout 0 = default.
    let ock = OckFile::parse(
        "ock.mmc.local_service.rank_id =\nock.mmc.client.timeout.seconds = 0\n\
         ock.mmc.local_service.bm_ip_port = \"\"",
    )
    .unwrap();
    assert_eq!(LocalConfig::from_ock(&ock).unwrap().rank_id, None);
    assert_eq!(LocalConfig::from_ock(&ock).unwrap().advertise_url, "");
    let c = ClientConfig::from_ock(&ock).unwrap();
    assert_eq!((c.rank_id, c.timeout_ms), (0, 60_000));

    // Bad values name the key.
    for line in [
        "ock.mmc.meta_service_url = 10.0.0.1",
        "ock.mmc.local_service.protocol = udp",
        "ock.mmc.local_service.hcom_url = http://1.2.3.4:5",
        "ock.mmc.local_service.bm_ip_port = nowhere",
        "ock.mmc.local_service.dram.size = 2XB",
        "ock.mmc.local_service.hbm.size = -1",
        "ock.mmc.local_service.world_size = many",
        "ock.mmc.local_service.rank_id = -1",
        "ock.mmc.local_service.create_id = 3000000000",
        "ock.mmc.local_service.device_id = gpu0",
        "ock.mmc.local_service.heartbeat_ms = 1s",
        "ock.mmc.local_service.prefault = maybe",
        "ock.mmc.log_level = 9",
        "ock.mmc.tls.enable = 2",
    ] {
        let key = line.split(" = ").next().unwrap();
        let ock = OckFile::parse(line).unwrap();
        let e = LocalConfig::from_ock(&ock).unwrap_err();
        assert!(matches!(e, ConfigError::KeyValue { .. }), "{line}: {e:?}");
        assert!(e.to_string().contains(&format!("`{key}`")), "{e}");
    }
    for line in [
        "ock.mmc.client.timeout.seconds = 1.5",
        "ock.mmc.client.timeout.seconds = 18446744073709551615",
        "ock.mmc.client.read_thread_pool.size = -4",
        "ock.mmc.client.write_thread_pool.size = x",
        "ock.mmc.local_service.rank_id = r",
    ] {
        let key = line.split(" = ").next().unwrap();
        let ock = OckFile::parse(line).unwrap();
        let e = ClientConfig::from_ock(&ock).unwrap_err().to_string();
        assert!(e.contains(&format!("`{key}`")), "{e}");
    }
}

#[test]
fn client_from_toml() {
    let text = "meta_url = \"tcp://10.0.0.1:5000\"\nrank_id = 3\ntimeout_seconds = 30\n\
        read_thread_pool_size = 4\nwrite_thread_pool_size = 5\nlog_level = \"debug\"\n\
        verify_reads = true\n[tls]\ncert_path = \"/etc/cert.pem\"\n";
    assert_eq!(ClientConfig::from_toml_str(text).unwrap(), full_client());
    let text = "[client]\ndiscovery_url = \"tcp://10.0.0.1:5000\"\nrank_id = 3\n\
        timeout_ms = 30000\nread_thread_pool_size = 4\nwrite_thread_pool_size = 5\n\
        log_level = 0\nverify_reads = true\n[client.tls]\ncert_path = \"/etc/cert.pem\"\n";
    assert_eq!(ClientConfig::from_toml_str(text).unwrap(), full_client());
    assert_eq!(
        ClientConfig::from_toml_str("timeout_ms = 0")
            .unwrap()
            .timeout_ms,
        60_000
    );
    // A section's timeout replaces the top-level one, whatever the unit.
    let c = ClientConfig::from_toml_str("timeout_ms = 5\n[client]\ntimeout_seconds = 2\n");
    assert_eq!(c.unwrap().timeout_ms, 2_000);

    let e = ClientConfig::from_toml_str("timeout_ms = 1\ntimeout_seconds = 1")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("timeout_ms") && e.contains("timeout_seconds"),
        "{e}"
    );
    let e = ClientConfig::from_toml_str("timeout_seconds = 18446744073709552")
        .unwrap_err()
        .to_string();
    assert!(e.contains("timeout_seconds"), "{e}");
    for (text, key) in [
        ("[client]\ndram_size = 1", "dram_size"),
        ("[client]\nbogus = 1", "bogus"),
        ("read_threads = 1", "read_threads"),
    ] {
        let e = ClientConfig::from_toml_str(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
    let e = ClientConfig::from_toml_str("read_thread_pool_size = -1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("read_thread_pool_size"), "{e}");
}

#[test]
fn combined_toml() {
    let text = "meta_url = \"tcp://10.0.0.1:5000\"\nlog_level = \"warn\"\n\
        [client]\ntimeout_seconds = 7\nrank_id = 1\n\
        [local]\ndram_size = \"1GB\"\nhbm_size = \"1GB\"\nprotocol = \"rdma\"\n\
        log_level = \"error\"\n";
    let (c, l) = client_and_local_from_text(text, Format::Toml).unwrap();
    assert_eq!(c.meta_url, "tcp://10.0.0.1:5000");
    assert_eq!(l.meta_url, "tcp://10.0.0.1:5000");
    assert_eq!(
        (c.timeout_ms, c.rank_id, c.log_level),
        (7_000, 1, LogLevel::Warn)
    );
    assert_eq!((l.dram_bytes, l.hbm_bytes), (GIB, GIB));
    assert_eq!(
        (l.protocol, l.log_level, l.rank_id),
        (Some(DataOpType::Rdma), LogLevel::Error, None)
    );
    // The single-config readers accept the combined file too.
    assert_eq!(ClientConfig::from_toml_str(text).unwrap(), c);
    assert_eq!(LocalConfig::from_toml_str(text).unwrap(), l);
    // A section can override the shared meta_url.
    let (c, l) = client_and_local_from_text(
        "meta_url = \"tcp://1.1.1.1:1\"\n[local]\nmeta_url = \"tcp://2.2.2.2:2\"\n",
        Format::Toml,
    )
    .unwrap();
    assert_eq!(
        (c.meta_url.as_str(), l.meta_url.as_str()),
        ("tcp://1.1.1.1:1", "tcp://2.2.2.2:2")
    );
    let e = client_and_local_from_text("[local]\nnope = 1\n", Format::Toml)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn validation() {
    LocalConfig::default().validate().unwrap();
    let bad = |c: LocalConfig, key: &str| {
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(key), "{key}: {e}");
    };
    let d = LocalConfig::default;
    bad(
        LocalConfig {
            meta_url: "x".into(),
            ..d()
        },
        "meta_url",
    );
    bad(
        LocalConfig {
            data_url: "tcp://1.2.3.4".into(),
            ..d()
        },
        "data_url",
    );
    bad(
        LocalConfig {
            advertise_url: "tcp://:1".into(),
            ..d()
        },
        "advertise_url",
    );
    bad(
        LocalConfig {
            dram_bytes: u64::MAX,
            ..d()
        },
        "dram_size",
    );
    bad(
        LocalConfig {
            hbm_bytes: 1 << 63,
            ..d()
        },
        "hbm_size",
    );
    bad(
        LocalConfig {
            heartbeat_ms: 0,
            ..d()
        },
        "heartbeat_ms",
    );
    let tls = TlsConfig {
        enable: true,
        ..TlsConfig::default()
    };
    bad(LocalConfig { tls, ..d() }, "tls.ca_path");
    bad(
        LocalConfig {
            data_url: format!("tcp://127.0.0.1:1{}", " ".repeat(1100)),
            ..d()
        },
        "data_url",
    );
    LocalConfig {
        advertise_url: "10.0.0.9:7000".into(),
        ..d()
    }
    .validate()
    .unwrap();

    let c = ClientConfig {
        timeout_ms: 0,
        ..ClientConfig::default()
    };
    assert!(c.validate().unwrap_err().to_string().contains("timeout_ms"));
    let c = ClientConfig {
        meta_url: "tcp://1.2.3.4:99999".into(),
        ..ClientConfig::default()
    };
    assert!(c.validate().unwrap_err().to_string().contains("meta_url"));
}

#[test]
fn load_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ock = write(d, "mmc-local.conf", FULL_OCK);
    assert_eq!(LocalConfig::load(Some(&ock)).unwrap(), full_local());
    assert_eq!(ClientConfig::load(Some(&ock)).unwrap(), full_client());
    assert_eq!(
        load_client_and_local(Some(&ock)).unwrap(),
        (full_client(), full_local())
    );

    let toml_p = write(
        d,
        "embedded.toml",
        "meta_url = \"tcp://127.0.0.1:7100\"\n[client]\ntimeout_seconds = 3\n\
         [local]\ndram_size = \"64MB\"\ndata_url = \"tcp://127.0.0.1:0\"\n",
    );
    let (c, l) = load_client_and_local(Some(&toml_p)).unwrap();
    assert_eq!(
        (c.meta_url.as_str(), c.timeout_ms),
        ("tcp://127.0.0.1:7100", 3_000)
    );
    assert_eq!(
        (l.meta_url.as_str(), l.dram_bytes),
        ("tcp://127.0.0.1:7100", 64 << 20)
    );
    assert_eq!(LocalConfig::load(Some(&toml_p)).unwrap(), l);
    assert_eq!(ClientConfig::load(Some(&toml_p)).unwrap(), c);

    // Errors name the file and what is wrong.
    let bad = write(d, "bad.toml", "[local]\ndram_size = \"huge\"\n");
    for e in [
        LocalConfig::load(Some(&bad)).unwrap_err().to_string(),
        load_client_and_local(Some(&bad)).unwrap_err().to_string(),
    ] {
        assert!(e.contains("bad.toml") && e.contains("dram_size"), "{e}");
    }
    let invalid = write(
        d,
        "invalid.conf",
        "ock.mmc.local_service.heartbeat_ms = 0\n",
    );
    let e = LocalConfig::load(Some(&invalid)).unwrap_err().to_string();
    assert!(
        e.contains("invalid.conf") && e.contains("heartbeat_ms"),
        "{e}"
    );
    let e = ClientConfig::load(Some(&d.join("absent.conf")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.conf"), "{e}");
}

/// The only test that touches `MMC_LOCAL_CONFIG_PATH` (environment variables are process-wide).
#[test]
fn load_via_env_var() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "mmc-local.conf", FULL_OCK);
    std::env::remove_var(LOCAL_CONFIG_ENV);
    assert_eq!(LocalConfig::load(None).unwrap(), LocalConfig::default());
    assert_eq!(ClientConfig::load(None).unwrap(), ClientConfig::default());
    assert_eq!(
        load_client_and_local(None).unwrap(),
        (ClientConfig::default(), LocalConfig::default())
    );
    std::env::set_var(LOCAL_CONFIG_ENV, &p);
    assert_eq!(LocalConfig::load(None).unwrap(), full_local());
    assert_eq!(ClientConfig::load(None).unwrap(), full_client());
    assert_eq!(
        load_client_and_local(None).unwrap(),
        (full_client(), full_local())
    );
    // An explicit path wins over the variable.
    let q = write(dir.path(), "l.toml", "device_id = 5\n");
    assert_eq!(LocalConfig::load(Some(&q)).unwrap().device_id, 5);
    std::env::set_var(LOCAL_CONFIG_ENV, dir.path().join("gone.conf"));
    let e = LocalConfig::load(None).unwrap_err().to_string();
    assert!(e.contains("gone.conf"), "{e}");
    std::env::remove_var(LOCAL_CONFIG_ENV);
}

#[test]
fn tables_are_well_formed() {
    use crate::table;
    for keys in [
        table::toml_names(LOCAL_KEYS).collect::<Vec<_>>(),
        table::toml_names(CLIENT_KEYS).collect(),
    ] {
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len(), "{keys:?}");
    }
    for k in LOCAL_KEYS
        .iter()
        .map(|k| (k.name, k.doc, k.default))
        .chain(CLIENT_KEYS.iter().map(|k| (k.name, k.doc, k.default)))
    {
        assert!(
            !k.1.contains(['|', '\n']) && k.1.ends_with('.'),
            "doc of `{}`",
            k.0
        );
    }
    assert!(local_and_client_ock_keys()
        .iter()
        .all(|k| k.starts_with("ock.mmc.")));
    // The defaults are the table's.
    assert_eq!(LocalConfig::default().dram_bytes, 256 << 20);
    assert_eq!(
        ClientConfig::default().timeout_ms,
        DEFAULT_CLIENT_TIMEOUT_MS
    );
}

#[test]
fn unknown_keys_name_the_closest_known_key() {
    let e = LocalConfig::from_toml_str("[local]\ndram_sise = 1")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`dram_sise`") && e.contains("[local]") && e.contains("`dram_size`"),
        "{e}"
    );
    let e = ClientConfig::from_toml_str("read_threads = 1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`read_thread_pool_size`"), "{e}");
    let e = ClientConfig::from_toml_str("[client.tls]\nenabled = true")
        .unwrap_err()
        .to_string();
    assert!(e.contains("[client.tls]") && e.contains("`enable`"), "{e}");

    let text = format!("{FULL_OCK}ock.mmc.local_service.dram_size = 1GB\n");
    let ock = OckFile::parse(&text).unwrap();
    assert_eq!(
        ock.unknown_keys(is_local_or_client_ock_key),
        vec![("ock.mmc.local_service.dram_size", 22)]
    );
    assert_eq!(ock.warn_unknown("test", &local_and_client_ock_keys()), 1);
    assert_eq!(
        crate::table::closest(
            "ock.mmc.local_service.dram_size",
            local_and_client_ock_keys()
        ),
        Some("ock.mmc.local_service.dram.size")
    );
}

#[test]
fn local_flags_come_from_the_table() {
    use crate::flags::{apply_flags, with_flags};
    let m = with_flags(clap::Command::new("mmc-local"), LOCAL_KEYS)
        .try_get_matches_from([
            "mmc-local",
            "--dram",
            "1GB",
            "--no-prefault",
            "--rank",
            "4",
            "--protocol",
            "host_shm",
            "--data-poller",
            "io_uring",
            "--listen",
            "tcp://127.0.0.1:0",
        ])
        .unwrap();
    let mut c = LocalConfig::default();
    apply_flags(LOCAL_KEYS, &m, &mut c).unwrap();
    assert_eq!(
        (
            c.dram_bytes,
            c.prefault,
            c.rank_id,
            c.protocol,
            c.data_poller
        ),
        (
            GIB,
            false,
            Some(4),
            Some(DataOpType::Shm),
            DataPoller::IoUring
        )
    );
    let m = with_flags(clap::Command::new("mmc-local"), LOCAL_KEYS)
        .try_get_matches_from(["mmc-local", "--dram", "2XB"])
        .unwrap();
    let e = apply_flags(LOCAL_KEYS, &m, &mut c).unwrap_err().to_string();
    assert!(e.contains("`--dram`"), "{e}");
}

#[test]
fn section_timeouts_and_tls_merge() {
    // Both timeout units in one table conflict, in a section too.
    let e = ClientConfig::from_toml_str("[client]\ntimeout_ms = 1\ntimeout_seconds = 1")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("client.timeout_") && e.contains("not both"),
        "{e}"
    );
    // A section's [tls] keys override the top level's, key by key.
    let c = ClientConfig::from_toml_str(
        "[tls]\nca_path = \"/ca\"\ncert_path = \"/top\"\n[client.tls]\ncert_path = \"/own\"\n",
    )
    .unwrap();
    assert_eq!(
        (c.tls.ca_path.as_str(), c.tls.cert_path.as_str()),
        ("/ca", "/own")
    );
}
