//! ELF parsing for the resolver (owned by the ELF work; stub).
