//! Robustness: thousands of deterministic mutations of real objects (bit flips, truncations,
//! forged section sizes/offsets and symbol values) never make the validator panic.

mod common;

use bpfship_verifier::ebpf::inspect;

/// xorshift64*: a tiny deterministic generator (fixed seed, no dependency).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    if let Some(s) = buf.get_mut(off..off + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn mutate(rng: &mut Rng, orig: &[u8]) -> Vec<u8> {
    let mut b = orig.to_vec();
    let shoff = u64::from_le_bytes(b[0x28..0x30].try_into().unwrap()) as usize;
    let shnum = u16::from_le_bytes([b[0x3c], b[0x3d]]) as usize;
    let forged = [u64::MAX, u64::MAX / 2, 1 << 40, 0xffff_fff0, 7, 0];
    match rng.below(6) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => b.truncate(rng.below(b.len())),
        2 => {
            // forge a section's offset or size (sh_offset at +0x18, sh_size at +0x20)
            let sh = shoff + 64 * rng.below(shnum);
            let field = if rng.below(2) == 0 { 0x18 } else { 0x20 };
            put_u64(&mut b, sh + field, forged[rng.below(forged.len())]);
        }
        3 => {
            // forge a random 8-byte word anywhere (symbol values/sizes, BTF header fields…)
            let off = rng.below(b.len()) & !7;
            put_u64(&mut b, off, forged[rng.below(forged.len())]);
        }
        4 => {
            // forge a 4-byte length word (BTF lengths, vlen, map definitions)
            let off = rng.below(b.len()) & !3;
            if let Some(s) = b.get_mut(off..off + 4) {
                s.copy_from_slice(&(rng.next() as u32 | 0x8000_0000).to_le_bytes());
            }
        }
        _ => {
            // shuffle section header count / string table index
            let v = rng.below(0x10000) as u16;
            let at = if rng.below(2) == 0 { 0x3c } else { 0x3e };
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    b
}

#[test]
fn thousands_of_mutations_never_panic() {
    let names = [
        "xdp_pass",
        "tracepoint",
        "multi_prog",
        "tc_section",
        "forbidden_helper",
        "nobtf_xdp",
    ];
    let mut rng = Rng(0x5eed_b9f5_1a5e_0001);
    let mut outcomes = [0usize; 2];
    for name in names {
        let Some(orig) = common::object(name) else {
            return;
        };
        for case in 0..1000 {
            let m = mutate(&mut rng, &orig);
            let r = std::panic::catch_unwind(|| inspect(&m));
            match r {
                Ok(Ok(_)) => outcomes[0] += 1,
                Ok(Err(_)) => outcomes[1] += 1,
                Err(_) => {
                    let path = std::env::temp_dir().join(format!("bpfship-panic-{name}-{case}.o"));
                    std::fs::write(&path, &m).unwrap();
                    panic!(
                        "inspect panicked on mutation {case} of {name}; input saved to {}",
                        path.display()
                    );
                }
            }
        }
    }
    eprintln!(
        "6000 mutations: {} reports, {} errors, 0 panics",
        outcomes[0], outcomes[1]
    );
    assert_eq!(outcomes.iter().sum::<usize>(), 6000);
}
