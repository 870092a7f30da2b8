//! One module per provider: the stored-byte format of each (WIRE-FORMAT.md §4–§6).
//!
//! OWNER: core-providers helper.
