//! How much memory this process can give a pool: `MemAvailable` of `/proc/meminfo`, bounded by
//! its cgroup's memory limit (v2 `memory.max`, v1 `memory.limit_in_bytes`, at every level of its
//! cgroup path), and the free 2 MiB hugetlb pages (which a pool uses when they can back it all).
//! A local service checks its pools against this before it creates them, so that a pool larger
//! than the host can give is refused at once with both numbers, instead of being killed by the
//! kernel's OOM killer while it pre-faults.

use std::path::{Path, PathBuf};

use crate::arena::{hugetlb_available_bytes, HUGE_PAGE_BYTES};

/// What the host can give, as read now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostMemory {
    /// `MemAvailable` (None: not found).
    pub mem_available: Option<u64>,
    /// The tightest cgroup limit on this process (None: no limit) and what is still free under
    /// it (limit minus usage, reclaimable file cache not counted as used).
    pub cgroup: Option<CgroupRoom>,
    /// Free, unreserved 2 MiB hugetlb pages, in bytes.
    pub hugetlb_free: u64,
}

/// A cgroup memory limit and the room left under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupRoom {
    /// The limit, in bytes.
    pub limit: u64,
    /// Bytes still free under it.
    pub free: u64,
}

impl HostMemory {
    /// Read `/proc/meminfo`, `/proc/self/cgroup` and the cgroup files.
    pub fn read() -> HostMemory {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        HostMemory {
            mem_available: meminfo_field(&meminfo, "MemAvailable:"),
            cgroup: cgroup_room(&cgroup, Path::new("/sys/fs/cgroup")),
            hugetlb_free: hugetlb_available_bytes(&meminfo),
        }
    }

    /// Bytes of ordinary memory a pool can take: `MemAvailable`, or less under a cgroup limit
    /// (None when neither is known).
    pub fn ordinary(&self) -> Option<u64> {
        match (self.mem_available, self.cgroup) {
            (Some(a), Some(c)) => Some(a.min(c.free)),
            (Some(a), None) => Some(a),
            (None, Some(c)) => Some(c.free),
            (None, None) => None,
        }
    }

    /// Whether pools of these sizes fit: all in free hugetlb pages, or all in ordinary memory.
    /// Unknown (nothing readable) fits.
    pub fn fits(&self, pools: &[u64]) -> bool {
        let huge: u64 = pools
            .iter()
            .map(|b| b.div_ceil(HUGE_PAGE_BYTES).saturating_mul(HUGE_PAGE_BYTES))
            .fold(0, u64::saturating_add);
        let total = pools.iter().copied().fold(0, u64::saturating_add);
        huge <= self.hugetlb_free || self.ordinary().is_none_or(|o| total <= o)
    }

    /// What the host can give, for a refusal message.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = self.mem_available {
            parts.push(format!("MemAvailable {a} bytes"));
        }
        if let Some(c) = self.cgroup {
            parts.push(format!(
                "cgroup memory limit {} bytes with {} bytes free under it",
                c.limit, c.free
            ));
        }
        parts.push(format!("free hugetlb pages {} bytes", self.hugetlb_free));
        parts.join("; ")
    }
}

/// A `/proc/meminfo` field, in bytes.
fn meminfo_field(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next()?.parse::<u64>().ok())
            .flatten()
            .map(|kb| kb.saturating_mul(1024))
    })
}

/// A number in a cgroup file (`max` and v1's "unlimited" huge values are None).
fn read_limit(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: u64 = text.trim().parse().ok()?;
    // cgroup v1 writes "no limit" as a page-rounded i64::MAX.
    (v < (1 << 62)).then_some(v)
}

/// `inactive_file` (v2) or `total_inactive_file` (v1) of a `memory.stat`: reclaimable cache.
fn inactive_file(dir: &Path) -> u64 {
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    stat.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            matches!(k, "inactive_file" | "total_inactive_file")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0)
}

/// The tightest limit among the cgroup directories of this process (v2 unified path, or v1's
/// memory controller path, with every ancestor, and the mount's root as a container sees it).
fn cgroup_room(proc_self_cgroup: &str, root: &Path) -> Option<CgroupRoom> {
    let mut dirs: Vec<(PathBuf, &str, &str)> = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let (base, max, current) = if controllers.is_empty() {
            (root.to_path_buf(), "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                root.join("memory"),
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        let rel = Path::new(path.trim_start_matches('/'));
        for ancestor in rel.ancestors() {
            dirs.push((base.join(ancestor), max, current));
        }
    }
    let mut best: Option<CgroupRoom> = None;
    for (dir, max, current) in dirs {
        let Some(limit) = read_limit(&dir.join(max)) else {
            continue;
        };
        let used = read_limit(&dir.join(current))
            .unwrap_or(0)
            .saturating_sub(inactive_file(&dir));
        let room = CgroupRoom {
            limit,
            free: limit.saturating_sub(used),
        };
        if best.is_none_or(|b| room.free < b.free) {
            best = Some(room);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_are_bytes() {
        let m = "MemTotal: 100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(meminfo_field(m, "MemAvailable:"), Some(2 << 20));
        assert_eq!(meminfo_field(m, "Nope:"), None);
    }

    #[test]
    fn the_tightest_cgroup_level_counts_and_cache_is_free() {
        let root = tempfile::tempdir().unwrap();
        let leaf = root.path().join("a/b");
        std::fs::create_dir_all(&leaf).unwrap();
        // v2: the parent limits to 1 GiB with 600 MiB used (100 MiB of it cache); the leaf has
        // no limit.
        std::fs::write(root.path().join("a/memory.max"), "1073741824\n").unwrap();
        std::fs::write(root.path().join("a/memory.current"), "629145600\n").unwrap();
        std::fs::write(
            root.path().join("a/memory.stat"),
            "anon 1\ninactive_file 104857600\n",
        )
        .unwrap();
        std::fs::write(leaf.join("memory.max"), "max\n").unwrap();
        let room = cgroup_room("0::/a/b\n", root.path()).unwrap();
        assert_eq!(room.limit, 1 << 30);
        assert_eq!(room.free, (1 << 30) - (500 << 20));
        assert_eq!(cgroup_room("0::/\n", root.path()), None);
        let h = HostMemory {
            mem_available: Some(8 << 30),
            cgroup: Some(room),
            hugetlb_free: 0,
        };
        assert_eq!(h.ordinary(), Some(room.free));
        assert!(h.fits(&[256 << 20, 256 << 20]));
        assert!(!h.fits(&[1 << 30]));
        assert!(h.describe().contains("1073741824"));
        // Enough hugetlb pages for every pool: fits.
        let huge = HostMemory {
            hugetlb_free: 2 << 30,
            ..h
        };
        assert!(huge.fits(&[1 << 30]));
    }

    #[test]
    fn v1_limits_are_read_and_unlimited_is_none() {
        let root = tempfile::tempdir().unwrap();
        let mem = root.path().join("memory/x");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(
            root.path().join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "2147483648\n").unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "1073741824\n").unwrap();
        let room = cgroup_room("4:memory:/x\n0::/\n", root.path()).unwrap();
        assert_eq!((room.limit, room.free), (2 << 30, 1 << 30));
    }
}
