//! Pure protocol code: bytes and parameters in, structs and bytes out. No sockets, no clock, no tokio.

pub mod annexb;
pub mod audio;
pub mod control;
pub mod pairing;
pub mod rtsp;
pub mod video;
pub mod xml;
