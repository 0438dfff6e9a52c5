//! The embedded backend: the client's own local service, in this process. Each job is one memcpy
//! per run between the caller's slices and the service's pool, inside the service's epoch fence
//! (refused, -3018, unless the service is at the job's rank and incarnation), done before
//! `submit` returns. It serves only the embedded service's rank; the chooser sends nothing else.

use mmc_controlplane::Result;
use mmc_core::fence::Fence;
use mmc_core::transport::{Completions, Job, Transport};

use crate::local::LocalService;

/// The embedded local service, as a backend.
pub(crate) struct Embedded<'a>(pub(crate) &'a LocalService);

impl Transport for Embedded<'_> {
    fn submit(&mut self, jobs: Vec<Job<'_>>, done: &mut Completions) {
        let svc = self.0;
        debug_assert!(jobs.iter().all(|j| j.t.fence.rank == svc.rank()));
        super::copy_jobs(jobs, done, svc);
    }
}

impl super::PoolCopies for LocalService {
    fn copy_in(&self, f: Fence, offset: u64, src: &[u8]) -> Result<()> {
        LocalService::copy_in(self, f, offset, src)
    }

    fn copy_out(&self, f: Fence, offset: u64, dst: &mut [u8]) -> Result<()> {
        LocalService::copy_out(self, f, offset, dst)
    }

    fn dev_copies(&self, f: Fence, write: bool, items: &[(u64, u64, u64)]) -> Result<()> {
        LocalService::dev_copies(self, f, write, items)
    }
}
