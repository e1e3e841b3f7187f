//! The one tar writer: hand-built ustar headers plus PAX extended headers, so every byte of
//! every header is decided here and nowhere else (tar-rs's builder fills in fields from the
//! host and its "deterministic" mode pins a 2006 mtime; neither is what a reproducible
//! artifact wants). The rootfs tarball and the combined OCI/docker archive both use it.

use std::io::{self, Read, Write};

pub const BLOCK: usize = 512;
/// ustar's `name` and `linkname` fields.
const NAME_LEN: usize = 100;
/// Name of the PAX extended header entry itself (what Python's tarfile writes too): constant,
/// so it carries no host or path information.
const PAX_NAME: &[u8] = b"././@PaxHeader";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeFlag {
    Regular,
    HardLink,
    Symlink,
    Dir,
    PaxExtended,
    /// A character device (only the harmless /dev nodes the plan allows).
    Char {
        major: u32,
        minor: u32,
    },
}

impl TypeFlag {
    fn byte(self) -> u8 {
        match self {
            TypeFlag::Regular => b'0',
            TypeFlag::HardLink => b'1',
            TypeFlag::Symlink => b'2',
            TypeFlag::Dir => b'5',
            TypeFlag::PaxExtended => b'x',
            TypeFlag::Char { .. } => b'3',
        }
    }
}

/// One archive member's metadata. Ownership is always 0:0 with empty user/group names.
pub struct Member<'a> {
    pub name: &'a [u8],
    pub link: &'a [u8],
    pub flag: TypeFlag,
    pub mode: u32,
    pub size: u64,
    pub mtime: u64,
}

/// Largest value an octal field of `width` bytes holds (width-1 digits plus a NUL).
fn octal_max(width: u32) -> u64 {
    (1u64 << (3 * (width - 1))) - 1
}

fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

/// Append one PAX record ("<len> <key>=<value>\n", where len counts the whole record).
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn ustar_block(m: &Member<'_>) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let name_len = m.name.len().min(NAME_LEN);
    h[..name_len].copy_from_slice(&m.name[..name_len]);
    put_octal(&mut h[100..108], u64::from(m.mode));
    put_octal(&mut h[108..116], 0);
    put_octal(&mut h[116..124], 0);
    put_octal(&mut h[124..136], m.size.min(octal_max(12)));
    put_octal(&mut h[136..148], m.mtime.min(octal_max(12)));
    h[156] = m.flag.byte();
    let link_len = m.link.len().min(NAME_LEN);
    h[157..157 + link_len].copy_from_slice(&m.link[..link_len]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let (major, minor) = match m.flag {
        TypeFlag::Char { major, minor } => (u64::from(major), u64::from(minor)),
        _ => (0, 0),
    };
    put_octal(&mut h[329..337], major);
    put_octal(&mut h[337..345], minor);
    // The checksum is computed with its own field as eight spaces, then stored as six octal
    // digits, NUL, space (the traditional layout every reader accepts).
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    put_octal(&mut h[148..155], sum);
    h[155] = b' ';
    h
}

/// Encode `m` as header block(s): a PAX extended header first when the name, link target,
/// size or mtime does not fit ustar's fields, then the ustar header. The member's data (if
/// any) follows, padded by the caller to a block boundary.
pub fn encode(m: &Member<'_>) -> Vec<u8> {
    let mut pax = Vec::new();
    if m.name.len() > NAME_LEN {
        pax_record(&mut pax, "path", m.name);
    }
    if m.link.len() > NAME_LEN {
        pax_record(&mut pax, "linkpath", m.link);
    }
    if m.size > octal_max(12) {
        pax_record(&mut pax, "size", m.size.to_string().as_bytes());
    }
    if m.mtime > octal_max(12) {
        pax_record(&mut pax, "mtime", m.mtime.to_string().as_bytes());
    }
    let mut out = Vec::with_capacity(BLOCK * 3);
    if !pax.is_empty() {
        let ext = Member {
            name: PAX_NAME,
            link: b"",
            flag: TypeFlag::PaxExtended,
            mode: 0o644,
            size: pax.len() as u64,
            mtime: m.mtime.min(octal_max(12)),
        };
        out.extend_from_slice(&ustar_block(&ext));
        out.extend_from_slice(&pax);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    out.extend_from_slice(&ustar_block(m));
    out
}

/// Zero bytes needed after `len` bytes of data to reach a block boundary.
pub fn padding(len: u64) -> usize {
    let rem = usize::try_from(len % BLOCK as u64).expect("a remainder below BLOCK");
    if rem == 0 {
        0
    } else {
        BLOCK - rem
    }
}

/// Write `m`'s header(s), then exactly `m.size` bytes of `data` and the padding after them.
/// A `data` that ends early is an error: the header already promised `m.size` bytes.
pub fn append(out: &mut impl Write, m: &Member<'_>, data: &mut impl Read) -> io::Result<()> {
    out.write_all(&encode(m))?;
    let copied = io::copy(&mut data.take(m.size), out)?;
    if copied != m.size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{} changed size while archived: {copied} of {} bytes",
                String::from_utf8_lossy(m.name),
                m.size
            ),
        ));
    }
    out.write_all(&[0u8; BLOCK][..padding(m.size)])
}

/// The end-of-archive marker: two zero blocks.
pub const END: [u8; 2 * BLOCK] = [0u8; 2 * BLOCK];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for n in [1usize, 5, 6, 7, 90, 95, 96, 97, 98, 990, 995, 996] {
            let value = vec![b'a'; n];
            let mut out = Vec::new();
            pax_record(&mut out, "path", &value);
            let text = std::str::from_utf8(&out).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), out.len(), "value length {n}");
        }
    }

    #[test]
    fn ustar_checksum_matches_definition() {
        let m = Member {
            name: b"usr/bin/python3",
            link: b"",
            flag: TypeFlag::Regular,
            mode: 0o755,
            size: 1234,
            mtime: 0,
        };
        let h = encode(&m);
        assert_eq!(h.len(), BLOCK);
        let mut copy = h.clone();
        copy[148..156].fill(b' ');
        let sum: u64 = copy.iter().map(|&b| u64::from(b)).sum();
        let stored = u64::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        assert_eq!(sum, stored);
    }

    #[test]
    fn long_names_get_a_pax_header() {
        let name = vec![b'x'; 150];
        let m = Member {
            name: &name,
            link: b"",
            flag: TypeFlag::Regular,
            mode: 0o644,
            size: 0,
            mtime: 0,
        };
        let h = encode(&m);
        assert_eq!(h.len(), 3 * BLOCK);
        assert_eq!(h[156], b'x');
        assert_eq!(h[2 * BLOCK + 156], b'0');
    }

    #[test]
    fn append_pads_and_refuses_short_data() {
        let m = Member {
            name: b"a",
            link: b"",
            flag: TypeFlag::Regular,
            mode: 0o644,
            size: 3,
            mtime: 0,
        };
        let mut out = Vec::new();
        append(&mut out, &m, &mut &b"abc"[..]).unwrap();
        assert_eq!(out.len(), 2 * BLOCK);
        assert_eq!(&out[BLOCK..BLOCK + 3], b"abc");
        assert!(out[BLOCK + 3..].iter().all(|&b| b == 0));
        // Data that ends before the header's size is an error, not a short member.
        let err = append(&mut Vec::new(), &m, &mut &b"ab"[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // Data that goes on past it is cut at the size (the caller's hashing reader sees the rest).
        let mut out = Vec::new();
        append(&mut out, &m, &mut &b"abcdef"[..]).unwrap();
        assert_eq!(out.len(), 2 * BLOCK);
    }
}
