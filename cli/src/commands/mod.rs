//! One module per command.

pub mod agent;
pub mod blob;
pub mod inspect;
pub mod keys;
pub mod pull;
pub mod push;
pub mod sign;
pub mod validate;
pub mod verify;
