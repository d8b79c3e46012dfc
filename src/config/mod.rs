//! Text configuration: the shared INI reader, `.cfg` networks and `.data` files.

pub mod cfg;
pub mod data_file;
pub mod ini;
