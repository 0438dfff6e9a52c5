//! The queue pair state machine (the subset of `ibv_qp_state` an RC requester walks), shared by
//! the simulated NIC and the verbs binding so both refuse the same transitions.

use super::RdmaError;

/// A queue pair's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpState {
    /// Fresh or reset: nothing may be posted.
    Reset,
    /// Initialised (port, access flags).
    Init,
    /// Ready to receive: bound to the peer's QPN and GID.
    Rtr,
    /// Ready to send: work requests may be posted.
    Rts,
    /// An error completion moved it here: posts fail (or flush) until a reset.
    Error,
}

/// The state of one queue pair, with the transitions verbs allows.
#[derive(Debug, Clone)]
pub struct QpStates {
    qpn: u32,
    state: QpState,
}

impl QpStates {
    /// A queue pair `qpn` in Reset.
    pub fn new(qpn: u32) -> QpStates {
        QpStates {
            qpn,
            state: QpState::Reset,
        }
    }

    /// Where it is.
    pub fn state(&self) -> QpState {
        self.state
    }

    fn step(&mut self, op: &'static str, from: QpState, to: QpState) -> Result<(), RdmaError> {
        if self.state != from {
            return Err(RdmaError::QpState {
                qpn: self.qpn,
                op,
                state: self.state,
            });
        }
        self.state = to;
        Ok(())
    }

    /// Reset -> Init.
    pub fn init(&mut self) -> Result<(), RdmaError> {
        self.step("modify to INIT", QpState::Reset, QpState::Init)
    }

    /// Init -> RTR.
    pub fn rtr(&mut self) -> Result<(), RdmaError> {
        self.step("modify to RTR", QpState::Init, QpState::Rtr)
    }

    /// RTR -> RTS.
    pub fn rts(&mut self) -> Result<(), RdmaError> {
        self.step("modify to RTS", QpState::Rtr, QpState::Rts)
    }

    /// Posting needs RTS.
    pub fn check_post(&self) -> Result<(), RdmaError> {
        if self.state != QpState::Rts {
            return Err(RdmaError::QpState {
                qpn: self.qpn,
                op: "post_send",
                state: self.state,
            });
        }
        Ok(())
    }

    /// An error completion: any state -> Error.
    pub fn fail(&mut self) {
        self.state = QpState::Error;
    }

    /// Any state -> Reset.
    pub fn reset(&mut self) {
        self.state = QpState::Reset;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_reset_init_rtr_rts_and_back() {
        let mut q = QpStates::new(7);
        assert!(q.check_post().is_err());
        assert!(q.rtr().is_err(), "RTR before INIT");
        q.init().unwrap();
        assert!(q.rts().is_err(), "RTS before RTR");
        q.rtr().unwrap();
        q.rts().unwrap();
        q.check_post().unwrap();
        q.fail();
        let e = q.check_post().unwrap_err();
        assert!(e.to_string().contains("Error"), "{e}");
        assert!(q.init().is_err(), "an errored QP must be reset first");
        q.reset();
        q.init().unwrap();
        assert_eq!(q.state(), QpState::Init);
    }
}
