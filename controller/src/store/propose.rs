//! Group commit at the log's door: writes that arrive while the previous proposal is being
//! committed go into the next log entry together.
//!
//! openraft runs one leader append at a time through its flush, so however many clients
//! write at once, each entry costs a disk flush on a majority and a replication round. The
//! proposer keeps one proposal in flight; whatever queues meanwhile (up to [`GROUP_MAX`])
//! becomes one [`Command::Group`] entry, applied command by command and answered command by
//! command. A write alone is proposed as itself, as fast as before; under load the cost of
//! an entry is shared by everything in it.

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::Raft;
use crate::model::{Applied, Command, CommandResult};

/// The most commands one entry carries (bounding its size and its apply time).
const GROUP_MAX: usize = 256;

/// How many proposals may wait for the proposer (the API's writers, bounded by connections).
const QUEUE: usize = 4096;

/// Why a proposal was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader (any more); the leader, if known.
    #[error("leadership moved to {0:?} while writing; retry")]
    ForwardToLeader(Option<u64>),
    /// Raft failed otherwise (shutting down, a storage error).
    #[error("{0}")]
    Raft(String),
}

type Waiter = oneshot::Sender<Result<CommandResult, ProposeError>>;

/// Proposes commands to Raft, grouping those that arrive together.
#[derive(Debug, Clone)]
pub struct Proposer {
    tx: mpsc::Sender<(Command, Waiter)>,
}

impl Proposer {
    /// A proposer for `raft`, running on the current runtime.
    pub fn spawn(raft: Raft) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx));
        Proposer { tx }
    }

    /// Proposes `cmd`; returns once it is committed and applied on this node, with its result.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((cmd, tx)).await.map_err(|_| ProposeError::Raft("the proposer has stopped".into()))?;
        rx.await.map_err(|_| ProposeError::Raft("the proposer has stopped".into()))?
    }
}

fn raft_error(e: RaftError<u64, ClientWriteError<u64, openraft::BasicNode>>) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::ForwardToLeader(f.leader_id),
        e => ProposeError::Raft(e.to_string()),
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<(Command, Waiter)>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        // Writers that gave up waiting are left out: their commands are not proposed.
        group.retain(|(_, w)| !w.is_closed());
        match group.len() {
            0 => {}
            1 => {
                let Some((cmd, w)) = group.pop() else { continue };
                let r = match raft.client_write(cmd).await {
                    Ok(resp) => match resp.data {
                        Applied::One(r) => Ok(r),
                        Applied::Group(_) => Err(ProposeError::Raft("a single command was answered as a group".into())),
                    },
                    Err(e) => Err(raft_error(e)),
                };
                let _ = w.send(r);
            }
            n => {
                let (commands, waiters): (Vec<Command>, Vec<Waiter>) = group.into_iter().unzip();
                tracing::trace!(commands = n, "proposing a group");
                match raft.client_write(Command::Group { commands }).await {
                    Ok(resp) => match resp.data {
                        Applied::Group(results) if results.len() == n => {
                            for (w, r) in waiters.into_iter().zip(results) {
                                let _ = w.send(Ok(r));
                            }
                        }
                        other => {
                            let e = ProposeError::Raft(format!("a group of {n} was answered with {other:?}"));
                            for w in waiters {
                                let _ = w.send(Err(e.clone()));
                            }
                        }
                    },
                    Err(e) => {
                        let e = raft_error(e);
                        for w in waiters {
                            let _ = w.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
    }
}
