//! Execution: graph rewrites ([`fuse`]), the activation memory plan (`plan`) and the CPU
//! executor ([`executor`]) behind the [`Executor`] trait other backends implement too.

mod aligned;
pub mod executor;
pub mod fuse;
pub mod plan;
mod steps;
mod warm_workers;

pub use executor::{CpuExecutor, Executor};
pub use fuse::optimize;
pub use plan::{plan, MemoryPlan, PlannedValue};

#[cfg(test)]
mod tests;
