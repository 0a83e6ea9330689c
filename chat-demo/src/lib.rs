//! The Edge Chat Demo on `objects`.

pub mod protocol;
