//! Lexing helpers shared by the SQL classifiers of the database crates: the pieces of SQL
//! syntax the dialects agree on (line ends, words, doubled-quote literals). What differs — which
//! comments nest, which quotes exist, what a statement's words mean — stays in each classifier.

/// Whether `b` may continue an unquoted word (keyword, identifier, number): ASCII letters,
/// digits, `_`, `$` and any byte of a non-ASCII character, as all three dialects allow.
pub fn is_word_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The end (exclusive) of the unquoted word starting at `start`.
pub fn word_end(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|&c| !is_word_continue(c))
        .map_or(bytes.len(), |end| start + end)
}

/// The index after the end of the line holding `start`: where a `--` comment ends.
pub fn line_end(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(bytes.len(), |end| start + end + 1)
}

/// The first index of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The end (exclusive) of the literal opened by `quote` at `start`; a doubled quote stands for
/// itself, and with `backslash_escapes` a backslash escapes the next byte. `None` if not closed.
pub fn skip_quoted(
    bytes: &[u8],
    start: usize,
    quote: u8,
    backslash_escapes: bool,
) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        let b = bytes[i];
        if backslash_escapes && b == b'\\' {
            i += 2;
        } else if b == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Some(i + 1);
            }
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{find, line_end, skip_quoted, word_end};

    #[test]
    fn words_end_at_the_first_other_byte() {
        assert_eq!(word_end(b"select $1", 0), 6);
        assert_eq!(word_end(b"a$b_c9", 0), 6);
        assert_eq!(word_end("é;".as_bytes(), 0), 2);
    }

    #[test]
    fn lines_end_after_their_newline() {
        assert_eq!(line_end(b"-- x\nSELECT", 0), 5);
        assert_eq!(line_end(b"-- x", 0), 4);
    }

    #[test]
    fn doubled_and_escaped_quotes_stay_inside() {
        assert_eq!(skip_quoted(b"'it''s' x", 0, b'\'', false), Some(7));
        assert_eq!(skip_quoted(br"'a\'b' x", 0, b'\'', true), Some(6));
        assert_eq!(skip_quoted(br"'a\'b", 0, b'\'', false), Some(4));
        assert_eq!(skip_quoted(b"'open", 0, b'\'', false), None);
        assert_eq!(find(b"a */ b", b"*/"), Some(2));
    }
}
