//! The one escaper every text output uses (the run summary, `meshfed diff`, error messages,
//! validation messages): characters that can rewrite a terminal or make text read other than it
//! is are shown as escapes, so a report or scenario from a stranger prints inert.
//!
//! Escaped: control characters (C0, DEL, C1: `\n`, `\t`, `\u{1b}`, ...), the bidirectional
//! formatting characters (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069: "Trojan Source",
//! CVE-2021-42574), the line and paragraph separators U+2028 and U+2029, the invisible U+200B,
//! U+2060 and U+FEFF, and the Unicode noncharacters (U+FDD0–U+FDEF and every U+xFFFE, U+xFFFF).
//! Control characters are written as Rust's `escape_debug` writes them (the form `{:?}` uses),
//! the others as `\u{202e}`.

#![forbid(unsafe_code)]

use std::borrow::Cow;

/// Whether `c` is shown as an escape rather than as itself.
pub fn is_escaped(c: char) -> bool {
    c.is_control() || is_bidi_format(c) || is_invisible(c) || is_noncharacter(c)
}

/// `text` with every [`is_escaped`] character escaped; borrowed when there is none.
///
/// ```
/// assert_eq!(meshfed::printable::printable("bar-0"), "bar-0");
/// assert_eq!(meshfed::printable::printable("a\u{1b}[2Jb\u{202e}c\n"), "a\\u{1b}[2Jb\\u{202e}c\\n");
/// ```
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_escaped) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        push_shown(&mut shown, c);
    }
    Cow::Owned(shown)
}

/// `text` with every [`is_escaped`] character escaped except the line breaks between its lines:
/// for meshfed's own multi-line messages, whose lines quote what they are about.
pub fn printable_lines(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && is_escaped(c)) {
        return Cow::Borrowed(text);
    }
    let lines: Vec<Cow<'_, str>> = text.split('\n').map(printable).collect();
    Cow::Owned(lines.join("\n"))
}

/// A number for people at any size: whole numbers below 10^15 as they are (`12`), very large or
/// very small ones in scientific notation (`1e308`, `2.5e-7`), others as Rust writes them
/// (`0.95`). A report may hold 1e308, which `{}` writes as 309 digits.
///
/// ```
/// assert_eq!(meshfed::printable::number(1e308), "1e308");
/// assert_eq!(meshfed::printable::number(400.0), "400");
/// assert_eq!(meshfed::printable::number(0.95), "0.95");
/// ```
pub fn number(value: f64) -> String {
    const LARGE: f64 = 1e15;
    const SMALL: f64 = 1e-4;
    let magnitude = value.abs();
    if !value.is_finite() || magnitude >= LARGE || (magnitude > 0.0 && magnitude < SMALL) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

/// serde_json's pretty formatter that also writes every [`is_escaped`] character inside a string
/// as a JSON `\uXXXX` escape (serde_json escapes only U+0000–U+001F): `--format json` on a
/// terminal prints inert, and the JSON still holds the same values.
pub struct JsonFormatter(serde_json::ser::PrettyFormatter<'static>);

impl JsonFormatter {
    /// Indented by two spaces, as `serde_json::to_string_pretty`.
    pub fn pretty() -> JsonFormatter {
        JsonFormatter(serde_json::ser::PrettyFormatter::new())
    }
}

impl serde_json::ser::Formatter for JsonFormatter {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (index, c) in fragment.char_indices() {
            if is_escaped(c) {
                writer.write_all(&fragment.as_bytes()[start..index])?;
                let mut units = [0_u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
                start = index + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.begin_array(writer)
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_array(writer)
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        self.0.begin_array_value(writer, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(writer)
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.begin_object(writer)
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_object(writer)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        self.0.begin_object_key(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(writer)
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(writer)
    }
}

fn push_shown(shown: &mut String, c: char) {
    if c.is_control() {
        shown.extend(c.escape_debug());
    } else if is_escaped(c) {
        shown.extend(c.escape_unicode());
    } else {
        shown.push(c);
    }
}

/// The bidirectional formatting characters (Unicode's Bidi_Control property).
fn is_bidi_format(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Separators that break a line without being a newline, and characters that show as nothing.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{200b}' | '\u{2060}' | '\u{feff}')
}

/// Unicode's 66 noncharacters.
fn is_noncharacter(c: char) -> bool {
    matches!(c, '\u{fdd0}'..='\u{fdef}') || (u32::from(c) & 0xfffe) == 0xfffe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_is_escaped_and_ordinary_text_is_borrowed() {
        for (raw, shown) in [
            ("\u{1b}[31m", "\\u{1b}[31m"),
            ("a\tb\r\n", "a\\tb\\r\\n"),
            ("\u{7f}\u{85}\u{9b}", "\\u{7f}\\u{85}\\u{9b}"),
            (
                "\u{202e}\u{2066}\u{2069}\u{200e}\u{200f}\u{61c}",
                "\\u{202e}\\u{2066}\\u{2069}\\u{200e}\\u{200f}\\u{61c}",
            ),
            ("x\u{2028}y\u{2029}", "x\\u{2028}y\\u{2029}"),
            (
                "\u{fdd0}\u{fffe}\u{1ffff}\u{10ffff}",
                "\\u{fdd0}\\u{fffe}\\u{1ffff}\\u{10ffff}",
            ),
            ("\u{200b}\u{2060}\u{feff}", "\\u{200b}\\u{2060}\\u{feff}"),
        ] {
            assert_eq!(printable(raw), shown, "{raw:?}");
        }
        for ordinary in ["bar-7f9c", "héllo wörld", "日本語", "emoji 🙂", "back\\slash"] {
            assert!(matches!(printable(ordinary), Cow::Borrowed(_)), "{ordinary}");
        }
    }

    #[test]
    fn control_characters_are_escaped_as_debug_formatting_escapes_them() {
        for c in ['\0', '\u{7}', '\u{1b}', '\n', '\u{9b}'] {
            let debug = format!("{:?}", c.to_string());
            assert_eq!(printable(&c.to_string()), debug.trim_matches('"'));
        }
    }

    #[test]
    fn numbers_of_any_size_stay_short() {
        for (value, shown) in [
            (1e308, "1e308"),
            (-1.7976931348623157e308, "-1.7976931348623157e308"),
            (123456789012345.0, "123456789012345"),
            (1e15, "1e15"),
            (0.5, "0.5"),
            (0.0, "0"),
            (5e-324, "5e-324"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(number(value), shown);
        }
    }

    #[test]
    fn json_escapes_what_the_text_escaper_escapes_and_keeps_the_value() {
        let value = serde_json::json!({ "pod": "a\u{1b}[2J\u{202e}b\u{7f}\u{10fffe}é" });
        let mut json = Vec::new();
        let mut serializer = serde_json::Serializer::with_formatter(&mut json, JsonFormatter::pretty());
        serde::Serialize::serialize(&value, &mut serializer).unwrap();
        let json = String::from_utf8(json).unwrap();
        assert_eq!(json, "{\n  \"pod\": \"a\\u001b[2J\\u202eb\\u007f\\udbff\\udffeé\"\n}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&json).unwrap(), value);
    }

    #[test]
    fn printable_lines_keeps_line_breaks_only() {
        assert_eq!(printable_lines("one\ntwo\u{1b}\r"), "one\ntwo\\u{1b}\\r");
    }
}
