//! Text from model files (card fields, labels, operator names) and from errors reaches the
//! terminal only through [`printable`]: a card whose label holds an escape sequence or a
//! carriage return must not rewrite the user's screen or hide a line of output.

use std::borrow::Cow;

/// `text` with every control character other than newline and tab, and every character
/// that reorders text ([`reorders`]), written as a JSON escape (`\u001b`). JSON output stays
/// valid JSON that decodes to the same text: serde_json escapes the C0 controls itself,
/// and the others, which it leaves raw, can only occur inside one of its strings.
pub fn printable(text: &str) -> Cow<'_, str> {
    escape_if(text, |c| {
        (c.is_control() && c != '\n' && c != '\t') || reorders(c)
    })
}

/// [`printable`] for text that must stay on one line (the `error:` line): newlines and
/// tabs are escaped too.
pub fn printable_line(text: &str) -> Cow<'_, str> {
    escape_if(text, |c| c.is_control() || reorders(c))
}

/// `text` cut to its first and last `most / 2` characters around a note of how many were
/// left out, when it is longer than `most`.
pub fn shortened(text: &str, most: usize) -> Cow<'_, str> {
    let chars = text.chars().count();
    if chars <= most {
        return Cow::Borrowed(text);
    }
    let keep = most / 2;
    let head: String = text.chars().take(keep).collect();
    let tail: String = text.chars().skip(chars - keep).collect();
    Cow::Owned(format!(
        "{head} [... {} characters left out ...] {tail}",
        chars - 2 * keep
    ))
}

/// Characters that reorder or break the text around them without being control
/// characters: bidirectional embeddings, overrides, isolates and marks (a label
/// `a\u{202e}gpj.exe` displays as `aexe.jpg`), and the Unicode line and paragraph separators.
fn reorders(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

fn escape_if(text: &str, escape: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(&escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escape(c) {
            // Every character escaped is below U+10000: four hex digits hold it.
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_keeps_its_ends() {
        assert_eq!(shortened("short", 10), "short");
        let long = format!("a{}z", "m".repeat(98));
        let cut = shortened(&long, 10);
        assert!(
            cut.starts_with("ammmm [... 90 characters left out ...] mmmmz"),
            "{cut}"
        );
        assert_eq!(cut.chars().filter(|&c| c == 'm').count(), 8);
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        assert!(matches!(
            printable("T-shirt/top, Ankle boot"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("a\u{1b}[2Jb\rc\u{7f}d\u{9b}e"),
            "a\\u001b[2Jb\\u000dc\\u007fd\\u009be"
        );
        assert_eq!(printable("one\n\ttwo é"), "one\n\ttwo é");
        assert_eq!(
            printable("a\u{202e}gpj.exe\u{2028}"),
            "a\\u202egpj.exe\\u2028"
        );
        assert_eq!(printable_line("one\n\ttwo"), "one\\u000a\\u0009two");
        // JSON stays JSON, and decodes to the same text.
        let value = serde_json::json!({ "label": "a\u{1b}b\nc\u{9b}d\u{202e}e" });
        let shown = printable(&value.to_string()).into_owned();
        assert_ne!(shown, value.to_string());
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&shown).unwrap(),
            value
        );
    }
}
