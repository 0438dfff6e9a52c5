//! The binding to the system's libibverbs (rdma-core), through `rdma-sys` (bindgen at build
//! time; `ibv_post_send` and `ibv_poll_cq` are its Rust versions of the header's inline
//! functions, which go through the provider's ops table). Feature `rdma`.
//!
//! Why a build-time binding and not `dlopen` at run time: the data-path verbs are inline
//! functions in `<infiniband/verbs.h>` that call through `struct ibv_context`'s ops table, so a
//! run-time loader would have to repeat the C layouts by hand, unchecked; bindgen derives them
//! from the installed headers and checks their sizes in its layout tests.
//!
//! One device (the first listed, or `MMC_RDMA_DEVICE`), port 1 (`MMC_RDMA_PORT`), GID index 0
//! (`MMC_RDMA_GID_INDEX`; RoCE v2 usually wants the index of an IPv4-mapped GID), one protection
//! domain per opened device, one completion queue per queue pair.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::{Arc, Mutex};

use rdma_sys as ib;

use super::{
    Completion, Device, DeviceAttr, Mr, Opcode, QpEndpoint, QpState, QpStates, QueuePair,
    RdmaError, WcStatus, WorkRequest,
};

fn errno(call: &'static str) -> RdmaError {
    RdmaError::Call {
        call,
        reason: std::io::Error::last_os_error().to_string(),
    }
}

fn env_num(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// An opened device with its protection domain.
pub struct VerbsDevice {
    ctx: *mut ib::ibv_context,
    pd: *mut ib::ibv_pd,
    attr: DeviceAttr,
    port: u8,
    gid_index: u8,
    gid: [u8; 16],
    lid: u16,
    mtu: ib::ibv_mtu::Type,
    /// Registered MRs by lkey.
    mrs: Mutex<HashMap<u32, usize>>,
}

// SAFETY: libibverbs objects may be used from any thread (the library locks what it shares);
// the MR table is behind a mutex.
unsafe impl Send for VerbsDevice {}
// SAFETY: as above.
unsafe impl Sync for VerbsDevice {}

impl VerbsDevice {
    /// Open the first device libibverbs lists (or `MMC_RDMA_DEVICE`), once per process: the
    /// device, its protection domain and its MRs live as long as the process (queue pairs and MRs
    /// of it may be dropped in any order).
    pub fn open_first() -> Result<Arc<VerbsDevice>, RdmaError> {
        static DEV: Mutex<Option<Arc<VerbsDevice>>> = Mutex::new(None);
        let mut g = DEV
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        if let Some(d) = g.as_ref() {
            return Ok(d.clone());
        }
        let d = Self::open()?;
        *g = Some(d.clone());
        Ok(d)
    }

    fn open() -> Result<Arc<VerbsDevice>, RdmaError> {
        let want = std::env::var("MMC_RDMA_DEVICE").ok();
        let mut n = 0i32;
        // SAFETY: n is a valid out-pointer; the list is freed below.
        let list = unsafe { ib::ibv_get_device_list(&mut n) };
        if list.is_null() {
            return Err(RdmaError::NoDevice(format!(
                "ibv_get_device_list: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut found = None;
        for i in 0..n.max(0) as usize {
            // SAFETY: the list holds n device pointers.
            let dev = unsafe { *list.add(i) };
            // SAFETY: a listed device has a NUL-terminated name.
            let name = unsafe { CStr::from_ptr(ib::ibv_get_device_name(dev)) }
                .to_string_lossy()
                .into_owned();
            if want.as_deref().is_none_or(|w| w == name) {
                found = Some((dev, name));
                break;
            }
        }
        let Some((dev, name)) = found else {
            // SAFETY: the list came from ibv_get_device_list.
            unsafe { ib::ibv_free_device_list(list) };
            return Err(RdmaError::NoDevice(match want {
                Some(w) => format!("libibverbs lists {n} devices, none named {w}"),
                None => "libibverbs lists no device".into(),
            }));
        };
        // SAFETY: dev is from the live list; the context outlives the list.
        let ctx = unsafe { ib::ibv_open_device(dev) };
        // SAFETY: the list came from ibv_get_device_list.
        unsafe { ib::ibv_free_device_list(list) };
        if ctx.is_null() {
            return Err(errno("ibv_open_device"));
        }
        let port = env_num("MMC_RDMA_PORT", 1) as u8;
        let gid_index = env_num("MMC_RDMA_GID_INDEX", 0) as u8;
        // SAFETY: plain C structs, zero is a valid value for each.
        let mut da: ib::ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut pa: ib::ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut gid: ib::ibv_gid = unsafe { std::mem::zeroed() };
        // SAFETY: ctx is open; the out-structs are ours.
        let bad = unsafe {
            if ib::ibv_query_device(ctx, &mut da) != 0 {
                Some("ibv_query_device")
            } else if ib::___ibv_query_port(ctx, port, &mut pa) != 0 {
                Some("ibv_query_port")
            } else if ib::ibv_query_gid(ctx, port, gid_index as i32, &mut gid) != 0 {
                Some("ibv_query_gid")
            } else {
                None
            }
        };
        let pd = if bad.is_none() {
            // SAFETY: ctx is open.
            unsafe { ib::ibv_alloc_pd(ctx) }
        } else {
            std::ptr::null_mut()
        };
        if let Some(call) = bad.or(pd.is_null().then_some("ibv_alloc_pd")) {
            let e = errno(call);
            // SAFETY: ctx is open and nothing else holds it.
            unsafe { ib::ibv_close_device(ctx) };
            return Err(e);
        }
        // SAFETY: the union's raw view covers all 16 bytes.
        let raw = unsafe { gid.raw };
        let prefix: String = raw[..8].iter().map(|b| format!("{b:02x}")).collect();
        let attr = DeviceAttr {
            name: name.clone(),
            fabric: format!("ib:{prefix}"),
            max_sge: da.max_sge.max(1) as u32,
            max_qp_wr: da.max_qp_wr.max(1) as u32,
            max_mr_size: da.max_mr_size,
            max_msg_sz: pa.max_msg_sz.max(1) as u64,
            max_inline: env_num("MMC_RDMA_MAX_INLINE", 64),
        };
        tracing::info!(device = %name, ?attr, "RDMA device opened");
        Ok(Arc::new(VerbsDevice {
            ctx,
            pd,
            attr,
            port,
            gid_index,
            gid: raw,
            lid: pa.lid,
            mtu: pa.active_mtu,
            mrs: Mutex::new(HashMap::new()),
        }))
    }
}

impl Device for VerbsDevice {
    fn attr(&self) -> &DeviceAttr {
        &self.attr
    }

    unsafe fn reg_mr(&self, addr: u64, len: u64, access: u32) -> Result<Mr, RdmaError> {
        if len > self.attr.max_mr_size {
            return Err(RdmaError::Limit {
                what: format!("an MR of {len} bytes"),
                limit: "max_mr_size",
                max: self.attr.max_mr_size,
                wanted: len,
            });
        }
        // SAFETY: the caller keeps the range mapped until dereg (this fn's contract); the access
        // flags are ibv_access_flags values.
        let mr = unsafe { ib::ibv_reg_mr(self.pd, addr as *mut _, len as usize, access as i32) };
        if mr.is_null() {
            return Err(errno("ibv_reg_mr"));
        }
        // SAFETY: a registered MR.
        let (lkey, rkey) = unsafe { ((*mr).lkey, (*mr).rkey) };
        self.mrs
            .lock()
            .expect("lock poisoned: a panic left this state half-updated")
            .insert(lkey, mr as usize);
        Ok(Mr {
            addr,
            len,
            lkey,
            rkey,
        })
    }

    fn dereg_mr(&self, mr: &Mr) -> Result<(), RdmaError> {
        let Some(p) = self
            .mrs
            .lock()
            .expect("lock poisoned: a panic left this state half-updated")
            .remove(&mr.lkey)
        else {
            return Err(RdmaError::Call {
                call: "ibv_dereg_mr",
                reason: format!("no MR with lkey {:#x}", mr.lkey),
            });
        };
        // SAFETY: registered by this device, removed from the table: deregistered once.
        match unsafe { ib::ibv_dereg_mr(p as *mut ib::ibv_mr) } {
            0 => Ok(()),
            _ => Err(errno("ibv_dereg_mr")),
        }
    }

    fn create_qp(&self, depth: u32) -> Result<Box<dyn QueuePair>, RdmaError> {
        if depth == 0 || depth > self.attr.max_qp_wr {
            return Err(RdmaError::Limit {
                what: "a send queue".into(),
                limit: "max_qp_wr",
                max: self.attr.max_qp_wr as u64,
                wanted: depth as u64,
            });
        }
        // SAFETY: ctx is open.
        let channel = unsafe { ib::ibv_create_comp_channel(self.ctx) };
        if channel.is_null() {
            return Err(errno("ibv_create_comp_channel"));
        }
        // Non-blocking: `wait_event` polls the fd with a timeout, then takes the event.
        // SAFETY: the channel's fd is open; F_GETFL/F_SETFL take and return plain flags.
        let nonblocking = unsafe {
            let fd = (*channel).fd;
            let fl = libc::fcntl(fd, libc::F_GETFL);
            fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) == 0
        };
        if !nonblocking {
            let e = errno("fcntl(O_NONBLOCK) on the completion channel");
            // SAFETY: ours, unused.
            unsafe { ib::ibv_destroy_comp_channel(channel) };
            return Err(e);
        }
        // SAFETY: ctx is open; the channel is ours and outlives the CQ (destroyed after it).
        let cq =
            unsafe { ib::ibv_create_cq(self.ctx, depth as i32, std::ptr::null_mut(), channel, 0) };
        if cq.is_null() {
            let e = errno("ibv_create_cq");
            // SAFETY: ours, unused.
            unsafe { ib::ibv_destroy_comp_channel(channel) };
            return Err(e);
        }
        // SAFETY: a plain C struct; zero is valid.
        let mut init: ib::ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = cq;
        init.recv_cq = cq;
        init.cap.max_send_wr = depth;
        init.cap.max_recv_wr = 1;
        init.cap.max_send_sge = self.attr.max_sge;
        init.cap.max_recv_sge = 1;
        init.cap.max_inline_data = self.attr.max_inline;
        init.qp_type = ib::ibv_qp_type::IBV_QPT_RC;
        // SAFETY: pd and cq are live; init is filled.
        let qp = unsafe { ib::ibv_create_qp(self.pd, &mut init) };
        if qp.is_null() {
            let e = errno("ibv_create_qp");
            // SAFETY: ours, unused; the CQ before its channel.
            unsafe {
                ib::ibv_destroy_cq(cq);
                ib::ibv_destroy_comp_channel(channel);
            }
            return Err(e);
        }
        // SAFETY: a created QP.
        let qpn = unsafe { (*qp).qp_num };
        Ok(Box::new(VerbsQp {
            qp,
            cq,
            channel,
            states: QpStates::new(qpn),
            psn: qpn.wrapping_mul(2654435761) & 0xff_ffff,
            local: self.endpoint_base(),
            port: self.port,
            gid_index: self.gid_index,
            mtu: self.mtu,
            wc: Vec::new(),
        }))
    }
}

impl VerbsDevice {
    fn endpoint_base(&self) -> QpEndpoint {
        QpEndpoint {
            qpn: 0,
            psn: 0,
            lid: self.lid,
            gid: self.gid,
        }
    }
}

/// A reliable-connected queue pair and its completion queue.
pub struct VerbsQp {
    qp: *mut ib::ibv_qp,
    cq: *mut ib::ibv_cq,
    /// The CQ's completion channel (every event taken is acknowledged at once).
    channel: *mut ib::ibv_comp_channel,
    states: QpStates,
    psn: u32,
    local: QpEndpoint,
    port: u8,
    gid_index: u8,
    mtu: ib::ibv_mtu::Type,
    wc: Vec<ib::ibv_wc>,
}

// SAFETY: a QP is used by one thread at a time (&mut self); libibverbs allows any thread.
unsafe impl Send for VerbsQp {}

impl Drop for VerbsQp {
    fn drop(&mut self) {
        // SAFETY: ours; the QP goes before its CQ, the CQ (whose events were all acknowledged)
        // before its channel.
        unsafe {
            ib::ibv_destroy_qp(self.qp);
            ib::ibv_destroy_cq(self.cq);
            ib::ibv_destroy_comp_channel(self.channel);
        }
    }
}

impl VerbsQp {
    fn modify(
        &mut self,
        attr: &mut ib::ibv_qp_attr,
        mask: u32,
        call: &'static str,
    ) -> Result<(), RdmaError> {
        // SAFETY: a live QP and a filled attribute struct.
        match unsafe { ib::ibv_modify_qp(self.qp, attr, mask as i32) } {
            0 => Ok(()),
            _ => Err(errno(call)),
        }
    }
}

fn status(s: ib::ibv_wc_status::Type) -> WcStatus {
    use ib::ibv_wc_status as w;
    match s {
        w::IBV_WC_SUCCESS => WcStatus::Success,
        w::IBV_WC_LOC_PROT_ERR => WcStatus::LocalProtection,
        w::IBV_WC_LOC_LEN_ERR => WcStatus::LocalLength,
        w::IBV_WC_REM_ACCESS_ERR => WcStatus::RemoteAccess,
        w::IBV_WC_REM_INV_REQ_ERR => WcStatus::RemoteInvalidRequest,
        w::IBV_WC_RETRY_EXC_ERR => WcStatus::RetryExceeded,
        w::IBV_WC_WR_FLUSH_ERR => WcStatus::Flush,
        other => WcStatus::Other(other),
    }
}

impl QueuePair for VerbsQp {
    fn endpoint(&self) -> QpEndpoint {
        QpEndpoint {
            qpn: self.states_qpn(),
            psn: self.psn,
            ..self.local
        }
    }

    fn state(&self) -> QpState {
        self.states.state()
    }

    fn connect(&mut self, remote: &QpEndpoint) -> Result<(), RdmaError> {
        use ib::ibv_qp_attr_mask as m;
        let all = super::access::LOCAL_WRITE
            | super::access::REMOTE_READ
            | super::access::REMOTE_WRITE
            | super::access::REMOTE_ATOMIC;
        // SAFETY: a plain C struct; zero is valid.
        let mut a: ib::ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ib::ibv_qp_state::IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = self.port;
        a.qp_access_flags = all;
        let mask = m::IBV_QP_STATE.0
            | m::IBV_QP_PKEY_INDEX.0
            | m::IBV_QP_PORT.0
            | m::IBV_QP_ACCESS_FLAGS.0;
        self.modify(&mut a, mask, "ibv_modify_qp(INIT)")?;
        self.states.init()?;
        // SAFETY: as above.
        let mut a: ib::ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ib::ibv_qp_state::IBV_QPS_RTR;
        a.path_mtu = self.mtu;
        a.dest_qp_num = remote.qpn;
        a.rq_psn = remote.psn;
        a.max_dest_rd_atomic = 16;
        a.min_rnr_timer = 12;
        a.ah_attr.is_global = 1;
        a.ah_attr.grh.dgid.raw = remote.gid;
        a.ah_attr.grh.sgid_index = self.gid_index;
        a.ah_attr.grh.hop_limit = 64;
        a.ah_attr.dlid = remote.lid;
        a.ah_attr.port_num = self.port;
        let mask = m::IBV_QP_STATE.0
            | m::IBV_QP_AV.0
            | m::IBV_QP_PATH_MTU.0
            | m::IBV_QP_DEST_QPN.0
            | m::IBV_QP_RQ_PSN.0
            | m::IBV_QP_MAX_DEST_RD_ATOMIC.0
            | m::IBV_QP_MIN_RNR_TIMER.0;
        self.modify(&mut a, mask, "ibv_modify_qp(RTR)")?;
        self.states.rtr()?;
        // SAFETY: as above.
        let mut a: ib::ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ib::ibv_qp_state::IBV_QPS_RTS;
        a.timeout = 14;
        a.retry_cnt = 7;
        a.rnr_retry = 7;
        a.sq_psn = self.psn;
        a.max_rd_atomic = 16;
        let mask = m::IBV_QP_STATE.0
            | m::IBV_QP_TIMEOUT.0
            | m::IBV_QP_RETRY_CNT.0
            | m::IBV_QP_RNR_RETRY.0
            | m::IBV_QP_SQ_PSN.0
            | m::IBV_QP_MAX_QP_RD_ATOMIC.0;
        self.modify(&mut a, mask, "ibv_modify_qp(RTS)")?;
        self.states.rts()
    }

    fn reset(&mut self) -> Result<(), RdmaError> {
        // SAFETY: a plain C struct; zero is valid.
        let mut a: ib::ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ib::ibv_qp_state::IBV_QPS_RESET;
        self.modify(
            &mut a,
            ib::ibv_qp_attr_mask::IBV_QP_STATE.0,
            "ibv_modify_qp(RESET)",
        )?;
        // Drain what the CQ still holds of the old connection.
        let mut out = Vec::new();
        while self.poll_cq(&mut out, 64)? > 0 {
            out.clear();
        }
        self.states.reset();
        Ok(())
    }

    unsafe fn post_send(&mut self, wrs: &[WorkRequest]) -> Result<(), RdmaError> {
        self.states.check_post()?;
        if wrs.is_empty() {
            return Ok(());
        }
        let mut sges: Vec<Vec<ib::ibv_sge>> = wrs
            .iter()
            .map(|w| {
                w.sges
                    .iter()
                    .map(|s| ib::ibv_sge {
                        addr: s.addr,
                        length: s.len,
                        lkey: s.lkey,
                    })
                    .collect()
            })
            .collect();
        // SAFETY: plain C structs; zero is valid for each.
        let mut chain: Vec<ib::ibv_send_wr> =
            wrs.iter().map(|_| unsafe { std::mem::zeroed() }).collect();
        for (i, w) in wrs.iter().enumerate() {
            let c = &mut chain[i];
            c.wr_id = w.wr_id;
            c.sg_list = sges[i].as_mut_ptr();
            c.num_sge = sges[i].len() as i32;
            let f = &ib::ibv_send_flags::IBV_SEND_SIGNALED;
            c.send_flags = (if w.signaled { f.0 } else { 0 })
                | (if w.fence {
                    ib::ibv_send_flags::IBV_SEND_FENCE.0
                } else {
                    0
                })
                | (if w.inline {
                    ib::ibv_send_flags::IBV_SEND_INLINE.0
                } else {
                    0
                });
            match w.opcode {
                Opcode::Write | Opcode::Read => {
                    c.opcode = if w.opcode == Opcode::Write {
                        ib::ibv_wr_opcode::IBV_WR_RDMA_WRITE
                    } else {
                        ib::ibv_wr_opcode::IBV_WR_RDMA_READ
                    };
                    c.wr.rdma = ib::rdma_t {
                        remote_addr: w.remote_addr,
                        rkey: w.rkey,
                    };
                }
                Opcode::FetchAdd { add } => {
                    c.opcode = ib::ibv_wr_opcode::IBV_WR_ATOMIC_FETCH_AND_ADD;
                    c.wr.atomic = ib::atomic_t {
                        remote_addr: w.remote_addr,
                        compare_add: add,
                        swap: 0,
                        rkey: w.rkey,
                    };
                }
            }
        }
        for i in 0..chain.len().saturating_sub(1) {
            let next: *mut ib::ibv_send_wr = &mut chain[i + 1];
            chain[i].next = next;
        }
        let mut bad: *mut ib::ibv_send_wr = std::ptr::null_mut();
        // SAFETY: the chain and its entries live across the call (the provider copies them into
        // the send queue); the memory they name is the caller's to keep valid (this fn's contract).
        match unsafe { ib::ibv_post_send(self.qp, chain.as_mut_ptr(), &mut bad) } {
            0 => Ok(()),
            e => Err(RdmaError::Call {
                call: "ibv_post_send",
                reason: std::io::Error::from_raw_os_error(e).to_string(),
            }),
        }
    }

    fn poll_cq(&mut self, out: &mut Vec<Completion>, max: usize) -> Result<usize, RdmaError> {
        let max = max.min(256);
        // SAFETY: plain C structs; zero is valid.
        self.wc.resize_with(max, || unsafe { std::mem::zeroed() });
        // SAFETY: a live CQ and room for max completions.
        let n = unsafe { ib::ibv_poll_cq(self.cq, max as i32, self.wc.as_mut_ptr()) };
        if n < 0 {
            return Err(errno("ibv_poll_cq"));
        }
        for wc in &self.wc[..n as usize] {
            let s = status(wc.status);
            if s != WcStatus::Success {
                self.states.fail();
            }
            out.push(Completion {
                wr_id: wc.wr_id,
                status: s,
            });
        }
        Ok(n as usize)
    }

    fn req_notify(&mut self) -> Result<(), RdmaError> {
        // SAFETY: a live CQ with a completion channel.
        match unsafe { ib::ibv_req_notify_cq(self.cq, 0) } {
            0 => Ok(()),
            e => Err(RdmaError::Call {
                call: "ibv_req_notify_cq",
                reason: std::io::Error::from_raw_os_error(e).to_string(),
            }),
        }
    }

    fn wait_event(&mut self, timeout: std::time::Duration) -> Result<bool, RdmaError> {
        let mut pfd = libc::pollfd {
            // SAFETY: a live channel.
            fd: unsafe { (*self.channel).fd },
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(RdmaError::Call {
                call: "poll(completion channel)",
                reason: e.to_string(),
            });
        }
        if r == 0 {
            return Ok(false);
        }
        let mut cq: *mut ib::ibv_cq = std::ptr::null_mut();
        let mut ctx: *mut std::ffi::c_void = std::ptr::null_mut();
        // SAFETY: a live, non-blocking channel and valid out-pointers.
        if unsafe { ib::ibv_get_cq_event(self.channel, &mut cq, &mut ctx) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(false);
            }
            return Err(RdmaError::Call {
                call: "ibv_get_cq_event",
                reason: e.to_string(),
            });
        }
        // SAFETY: the event just taken is of this channel's only CQ.
        unsafe { ib::ibv_ack_cq_events(cq, 1) };
        Ok(true)
    }
}

impl VerbsQp {
    fn states_qpn(&self) -> u32 {
        // SAFETY: a live QP.
        unsafe { (*self.qp).qp_num }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where libibverbs lists a device, it opens with sane limits and a loopback queue pair
    /// connects; elsewhere the missing device is an error, printed as the reason for skipping.
    #[test]
    fn the_first_device_opens_or_its_absence_is_reported() {
        let dev = match VerbsDevice::open_first() {
            Ok(d) => d,
            Err(e) => {
                println!("skipped: no RDMA device ({e})");
                assert!(
                    matches!(e, RdmaError::NoDevice(_) | RdmaError::Call { .. }),
                    "{e}"
                );
                return;
            }
        };
        let a = dev.attr();
        assert!(
            a.max_sge >= 1 && a.max_qp_wr >= 1 && a.max_msg_sz >= 1,
            "{a:?}"
        );
        let mut qp = dev.create_qp(16).expect("a queue pair");
        let ep = qp.endpoint();
        qp.connect(&ep).expect("a loopback connection");
        assert_eq!(qp.state(), QpState::Rts);
        // The completion channel: armed, with nothing posted no event comes.
        qp.req_notify().expect("ibv_req_notify_cq");
        let waited = qp.wait_event(std::time::Duration::from_millis(10));
        assert_eq!(waited, Ok(false), "no completion, no event");
    }
}
