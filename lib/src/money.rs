//! Exact arithmetic on Online Boutique's `Money`.
