//! The prefix-list algorithm of kube-apiserver's `prefixTransformers` (WIRE-FORMAT.md §3.1), used at
//! both levels: a resource's provider list and a local provider's key list.
//!
//! Every entry whose prefix matches is tried in order; a failing entry does not stop the search; an
//! entry with an empty prefix (only identity has one) has its error dropped. The caller turns the
//! winning index into staleness (`index != 0`).

use crate::transformer::TransformError;

/// Something that sits behind a prefix in a list.
pub(crate) trait Prefixed {
    fn prefix(&self) -> &[u8];
}

/// Tries each entry of `entries` whose prefix starts `data`, in order, handing it the bytes after
/// the prefix. Returns the index of the first entry that succeeds with its result; otherwise the
/// single collected error, an aggregate of several, or `no_match` when nothing was collected.
pub(crate) fn read_first<T, R>(
    entries: &[T],
    data: &[u8],
    no_match: &str,
    mut read: impl FnMut(&T, &[u8]) -> Result<R, TransformError>,
) -> Result<(usize, R), TransformError>
where
    T: Prefixed,
{
    let mut errors = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let Some(rest) = data.strip_prefix(entry.prefix()) else {
            continue;
        };
        match read(entry, rest) {
            Ok(result) => return Ok((index, result)),
            // Identity (the only empty prefix) refuses `k8s:enc:` data; upstream drops that error
            // so that a migration config `[identity, aescbc]` still reads encrypted values.
            Err(_) if entry.prefix().is_empty() => continue,
            Err(err) => errors.push(err),
        }
    }
    Err(TransformError::reduce(errors).unwrap_or_else(|| TransformError::msg(no_match)))
}

/// The first entry whose prefix matches and that `accepts` the rest, without decrypting anything.
pub(crate) fn first_match<'a, T: Prefixed>(
    entries: &'a [T],
    data: &[u8],
    accepts: impl Fn(&T, &[u8]) -> bool,
) -> Option<(usize, &'a T, usize)> {
    entries.iter().enumerate().find_map(|(index, entry)| {
        let rest = data.strip_prefix(entry.prefix())?;
        accepts(entry, rest).then_some((index, entry, entry.prefix().len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Entry(&'static [u8], Result<&'static str, &'static str>);
    impl Prefixed for Entry {
        fn prefix(&self) -> &[u8] {
            self.0
        }
    }

    fn run(entries: &[Entry], data: &[u8]) -> Result<(usize, String), String> {
        read_first(entries, data, "no match", |e, rest| match e.1 {
            Ok(tag) => Ok(format!("{tag}:{}", String::from_utf8_lossy(rest))),
            Err(text) => Err(TransformError::msg(text)),
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn first_success_wins_and_failures_do_not_stop_the_search() {
        let entries = [
            Entry(b"a:", Err("bad a")),
            Entry(b"b:", Ok("B")),
            Entry(b"a:", Ok("A2")),
        ];
        assert_eq!(run(&entries, b"a:x"), Ok((2, "A2:x".to_string())));
        assert_eq!(run(&entries, b"b:y"), Ok((1, "B:y".to_string())));
    }

    #[test]
    fn errors_reduce_and_identity_errors_are_dropped() {
        let one = [
            Entry(b"", Err("identity says no")),
            Entry(b"a:", Err("bad a")),
        ];
        assert_eq!(run(&one, b"a:x"), Err("bad a".to_string()));
        assert_eq!(run(&one, b"zzz"), Err("no match".to_string()));
        let two = [
            Entry(b"a:", Err("e1")),
            Entry(b"a:", Err("e2")),
            Entry(b"a:", Err("e1")),
        ];
        assert_eq!(run(&two, b"a:x"), Err("[e1, e2]".to_string()));
        let same = [Entry(b"a:", Err("e1")), Entry(b"a:", Err("e1"))];
        assert_eq!(run(&same, b"a:x"), Err("e1".to_string()));
    }

    #[test]
    fn first_match_skips_entries_that_refuse() {
        let entries = [Entry(b"", Ok("id")), Entry(b"k8s:enc:a:", Ok("a"))];
        let refuse_encrypted =
            |e: &Entry, rest: &[u8]| !(e.0.is_empty() && rest.starts_with(b"k8s:enc:"));
        assert_eq!(
            first_match(&entries, b"k8s:enc:a:zz", refuse_encrypted).map(|m| m.0),
            Some(1)
        );
        assert_eq!(
            first_match(&entries, b"plain", refuse_encrypted).map(|m| m.0),
            Some(0)
        );
        assert_eq!(
            first_match(&entries[1..], b"plain", refuse_encrypted).map(|m| m.0),
            None
        );
    }
}
