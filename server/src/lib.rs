//! Yuntiao server library (placeholder crate doc; rewritten when the modules land).
pub mod store;
