//! Layer unpacking on arbitrary bytes under each layer media type (the first byte picks it):
//! gzip and tar from a hostile registry never panic, and what unpacks is one plain file name
//! (no directory part, never `..`) with at most `MAX_CONTENT_BYTES` of content.
#![no_main]

use bpfship_registry::artifact::{MAX_CONTENT_BYTES, unpack_layer};
use bpfship_registry::manifest::{DOCKER_LAYER_TAR_GZIP, OCI_LAYER_TAR, OCI_LAYER_TAR_GZIP, WASM_LAYER};
use libfuzzer_sys::fuzz_target;

const MEDIA_TYPES: [&str; 5] = [
    OCI_LAYER_TAR_GZIP,
    DOCKER_LAYER_TAR_GZIP,
    OCI_LAYER_TAR,
    WASM_LAYER,
    "application/octet-stream",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, layer)) = data.split_first() else {
        return;
    };
    let media_type = MEDIA_TYPES[usize::from(pick) % MEDIA_TYPES.len()];
    if let Ok((name, content)) = unpack_layer(media_type, layer) {
        assert!(!name.is_empty() && name != ".." && !name.contains('/'), "{name:?}");
        assert!(content.len() as u64 <= MAX_CONTENT_BYTES);
    }
});
