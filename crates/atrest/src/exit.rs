//! Exit codes, documented in the README so scripts and CI gates can rely on them.

/// Success. For `status`: every object of every configured resource uses its current write key.
#[allow(dead_code)]
pub const SUCCESS: u8 = 0;
/// Any error (bad input, unreachable service, failed check). Nothing was changed.
pub const FAILURE: u8 = 1;
// 2 is clap's usage error.
/// `status`: unencrypted or stale objects present (and nothing unreadable).
#[allow(dead_code)]
pub const NOT_CURRENT: u8 = 3;
/// `status`, `rewrite`, `snapshot export`: some values could not be decrypted.
#[allow(dead_code)]
pub const UNREADABLE: u8 = 4;
/// `rewrite`: some objects could not be written (etcd refused them, e.g. too large after
/// re-encryption); they are listed and every other object was handled.
pub const NOT_WRITTEN: u8 = 5;
