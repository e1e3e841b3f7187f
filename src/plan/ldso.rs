//! glibc's library search rules and ld.so.cache (owned by the ELF work; stub).
