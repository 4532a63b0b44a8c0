//! A small, bounds-checked reader of the BTF the validator needs: BTF-defined map definitions in
//! `.maps`, and the CO-RE relocation count in `.BTF.ext`. Never panics on hostile input: every read
//! is checked and type chains are followed to a fixed depth.

const BTF_MAGIC: u16 = 0xeb9f;
const MAX_TYPES: usize = 1 << 20;
const MAX_DEPTH: usize = 32;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Why BTF could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("BTF is truncated or has out-of-range offsets")]
    Truncated,
    #[error("BTF has a bad magic number (big-endian or not BTF)")]
    BadMagic,
    #[error("BTF has an unknown type kind {0}")]
    UnknownKind(u32),
    #[error("BTF has too many types")]
    TooManyTypes,
}

/// One BTF type: its kind, name, `size_or_type` word and kind-specific tail.
#[derive(Debug, Clone, Copy)]
struct Type<'a> {
    kind: u32,
    name_off: u32,
    vlen: usize,
    size_or_type: u32,
    extra: &'a [u8],
}

/// Parsed BTF: types by id (id 0 = void) and the string table.
pub struct Btf<'a> {
    types: Vec<Type<'a>>,
    strings: &'a [u8],
}

/// A BTF-defined map's declared attributes (absent fields are `None`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MapDef {
    pub map_type: Option<u32>,
    pub key_size: Option<u32>,
    pub value_size: Option<u32>,
    pub max_entries: Option<u32>,
    pub map_flags: Option<u32>,
    pub pinning: Option<u32>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off.checked_add(4).ok_or(BtfError::Truncated)?)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Truncated)
}

impl<'a> Btf<'a> {
    /// Parses little-endian BTF.
    pub fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let magic = data.get(0..2).ok_or(BtfError::Truncated)?;
        if u16::from_le_bytes([magic[0], magic[1]]) != BTF_MAGIC {
            return Err(BtfError::BadMagic);
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let section = |off_at: usize, len_at: usize| -> Result<&'a [u8], BtfError> {
            let off = hdr_len
                .checked_add(u32_at(data, off_at)? as usize)
                .ok_or(BtfError::Truncated)?;
            let len = u32_at(data, len_at)? as usize;
            data.get(off..off.checked_add(len).ok_or(BtfError::Truncated)?)
                .ok_or(BtfError::Truncated)
        };
        let type_data = section(8, 12)?;
        let strings = section(16, 20)?;
        let mut types = vec![Type {
            kind: 0,
            name_off: 0,
            vlen: 0,
            size_or_type: 0,
            extra: &[],
        }];
        let mut pos = 0;
        while pos < type_data.len() {
            if types.len() > MAX_TYPES {
                return Err(BtfError::TooManyTypes);
            }
            let name_off = u32_at(type_data, pos)?;
            let info = u32_at(type_data, pos + 4)?;
            let size_or_type = u32_at(type_data, pos + 8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra_len = match kind {
                KIND_INT | KIND_VAR | 17 => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | 13 => 8 * vlen,
                KIND_PTR | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12
                | KIND_FLOAT | KIND_TYPE_TAG => 0,
                k => return Err(BtfError::UnknownKind(k)),
            };
            let start = pos + 12;
            let extra = type_data
                .get(start..start + extra_len)
                .ok_or(BtfError::Truncated)?;
            types.push(Type {
                kind,
                name_off,
                vlen,
                size_or_type,
                extra,
            });
            pos = start + extra_len;
        }
        Ok(Self { types, strings })
    }

    fn name(&self, off: u32) -> &'a str {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn get(&self, id: u32) -> Option<&Type<'a>> {
        self.types.get(id as usize)
    }

    /// Follows typedef/const/volatile/restrict/type-tag to the underlying type id.
    fn skip_modifiers(&self, mut id: u32) -> Option<u32> {
        for _ in 0..MAX_DEPTH {
            let t = self.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some(id),
            }
        }
        None
    }

    /// Size in bytes of a type, as the kernel computes it for map keys and values.
    fn size_of(&self, id: u32, depth: usize) -> Option<u32> {
        if depth > MAX_DEPTH {
            return None;
        }
        let id = self.skip_modifiers(id)?;
        let t = self.get(id)?;
        match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT
            | KIND_DATASEC => Some(t.size_or_type),
            KIND_PTR => Some(8),
            KIND_ARRAY => {
                let elem = u32_at(t.extra, 0).ok()?;
                let n = u32_at(t.extra, 8).ok()?;
                self.size_of(elem, depth + 1)?.checked_mul(n)
            }
            _ => None,
        }
    }

    /// The datasec named `name` as (variable name, type id of the variable's type) pairs.
    fn datasec_vars(&self, name: &str) -> Vec<(&'a str, u32)> {
        let Some(sec) = self
            .types
            .iter()
            .find(|t| t.kind == KIND_DATASEC && self.name(t.name_off) == name)
        else {
            return Vec::new();
        };
        (0..sec.vlen)
            .filter_map(|i| {
                let var_id = u32_at(sec.extra, i * 12).ok()?;
                let var = self.get(var_id).filter(|v| v.kind == KIND_VAR)?;
                Some((self.name(var.name_off), var.size_or_type))
            })
            .collect()
    }

    /// The map definitions declared in `.maps`, by variable name.
    pub fn map_defs(&self) -> Vec<(String, MapDef)> {
        self.datasec_vars(".maps")
            .into_iter()
            .map(|(name, type_id)| (name.to_owned(), self.map_def(type_id)))
            .collect()
    }

    fn map_def(&self, type_id: u32) -> MapDef {
        let mut def = MapDef::default();
        let Some(st) = self
            .skip_modifiers(type_id)
            .and_then(|id| self.get(id))
            .filter(|t| t.kind == KIND_STRUCT)
        else {
            return def;
        };
        for i in 0..st.vlen {
            let (Ok(name_off), Ok(member_type)) =
                (u32_at(st.extra, i * 12), u32_at(st.extra, i * 12 + 4))
            else {
                break;
            };
            let member = self.name(name_off);
            // `__uint(name, N)` is `int (*name)[N]`: a pointer to an array of N elements.
            let pointee = self
                .skip_modifiers(member_type)
                .and_then(|id| self.get(id))
                .filter(|t| t.kind == KIND_PTR)
                .map(|t| t.size_or_type);
            let array_len = pointee
                .and_then(|p| self.skip_modifiers(p))
                .and_then(|id| self.get(id))
                .filter(|t| t.kind == KIND_ARRAY)
                .and_then(|t| u32_at(t.extra, 8).ok());
            let pointee_size = pointee.and_then(|p| self.size_of(p, 0));
            match member {
                "type" => def.map_type = array_len,
                "max_entries" => def.max_entries = array_len,
                "map_flags" => def.map_flags = array_len,
                "pinning" => def.pinning = array_len,
                "key_size" => def.key_size = array_len,
                "value_size" => def.value_size = array_len,
                "key" => def.key_size = pointee_size,
                "value" => def.value_size = pointee_size,
                _ => {}
            }
        }
        def
    }
}

/// Number of CO-RE relocation records in a `.BTF.ext` section (0 when it has none).
pub fn core_relocation_count(ext: &[u8]) -> Result<u64, BtfError> {
    let magic = ext.get(0..2).ok_or(BtfError::Truncated)?;
    if u16::from_le_bytes([magic[0], magic[1]]) != BTF_MAGIC {
        return Err(BtfError::BadMagic);
    }
    let hdr_len = u32_at(ext, 4)? as usize;
    if hdr_len < 32 {
        return Ok(0);
    }
    let off = hdr_len
        .checked_add(u32_at(ext, 24)? as usize)
        .ok_or(BtfError::Truncated)?;
    let len = u32_at(ext, 28)? as usize;
    let sec = ext
        .get(off..off.checked_add(len).ok_or(BtfError::Truncated)?)
        .ok_or(BtfError::Truncated)?;
    if sec.is_empty() {
        return Ok(0);
    }
    let rec_size = u32_at(sec, 0)? as usize;
    if rec_size == 0 {
        return Err(BtfError::Truncated);
    }
    let mut pos = 4;
    let mut count = 0u64;
    while pos < sec.len() {
        let n = u32_at(sec, pos + 4)? as usize;
        count += n as u64;
        pos = n
            .checked_mul(rec_size)
            .and_then(|b| b.checked_add(pos + 8))
            .filter(|&p| p <= sec.len())
            .ok_or(BtfError::Truncated)?;
    }
    Ok(count)
}

/// Kernel name of a map type number (`enum bpf_map_type`).
pub fn map_type_name(t: u32) -> &'static str {
    const NAMES: &[&str] = &[
        "unspec",
        "hash",
        "array",
        "prog_array",
        "perf_event_array",
        "percpu_hash",
        "percpu_array",
        "stack_trace",
        "cgroup_array",
        "lru_hash",
        "lru_percpu_hash",
        "lpm_trie",
        "array_of_maps",
        "hash_of_maps",
        "devmap",
        "sockmap",
        "cpumap",
        "xskmap",
        "sockhash",
        "cgroup_storage",
        "reuseport_sockarray",
        "percpu_cgroup_storage",
        "queue",
        "stack",
        "sk_storage",
        "devmap_hash",
        "struct_ops",
        "ringbuf",
        "inode_storage",
        "task_storage",
        "bloom_filter",
        "user_ringbuf",
        "cgrp_storage",
        "arena",
    ];
    NAMES.get(t as usize).copied().unwrap_or("unknown")
}
