//! The connection layer and worker pool (to be written).
