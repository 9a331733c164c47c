//! A named lock of one kind in one session: what every lock handle (`Mutex`, `RwLock`,
//! `Semaphore`) holds, and where its contenders come from.

use std::sync::Arc;

use super::contend::Contender;
use super::LockKind;
use crate::base::error::Result;
use crate::base::limits::check_name;
use crate::session::Session;

#[derive(Clone)]
pub(crate) struct NamedLock {
    pub(crate) session: Session,
    pub(crate) kind: LockKind,
    pub(crate) name: Arc<str>,
    /// The key of its queue.
    pub(crate) key: Arc<str>,
}

impl NamedLock {
    /// The `kind` lock `name` of `session`, once the name is checked. No I/O.
    pub(crate) fn new(session: &Session, kind: LockKind, name: &str) -> Result<NamedLock> {
        check_name(session.namespace(), kind.label(), name)?;
        let session = session.for_name(name);
        Ok(NamedLock {
            kind,
            name: name.into(),
            key: kind.key(session.keys(), name).into(),
            session,
        })
    }

    /// A new contender for it; `tag` goes into the contender id.
    pub(crate) fn contender(&self, tag: &str) -> Contender<'_> {
        Contender::new(&self.session, self.kind, &self.key, tag)
    }
}
