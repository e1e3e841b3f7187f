//! OCI image layout (stub).
