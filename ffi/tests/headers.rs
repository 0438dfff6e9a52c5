//! The checked-in C headers are exactly what cbindgen generates from the sources. Regenerate with
//! `UPDATE_HEADERS=1 cargo test -p mmc-ffi --test headers`.

use std::path::{Path, PathBuf};

const UMBRELLA: &str = "/* MemCache C API: include this one header. */
#ifndef MMC_H
#define MMC_H

#include \"mmc_def.h\"
#include \"mmc_client.h\"
#include \"mmc_service.h\"

#endif /* MMC_H */
";

fn generate(crate_dir: &Path, name: &str) -> String {
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen").join(format!("{name}.toml")))
            .unwrap_or_else(|e| panic!("cbindgen config {name}: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen {name}: {e}"));
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("utf-8 header")
}

#[test]
fn headers_are_up_to_date() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let include = crate_dir.join("include");
    let update = std::env::var_os("UPDATE_HEADERS").is_some();
    let mut stale = Vec::new();
    let mut wanted: Vec<(String, String)> = ["mmc_def", "mmc_client", "mmc_service", "mmc_device"]
        .iter()
        .map(|n| (format!("{n}.h"), generate(&crate_dir, n)))
        .collect();
    wanted.push(("mmc.h".into(), UMBRELLA.into()));
    for (file, text) in wanted {
        let path = include.join(&file);
        if update {
            std::fs::create_dir_all(&include).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "headers differ from the sources: {stale:?}; run UPDATE_HEADERS=1 cargo test -p mmc-ffi --test headers and commit"
    );
}

/// Every documented error code is in `mmc_def.h` with the contract's name and value, and no other.
#[test]
fn header_error_codes_match_the_contract_table() {
    let def = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include/mmc_def.h"),
    )
    .unwrap();
    let mut in_header: Vec<(String, i32)> = def
        .lines()
        .filter_map(|l| l.strip_prefix("#define MMC_"))
        .filter_map(|rest| {
            let mut it = rest.split_whitespace();
            let name = format!("MMC_{}", it.next()?);
            let value = it.next()?.parse().ok()?;
            Some((name, value))
        })
        .filter(|(n, _)| {
            !matches!(
                n.as_str(),
                "MMC_DIM_1D" | "MMC_DIM_2D" | "MMC_FLAG_ASYNC" | "MMC_KEY_BYTES_MAX"
            )
        })
        .collect();
    let mut table: Vec<(String, i32)> = mmc_controlplane::Code::TABLE
        .iter()
        .map(|(c, n)| (n.to_string(), c.as_i32()))
        .collect();
    in_header.sort();
    table.sort();
    assert_eq!(in_header, table);
}
