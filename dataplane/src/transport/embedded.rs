//! The embedded backend: the client's own local service, in this process. Each job is one memcpy
//! per run between the caller's slices and the service's pool, inside the service's epoch fence
//! (refused, -3018, unless the service is at the job's rank and incarnation), done before
//! `submit` returns. It serves only the embedded service's rank; the chooser sends nothing else.

use mmc_core::transport::{Completions, Job, Transport};

use crate::local::LocalService;

/// The embedded local service, as a backend.
pub(crate) struct Embedded<'a>(pub(crate) &'a LocalService);

impl Transport for Embedded<'_> {
    fn submit(&mut self, jobs: Vec<Job<'_>>, done: &mut Completions) {
        let svc = self.0;
        debug_assert!(jobs.iter().all(|j| j.t.fence.rank == svc.rank()));
        super::copy_jobs(
            jobs,
            done,
            |f, offset, src| svc.copy_in(f, offset, src),
            |f, offset, dst| svc.copy_out(f, offset, dst),
        );
    }
}
