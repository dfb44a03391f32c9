//! Fetch sessions (KIP-227) under ACLs. A broker re-checks nothing of an incremental Fetch
//! that a proxy can see: the request names only what changed, the broker answers for every
//! partition of the session. Sessions are not tied to a connection, so a client that guessed
//! another's session id would read its partitions. Under ACLs, a connection may use only the
//! sessions the broker opened for it (whose partitions this stage checked as they were added);
//! any other is answered FETCH_SESSION_ID_NOT_FOUND, on which a client starts a new session.

use std::collections::VecDeque;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, FetchRequest, ResponseHeader};
use kafka_protocol::protocol::Decodable;

use crate::codec::budgeted;

pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
/// Fetch v7 added sessions.
const FIRST_SESSION_VERSION: i16 = 7;
/// Sessions one connection keeps (clients use one per broker connection).
const MAX_SESSIONS: usize = 16;
/// A session's last epoch: the client closes it.
const FINAL_EPOCH: i32 = -1;

/// What a Fetch request does with sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// None, or one of this connection's.
    Fine,
    /// A full fetch that asks the broker for a new session: its response says which.
    Opens,
    /// A session the broker did not open on this connection.
    Foreign(i32),
}

#[derive(Debug, Default)]
pub struct Sessions {
    ids: VecDeque<i32>,
}

impl Sessions {
    /// What the Fetch request (`body`: after its header) does; a body that does not decode is
    /// `Fine` here (the checks deny it).
    pub fn request(&mut self, version: i16, body: &Bytes) -> Use {
        if version < FIRST_SESSION_VERSION {
            return Use::Fine;
        }
        let Some(r) = budgeted::decode::<FetchRequest>(&mut body.clone(), version) else {
            return Use::Fine;
        };
        match (r.session_id, r.session_epoch) {
            (0, 0) => Use::Opens,
            (0, _) => Use::Fine,
            (id, epoch) if self.ids.contains(&id) => {
                if epoch == FINAL_EPOCH {
                    self.ids.retain(|s| *s != id);
                }
                Use::Fine
            }
            (id, _) => Use::Foreign(id),
        }
    }

    /// The broker opened session `id` for this connection.
    fn opened(&mut self, id: i32) {
        if id == 0 || self.ids.contains(&id) {
            return;
        }
        if self.ids.len() >= MAX_SESSIONS {
            self.ids.pop_front();
        }
        self.ids.push_back(id);
    }

    /// A Fetch response's first bytes (`head`, after its size field): the session it opened, if
    /// it is whole enough to say. `None`: more bytes are needed.
    pub fn response(&mut self, version: i16, head: &[u8]) -> Option<()> {
        // The header (a correlation id, and tagged fields from v12) and three fixed fields.
        let mut b = Bytes::copy_from_slice(head.get(..head.len().min(HEAD)).unwrap_or_default());
        let before = b.len();
        ResponseHeader::decode(&mut b, ApiKey::Fetch.response_header_version(version)).ok()?;
        let at = before - b.len();
        // throttle_time_ms, error_code, session_id.
        let error = i16::from_be_bytes(head.get(at + 4..at + 6)?.try_into().ok()?);
        let id = i32::from_be_bytes(head.get(at + 6..at + 10)?.try_into().ok()?);
        if error == 0 {
            self.opened(id);
        }
        Some(())
    }
}

/// Bytes of a Fetch response enough for its header and session id (a header's tagged fields
/// are empty in practice; a larger one is not read).
pub const HEAD: usize = 64;
