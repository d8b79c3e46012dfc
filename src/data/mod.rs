//! IDX files, images, list and label files, and the batch loader.

pub mod idx;
pub mod image;
pub mod lists;
pub mod loader;
