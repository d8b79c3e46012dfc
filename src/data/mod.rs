//! Images, list and label files, and the batch loader.

pub mod image;
pub mod lists;
pub mod loader;
