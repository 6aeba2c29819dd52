//! Multi-replica protocol tests on `MemStore`: convergence through hubs, chains and meshes,
//! lost, duplicated and reordered packets, mastership, concurrent names, and the restore
//! procedure with its hard cases (PROTOCOL §6.9).

mod harness;
mod restore;
mod sync;
