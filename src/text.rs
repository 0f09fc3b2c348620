//! Text from the network made safe to show: control and invisible format characters become visible escapes.
//!
//! Names, hosts and error messages come from other peers and from the index. Printed raw, an
//! ESC sequence would drive the terminal, a newline would forge a line of output, and a
//! right-to-left override (U+202E) would make `\u{202e}gnp.exe` read as "exe.png". Everything
//! from the network goes through [`Escaped`] (or [`escape`]) on its way to a terminal; JSON
//! output needs nothing more, as serde_json escapes control characters itself.

use std::borrow::Cow;
use std::fmt;

/// Whether `c` must not reach a terminal as it is: a control character (C0, DEL, C1) or an
/// invisible formatting character: bidirectional marks, embeddings, overrides and isolates,
/// zero-width characters, invisible operators, the byte order mark, the Mongolian vowel
/// separator, interlinear annotation marks, and the other Unicode "Cf" characters that
/// change how text around them is shown.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}'                  // soft hyphen
            | '\u{061c}'                // Arabic letter mark
            | '\u{115f}' | '\u{1160}'   // Hangul fillers
            | '\u{180e}'                // Mongolian vowel separator
            | '\u{200b}'..='\u{200f}'   // zero-width space, joiners, LRM, RLM
            | '\u{2028}'..='\u{202e}'   // line/paragraph separators, embeddings, overrides
            | '\u{2060}'..='\u{206f}'   // word joiner, invisible operators, isolates, deprecated
            | '\u{3164}'                // Hangul filler
            | '\u{fe00}'..='\u{fe0f}'   // variation selectors
            | '\u{feff}'                // byte order mark, zero-width no-break space
            | '\u{ffa0}'                // halfwidth Hangul filler
            | '\u{fff9}'..='\u{fffb}'   // interlinear annotation
            | '\u{e0000}'..='\u{e007f}' // tags
        )
}

/// Shows a string with every [`is_hidden`] character and backslash escaped: `\n`, `\r`, `\t`,
/// `\\`, `\x1b` for the other ASCII controls, `\u{202e}` for the rest.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if !(c == '\\' || is_hidden(c)) {
                continue;
            }
            f.write_str(&s[start..i])?;
            start = i + c.len_utf8();
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if (c as u32) < 0x80 => write!(f, "\\x{:02x}", c as u32)?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
        }
        f.write_str(&s[start..])
    }
}

/// [`Escaped`] as a string, borrowed when nothing needed escaping.
pub fn escape(s: &str) -> Cow<'_, str> {
    if s.chars().any(|c| c == '\\' || is_hidden(c)) {
        Cow::Owned(Escaped(s).to_string())
    } else {
        Cow::Borrowed(s)
    }
}

/// JSON text with every [`is_hidden`] character that serde_json leaves as it is (DEL, C1
/// controls, invisible formatting characters) written as a `\uXXXX` escape: the same JSON
/// value, safe to print. Outside strings JSON has only ASCII, so every such character is
/// inside one; the ASCII controls are escaped inside strings already, and outside them are
/// the pretty-printer's line breaks.
pub fn json_safe(json: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| is_hidden(c) && u32::from(c) >= 0x20;
    if !json.chars().any(unsafe_char) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unsafe_char(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{:04x}", u));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A writer for log lines: each write is one formatted event ending in a newline; everything
/// before that newline is escaped, so a name or message from the network cannot forge a log
/// line or drive the terminal.
pub struct EscapingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (&text[..], ""),
        };
        let line = format!("{}{end}", Escaped(body));
        self.0.write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// An error and its causes on one line, as `{:#}` prints an `anyhow::Error` ("a: b: c").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        // Many errors quote their cause already: say each thing once.
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_invisible_characters_become_visible() {
        assert_eq!(escape("plain name.txt"), "plain name.txt");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(escape("a\x1b[31mred"), "a\\x1b[31mred");
        assert_eq!(escape("x\ny\r\tz"), "x\\ny\\r\\tz");
        assert_eq!(escape("\u{202e}gnp.exe"), "\\u{202e}gnp.exe");
        assert_eq!(
            escape("a\u{200b}b\u{2066}c\u{feff}"),
            "a\\u{200b}b\\u{2066}c\\u{feff}"
        );
        assert_eq!(escape("\u{85}\u{9b}"), "\\u{85}\\u{9b}");
        assert_eq!(escape("\x7f"), "\\x7f");
        // A backslash is escaped too, so an escape in the output always came from us.
        assert_eq!(escape("\\x1b"), "\\\\x1b");
        assert_eq!(escape("Ünïcödé 名前 🎵"), "Ünïcödé 名前 🎵");
    }

    #[test]
    fn json_stays_the_same_value_without_invisible_characters() {
        let v = serde_json::json!({"name": "\u{202e}gnp.exe\u{7f}\u{e0041}\n"});
        let text = serde_json::to_string(&v).unwrap();
        let safe = json_safe(&text);
        assert!(!safe.chars().any(is_hidden), "{safe}");
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        assert!(json_safe(&pretty).contains('\n'), "line breaks kept");
        assert_eq!(safe, r#"{"name":"\u202egnp.exe\u007f\udb40\udc41\n"}"#);
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn a_log_line_keeps_only_its_final_newline() {
        let mut out = Vec::new();
        let mut w = EscapingWriter(&mut out);
        std::io::Write::write_all(&mut w, b"WARN name=\"a\nFAKE LINE\x1b[2J\"\n").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "WARN name=\"a\\nFAKE LINE\\x1b[2J\"\n"
        );
    }
}
