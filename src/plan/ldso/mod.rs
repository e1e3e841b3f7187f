//! glibc's shared-library search rules (dl-load.c `_dl_map_object`), its ld.so.cache format,
//! and the closure of a set of ELF objects computed with them inside a sysroot.
//!
//! The closure models one process: the main executable is mapped first (its PT_INTERP is
//! already "loaded" as ld.so itself), its DT_NEEDED tree is loaded breadth-first, then every
//! other object is dlopen'ed in order. Names already loaded (by DT_NEEDED name, SONAME or path)
//! and files already loaded (same inode) are reused, exactly as ld.so reuses link maps, so the
//! result is what the loader would open, not what a naive per-file walk would find.

mod arch;
mod cache;
mod conf;
mod loader;
mod resolver;

pub use cache::{
    cache_flags, libcmp, parse_cache, write_cache, CacheEntry, CacheError, LdCache, HWCAP_EXTENSION,
};
pub use resolver::{Closure, MissingLibrary, ResolveError, ResolvedLibrary, Resolver};
