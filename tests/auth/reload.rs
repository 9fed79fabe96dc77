//! Certificates and policies changed on disk apply within 10 s.
