//! Python interpreter discovery and dist-info RECORD selection (stub).
