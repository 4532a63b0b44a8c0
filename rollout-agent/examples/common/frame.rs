//! The Ethernet/IPv4/UDP frame the benches feed to `BPF_PROG_TEST_RUN` (10.0.0.2, port 4242).

pub fn frame() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[12] = 0x08;
    f[14] = 0x45;
    f[23] = 17;
    f[26..30].copy_from_slice(&[10, 0, 0, 2]);
    f[34..36].copy_from_slice(&4242u16.to_be_bytes());
    f
}
