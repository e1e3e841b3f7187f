//! Per-architecture facts glibc's loader and ldconfig build in: ELF machine numbers, the
//! Debian multiarch triplets, `$PLATFORM` names and the x86-64 glibc-hwcaps levels.

use crate::plan::elf::ElfClass;

pub(super) const EM_386: u16 = 3;
pub(super) const EM_SPARCV9: u16 = 43;
pub(super) const EM_PPC: u16 = 20;
pub(super) const EM_PPC64: u16 = 21;
pub(super) const EM_S390: u16 = 22;
pub(super) const EM_ARM: u16 = 40;
pub(super) const EM_X86_64: u16 = 62;
pub(super) const EM_AARCH64: u16 = 183;
pub(super) const EM_RISCV: u16 = 243;
pub(super) const EM_LOONGARCH: u16 = 258;

pub(super) fn big_endian_machine(machine: u16) -> bool {
    matches!(machine, EM_S390 | EM_SPARCV9 | EM_PPC)
}

pub(super) fn multiarch_triplet(class: ElfClass, machine: u16) -> Option<&'static str> {
    Some(match (class, machine) {
        (ElfClass::Elf64, EM_X86_64) => "x86_64-linux-gnu",
        (ElfClass::Elf32, EM_X86_64) => "x86_64-linux-gnux32",
        (ElfClass::Elf32, EM_386) => "i386-linux-gnu",
        (ElfClass::Elf64, EM_AARCH64) => "aarch64-linux-gnu",
        (ElfClass::Elf32, EM_ARM) => "arm-linux-gnueabihf",
        (ElfClass::Elf64, EM_PPC64) => "powerpc64le-linux-gnu",
        (ElfClass::Elf64, EM_S390) => "s390x-linux-gnu",
        (ElfClass::Elf64, EM_RISCV) => "riscv64-linux-gnu",
        (ElfClass::Elf64, EM_LOONGARCH) => "loongarch64-linux-gnu",
        _ => return None,
    })
}

pub(super) fn platform_name(class: ElfClass, machine: u16) -> &'static str {
    match (class, machine) {
        (ElfClass::Elf64, EM_X86_64) => "x86_64",
        (_, EM_386) => "i686",
        (_, EM_AARCH64) => "aarch64",
        (_, EM_ARM) => "v7l",
        (_, EM_PPC64) => "power9",
        (_, EM_S390) => "z13",
        (_, EM_RISCV) => "riscv64",
        _ => "",
    }
}

/// glibc-hwcaps subdirectories glibc 2.33+ knows for x86-64, in priority order.
pub(super) const X86_64_HWCAPS: [&str; 3] = ["x86-64-v4", "x86-64-v3", "x86-64-v2"];
