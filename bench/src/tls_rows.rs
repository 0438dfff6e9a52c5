//! The TLS rows: the TCP placement against a second cluster with mutual TLS 1.3 on every
//! channel, to compare with the plain TCP rows.

use mmc_config::DataOpType;
use mmc_dataplane::ClientConfig;

use crate::cluster::Cluster;
use crate::progress::Progress;
use crate::report::{Row, TCP, TLS_THREADS};
use crate::workloads::{Checks, Plan};
use crate::Extra;

/// The TCP placement against a second cluster with TLS on everywhere: a meta service in this
/// process and one `mmc-local` with the `--tls*` flags, certificates made here.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows(
    dir: &std::path::Path,
    base: &ClientConfig,
    dram: u64,
    names: &[&str],
    prefix: &str,
    plan: &Plan,
    progress: &Progress,
    checks: &mut Checks,
) -> Result<(Vec<Row>, String), String> {
    let dir = dir.join("tls");
    let pki =
        mmc_tls::testpki::write(&dir.join("pki")).map_err(|e| format!("certificates: {e}"))?;
    let path = |p: &std::path::Path| p.display().to_string();
    let tls = mmc_config::TlsConfig {
        enable: true,
        ca_path: path(&pki.ca),
        crl_path: path(&pki.crl),
        cert_path: path(&pki.node_cert),
        key_path: path(&pki.node_key),
        ..mmc_config::TlsConfig::default()
    };
    let mut c = Cluster::start_with_tls(&dir, base.log_level, tls.clone())?;
    let flags = [
        "--tls",
        "--tls-ca",
        &tls.ca_path,
        "--tls-crl",
        &tls.crl_path,
        "--tls-cert",
        &tls.cert_path,
        "--tls-key",
        &tls.key_path,
        "--protocol",
        "tcp",
    ];
    let rank = c.add_local_with(dram, &flags)?.rank;
    let cfg = ClientConfig {
        meta_url: c.meta_url.clone(),
        transport: Some(DataOpType::Tcp),
        tls,
        ..base.clone()
    };
    let extra = Extra {
        meta: &c.meta_url,
        prefix,
        plan,
        progress,
    };
    let rows = extra.run(TCP, &cfg, rank, "tls", names, checks)?;
    let rows = rows.into_iter().map(|mut r| {
        r.data_server = TLS_THREADS;
        r
    });
    let note = format!(
        "TLS: the rows marked \"{TLS_THREADS}\" ran against a second cluster with mutual TLS 1.3 \
         (rustls, ring, ECDSA P-256 certificates) on every channel, client transport = tcp; \
         compare them with the plain tcp rows"
    );
    Ok((rows.collect(), note))
}
