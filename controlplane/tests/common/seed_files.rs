//! Writing and checking the committed seed files of fuzz targets (fuzz/corpus/TARGET/seed-*).

use std::path::{Path, PathBuf};

pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// With `MMC_WRITE_FUZZ_SEEDS` set, writes `seeds` as `seed-NAME` files of the target's corpus
/// (removing other `seed-*` files); without, checks that the committed ones are exactly these.
pub fn write_or_check(target: &str, seeds: &[(String, Vec<u8>)]) {
    let dir = corpus_dir(target);
    let want: Vec<(String, &Vec<u8>)> = seeds
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
        for (name, bytes) in &want {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        return;
    }
    let hint =
        "run MMC_WRITE_FUZZ_SEEDS=1 cargo test -p mmc-controlplane --test fuzz_seeds --test fuzz_seeds_meta and commit";
    let mut names: Vec<String> = want.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(
        committed(&dir),
        names,
        "seed files of {target} differ; {hint}"
    );
    for (name, bytes) in &want {
        let got = std::fs::read(dir.join(name)).unwrap();
        assert!(&got == *bytes, "{target}/{name} is stale; {hint}");
    }
}
