//! etcd's recipes: [`Barrier`](crate::Barrier), [`DoubleBarrier`](crate::DoubleBarrier),
//! [`Queue`](crate::Queue).

pub(crate) mod barrier;
pub(crate) mod double_barrier;
pub(crate) mod queue;
