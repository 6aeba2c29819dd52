//! Test support shared by every backend and by the simulator: the in-memory reference store,
//! the fault-injecting wrapper and the one conformance suite.
