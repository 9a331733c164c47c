//! The synchronisation primitives, each a thin layer over the wait engine: [`Mutex`],
//! [`RwLock`], [`Semaphore`], [`Election`].

pub(crate) mod election;
pub(crate) mod mutex;
pub(crate) mod rwlock;
pub(crate) mod semaphore;
