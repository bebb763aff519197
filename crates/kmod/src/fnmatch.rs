//! `fnmatch(3)` with `flags == 0`, as glibc implements it in the C locale.
//!
//! libkmod matches module aliases with exactly this call: the wildcard part of
//! every `modules.alias` pattern is handed to `fnmatch(pattern, key, 0)` in
//! `index_searchwild__all` (`libkmod/libkmod-index.c`), and softdep module
//! patterns are matched the same way in `kmod_module_get_softdeps`
//! (`libkmod/libkmod-module.c`: `fnmatch(modname, mod->name, 0)`).
//!
//! With `flags == 0`:
//! * `*` matches any sequence of bytes, including `/` and a leading `.`;
//! * `?` matches exactly one byte;
//! * `[...]` matches one byte from a set: ranges (`a-f`), named classes
//!   (`[:digit:]` …), `[=c=]` / `[.c.]` for single characters, negation by a
//!   leading `!` or `^`, and a `]` directly after the opening bracket (or the
//!   negation mark) is a member, not the end;
//! * a backslash quotes the next byte, also inside brackets; a trailing
//!   backslash matches nothing;
//! * an unterminated `[` is an ordinary character (unless a member of the
//!   would-be set already matched — glibc then fails, and so do we).
//!
//! The port follows glibc's `posix/fnmatch_loop.c` branch by branch; ranges
//! compare byte values, which is the C locale's collation order. Module
//! aliases are ASCII, so the locale modprobe happens to run in does not change
//! their meaning.

/// Returns whether `text` matches the shell wildcard `pattern`, exactly as
/// glibc's `fnmatch(pattern, text, 0) == 0` does in the C locale.
#[must_use]
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    fnmatch_bytes(pattern.as_bytes(), text.as_bytes())
}

/// Byte-string variant of [`fnmatch`].
#[must_use]
pub fn fnmatch_bytes(pattern: &[u8], text: &[u8]) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    // Where to resume after the most recent `*`: (pattern index after the
    // star run, text index the star currently extends to).
    let mut star: Option<(usize, usize)> = None;

    loop {
        let step = if pi < pattern.len() {
            match pattern[pi] {
                b'*' => {
                    while pi < pattern.len() && pattern[pi] == b'*' {
                        pi += 1;
                    }
                    if pi == pattern.len() {
                        return true;
                    }
                    star = Some((pi, ti));
                    continue;
                }
                b'?' => (ti < text.len()).then_some(pi + 1),
                b'[' => match text.get(ti) {
                    None => None,
                    Some(&ch) => match bracket(pattern, pi, ch) {
                        Bracket::Match(next) => Some(next),
                        Bracket::NoMatch => None,
                        Bracket::Literal => (ch == b'[').then_some(pi + 1),
                    },
                },
                b'\\' => match pattern.get(pi + 1) {
                    // "Trailing \ loses."
                    None => return false,
                    Some(&quoted) => (text.get(ti) == Some(&quoted)).then_some(pi + 2),
                },
                literal => (text.get(ti) == Some(&literal)).then_some(pi + 1),
            }
        } else if ti == text.len() {
            return true;
        } else {
            None
        };

        match step {
            Some(next) => {
                pi = next;
                ti += 1;
            }
            None => match star {
                // Let the last star swallow one more byte and retry. Every
                // element but `*` consumes exactly one byte, so this single
                // backtrack point is as complete as glibc's recursion.
                Some((star_pi, star_ti)) if star_ti < text.len() => {
                    star = Some((star_pi, star_ti + 1));
                    pi = star_pi;
                    ti = star_ti + 1;
                }
                _ => return false,
            },
        }
    }
}

enum Bracket {
    /// The byte is in the set; matching continues at this pattern index.
    Match(usize),
    /// The byte is not in the set (or the expression is ill-formed).
    NoMatch,
    /// The `[` is unterminated and stands for itself.
    Literal,
}

const CHAR_CLASS_MAX_LENGTH: usize = 256;

/// Evaluates the bracket expression whose `[` is at `open` against `ch`: a
/// port of the `case '['` branch of glibc's `posix/fnmatch_loop.c` for a
/// locale without collation rules ("C"), where collating elements and
/// equivalence classes are single bytes and ranges compare byte values.
fn bracket(p: &[u8], open: usize, ch: u8) -> Bracket {
    let at = |i: usize| p.get(i).copied().unwrap_or(0);
    let mut i = open + 1;
    let negate = matches!(at(i), b'!' | b'^');
    if negate {
        i += 1;
    }
    let matched = |i: usize| match skip_rest(p, i) {
        Some(after) if !negate => Bracket::Match(after),
        _ => Bracket::NoMatch,
    };

    let mut c = at(i);
    i += 1;
    loop {
        // Each element either matches (return), is ill-formed (return), or
        // leaves the byte after it in `c`.
        if c == b'\\' {
            if at(i) == 0 {
                return Bracket::NoMatch;
            }
            let quoted = at(i);
            i += 1;
            match member(p, &mut i, &mut c, quoted, ch) {
                Element::Matched => return matched(i),
                Element::Invalid => return Bracket::NoMatch,
                Element::Next => {}
            }
        } else if c == b'[' && at(i) == b':' {
            let startp = i;
            let mut name = String::new();
            let mut is_class = true;
            loop {
                if name.len() == CHAR_CLASS_MAX_LENGTH {
                    return Bracket::NoMatch;
                }
                i += 1;
                let d = at(i);
                if d == b':' && at(i + 1) == b']' {
                    i += 2;
                    break;
                }
                // glibc tests `c < 'a' || c >= 'z'`: `z` ends a class name too.
                if !(b'a'..=b'y').contains(&d) {
                    // "This cannot possibly be a character class name."
                    i = startp;
                    is_class = false;
                    break;
                }
                name.push(char::from(d));
            }
            if is_class {
                match in_class(&name, ch) {
                    None => return Bracket::NoMatch, // invalid class name
                    Some(true) => return matched(i),
                    Some(false) => {
                        c = at(i);
                        i += 1;
                    }
                }
            } else {
                match member(p, &mut i, &mut c, b'[', ch) {
                    Element::Matched => return matched(i),
                    Element::Invalid => return Bracket::NoMatch,
                    Element::Next => {}
                }
            }
        } else if c == b'[' && at(i) == b'=' {
            let sym = at(i + 1);
            if sym == 0 || at(i + 2) != b'=' || at(i + 3) != b']' {
                match member(p, &mut i, &mut c, b'[', ch) {
                    Element::Matched => return matched(i),
                    Element::Invalid => return Bracket::NoMatch,
                    Element::Next => {}
                }
            } else {
                i += 4;
                if ch == sym {
                    return matched(i);
                }
                c = at(i);
                i += 1;
            }
        } else if c == 0 {
            // "[ unterminated, treat as normal character."
            return Bracket::Literal;
        } else if c == b'[' && at(i) == b'.' {
            let startp = i;
            let Some(len) = collating_symbol(p, &mut i) else {
                return Bracket::NoMatch;
            };
            let is_range = at(i) == b'-' && at(i + 1) != 0;
            if len != 1 {
                return Bracket::NoMatch;
            }
            let sym = at(startp + 1);
            if !is_range && ch == sym {
                return matched(i);
            }
            c = at(i);
            i += 1;
            match range(p, &mut i, &mut c, sym, ch) {
                Element::Matched => return matched(i),
                Element::Invalid => return Bracket::NoMatch,
                Element::Next => {}
            }
        } else {
            let value = c;
            match member(p, &mut i, &mut c, value, ch) {
                Element::Matched => return matched(i),
                Element::Invalid => return Bracket::NoMatch,
                Element::Next => {}
            }
        }

        if c == b']' {
            break;
        }
    }
    if negate { Bracket::Match(i) } else { Bracket::NoMatch }
}

enum Element {
    /// The byte is in the set; the pattern index is after the element.
    Matched,
    /// glibc returns `FNM_NOMATCH` for the whole pattern.
    Invalid,
    /// Not matched; `c` holds the byte after the element.
    Next,
}

/// glibc's `normal_bracket:` for one member byte, followed by its range
/// part if a `-` follows.
fn member(p: &[u8], i: &mut usize, c: &mut u8, value: u8, ch: u8) -> Element {
    let at = |i: usize| p.get(i).copied().unwrap_or(0);
    let is_range = at(*i) == b'-' && at(*i + 1) != 0 && at(*i + 1) != b']';
    if !is_range && value == ch {
        return Element::Matched;
    }
    *c = at(*i);
    *i += 1;
    range(p, i, c, value, ch)
}

/// The range part after a member `low`, taken when `c` is a `-` that is not
/// followed by `]`.
fn range(p: &[u8], i: &mut usize, c: &mut u8, low: u8, ch: u8) -> Element {
    let at = |i: usize| p.get(i).copied().unwrap_or(0);
    if !(*c == b'-' && at(*i) != b']') {
        return Element::Next;
    }
    let mut high = at(*i);
    *i += 1;
    if high == b'[' && at(*i) == b'.' {
        let startp = *i;
        match collating_symbol(p, i) {
            Some(1) => high = at(startp + 1),
            _ => return Element::Invalid,
        }
    } else {
        if high == b'\\' {
            high = at(*i);
            *i += 1;
        }
        if high == 0 {
            return Element::Invalid;
        }
    }
    if low <= ch && ch <= high {
        return Element::Matched;
    }
    *c = at(*i);
    *i += 1;
    Element::Next
}

/// Reads `[.sym.]` whose `.` is at `*i`; returns the symbol's length and
/// leaves `*i` after the closing `.]`, or `None` if it never closes.
fn collating_symbol(p: &[u8], i: &mut usize) -> Option<usize> {
    let at = |i: usize| p.get(i).copied().unwrap_or(0);
    let mut len = 0usize;
    loop {
        *i += 1;
        let d = at(*i);
        if d == b'.' && at(*i + 1) == b']' {
            *i += 2;
            return Some(len);
        }
        if d == 0 {
            return None;
        }
        len += 1;
    }
}

/// glibc's `matched:` — skips the rest of a set that already matched;
/// `None` where glibc gives up (`FNM_NOMATCH`).
fn skip_rest(p: &[u8], mut i: usize) -> Option<usize> {
    let at = |i: usize| p.get(i).copied().unwrap_or(0);
    loop {
        let c = at(i);
        i += 1;
        if c == b']' {
            return Some(i);
        }
        if c == 0 {
            // "[... (unterminated) loses."
            return None;
        }
        if c == b'\\' {
            if at(i) == 0 {
                return None;
            }
            i += 1;
        } else if c == b'[' && at(i) == b':' {
            let startp = i;
            let mut len = 0usize;
            loop {
                i += 1;
                let d = at(i);
                len += 1;
                if len == CHAR_CLASS_MAX_LENGTH {
                    return None;
                }
                if d == b':' && at(i + 1) == b']' {
                    break;
                }
                if !(b'a'..=b'y').contains(&d) {
                    i = startp.saturating_sub(2);
                    break;
                }
            }
            i += 2;
        } else if c == b'[' && at(i) == b'=' {
            i += 1;
            if at(i) == 0 {
                return None;
            }
            i += 1;
            if at(i) != b'=' || at(i + 1) != b']' {
                return None;
            }
            i += 2;
        } else if c == b'[' && at(i) == b'.' {
            loop {
                i += 1;
                let d = at(i);
                if d == 0 {
                    return None;
                }
                if d == b'.' && at(i + 1) == b']' {
                    break;
                }
            }
            i += 2;
        }
    }
}

/// Membership of `ch` in a POSIX class in the C locale; `None` for a name
/// that is not a class (glibc then fails the whole match).
fn in_class(name: &str, ch: u8) -> Option<bool> {
    Some(match name {
        "alnum" => ch.is_ascii_alphanumeric(),
        "alpha" => ch.is_ascii_alphabetic(),
        "blank" => ch == b' ' || ch == b'\t',
        "cntrl" => ch.is_ascii_control(),
        "digit" => ch.is_ascii_digit(),
        "graph" => ch.is_ascii_graphic(),
        "lower" => ch.is_ascii_lowercase(),
        "print" => ch.is_ascii_graphic() || ch == b' ',
        "punct" => ch.is_ascii_punctuation(),
        // C isspace: also the vertical tab, which `is_ascii_whitespace` omits.
        "space" => matches!(ch, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        "upper" => ch.is_ascii_uppercase(),
        "xdigit" => ch.is_ascii_hexdigit(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::fnmatch;

    #[track_caller]
    fn yes(p: &str, t: &str) {
        assert!(fnmatch(p, t), "{p:?} should match {t:?}");
    }

    #[track_caller]
    fn no(p: &str, t: &str) {
        assert!(!fnmatch(p, t), "{p:?} should not match {t:?}");
    }

    #[test]
    fn literals_and_question_mark() {
        yes("", "");
        no("", "a");
        yes("virtio:d00000002v00001AF4", "virtio:d00000002v00001AF4");
        no("virtio:d00000002v00001AF4", "virtio:d00000002v00001AF5");
        yes("a?c", "abc");
        no("a?c", "ac");
        no("a?c", "abbc");
    }

    #[test]
    fn star_backtracks_and_crosses_slashes_and_dots() {
        yes("*", "");
        yes("*", "anything/at.all");
        yes("virtio:d00000002v*", "virtio:d00000002v00001AF4");
        yes("pci:v*d*sv*sd*bc01sc08i02*", "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02");
        no("pci:v*d*sv*sd*bc01sc08i02*", "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc06i01");
        yes("*a*b*c", "xxaxxbxxbxxc");
        no("*a*b*c", "xxaxxbxxbxxcx");
        yes("a**b", "ab");
        yes(".*", ".hidden");
        yes("a*/b", "a/x/b");
    }

    #[test]
    fn bracket_ranges_and_negation() {
        yes("d0[0-2]", "d01");
        no("d0[0-2]", "d03");
        yes("[!a-c]", "d");
        no("[!a-c]", "b");
        yes("[^a-c]", "d");
        no("[^a-c]", "a");
        yes("[a-cx-z]", "y");
        no("[z-a]", "m"); // reversed range is empty
        yes("[a-]", "-");
        yes("[-a]", "-");
        yes("[]]", "]");
        yes("[]a]", "a");
        yes("[!]]", "x");
        no("[!]]", "]");
        // Real modules.alias entries.
        yes("usb:v13FDp3940d0[0-2]*dc*dsc*dp*ic*isc*ip*in*", "usb:v13FDp3940d0100dc00dsc00dp00ic08isc06ip50in00");
        no("usb:v1645p0007d013[0-3]dc*dsc*dp*ic*isc*ip*in*", "usb:v1645p0007d0134dc00dsc00dp00ic08isc06ip50in00");
    }

    #[test]
    fn named_classes() {
        yes("[[:digit:]]x", "7x");
        no("[[:digit:]]x", "ax");
        yes("[[:upper:][:digit:]]", "Q");
        yes("[![:xdigit:]]", "g");
        no("[![:xdigit:]]", "F");
        yes("[[:space:]]", "\u{b}");
        no("[[:nonsense:]]", "a"); // invalid class: no match at all
        yes("[[:a]", "a"); // not a class name: `[`, `:` and `a` are members
        yes("[[:a]", ":");
    }

    #[test]
    fn escapes() {
        yes("a\\*b", "a*b");
        no("a\\*b", "axb");
        yes("[\\]]", "]");
        yes("[a\\-z]", "-");
        no("[a\\-z]", "m");
        no("ab\\", "ab"); // trailing backslash loses
    }

    #[test]
    fn unterminated_brackets() {
        yes("[", "[");
        yes("[ab", "[ab");
        no("[ab", "a"); // a member matched, then the set never closes
        yes("x[", "x[");
        no("x[", "xa");
    }

    #[test]
    fn equivalence_and_collating_single_chars() {
        yes("[[=a=]]", "a");
        no("[[=a=]]", "b");
        yes("[[.a.]-c]", "b");
        no("[[.ab.]]", "a");
    }
}
