//! bpfship's health-counter convention: a version may declare an array map named
//! `bpfship_health` with `u32` keys and `u64` values, key 0 counting good events and key 1 bad
//! events. A map of that name with any other shape (a per-CPU array, other sizes) is refused:
//! reading it as the convention's 8-byte value would let the kernel write past the buffer.

use crate::maps::{Array, MapShapeError};
use crate::{KernelError, ProgramFd};

/// The map name of the convention.
pub const HEALTH_MAP: &str = "bpfship_health";

/// A version's `bpfship_health` map, checked to follow the convention.
#[derive(Debug)]
pub struct HealthMap(Array<u64>);

/// A `bpfship_health` map that does not follow the convention.
#[derive(Debug, thiserror::Error)]
#[error(
    "the version's {HEALTH_MAP} map does not follow the health convention (array, u32 keys, u64 values): {0}"
)]
pub struct NotHealthMap(#[from] pub MapShapeError);

impl HealthMap {
    /// The program's health map: `None` when it declares none, an error when a map of that
    /// name has another shape.
    pub fn of(prog: &ProgramFd) -> Result<Option<Self>, KernelError> {
        match prog.map_named(HEALTH_MAP)? {
            None => Ok(None),
            Some(map) => Array::new(map)
                .map(|a| Some(HealthMap(a)))
                .map_err(|e| KernelError::HealthMap(NotHealthMap(e))),
        }
    }

    /// Good and bad events counted so far.
    pub fn counts(&self) -> Result<(u64, u64), KernelError> {
        Ok((self.0.get(0)?, self.0.get(1)?))
    }
}
