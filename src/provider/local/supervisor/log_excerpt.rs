//! What a dead child's log says about why it ended: its error lines and its last lines, quoted in
//! the error that names the child.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// A log with at most this many lines is quoted whole when its child exits.
const LOG_TAIL_LINES: usize = 20;
/// Of a longer log: at most this many of its error lines...
const LOG_ERROR_LINES: usize = 8;
/// ...and its last lines.
const LOG_LAST_LINES: usize = 12;
/// A quoted line is cut after this many characters (Envoy quotes whole configs in one line).
const LOG_LINE_CHARS: usize = 600;
/// How many bytes from the end of a log are searched for those lines.
const LOG_TAIL_BYTES: u64 = 64 * 1024;
/// The lines of the log at `path` (its last few KiB) that explain why its process ended: all of
/// them when there are at most [`LOG_TAIL_LINES`]; otherwise the first error lines and the last
/// lines, in file order, with `...` where lines were left out. Long lines are cut.
pub fn log_excerpt(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(excerpt(&String::from_utf8_lossy(&bytes)))
    };
    read().unwrap_or_else(|error| format!("(cannot read {}: {error})", path.display()))
}

/// See [`log_excerpt`].
fn excerpt(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let cut = |line: &str| match line.char_indices().nth(LOG_LINE_CHARS) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_owned(),
    };
    if lines.len() <= LOG_TAIL_LINES {
        return lines.iter().map(|line| cut(line)).collect::<Vec<_>>().join("\n");
    }
    let explains = |line: &&str| {
        let lower = line.to_ascii_lowercase();
        ["[critical]", "[error]", "error", "panicked", "fatal"]
            .iter()
            .any(|word| lower.contains(word))
    };
    let mut chosen: std::collections::BTreeSet<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| explains(line))
        .map(|(index, _)| index)
        .take(LOG_ERROR_LINES)
        .collect();
    chosen.extend(lines.len() - LOG_LAST_LINES..lines.len());
    let mut quoted = Vec::new();
    let mut previous = None;
    for index in chosen {
        if index > previous.map_or(0, |previous| previous + 1) {
            quoted.push("...".to_owned());
        }
        quoted.push(cut(lines[index]));
        previous = Some(index);
    }
    quoted.join("\n")
}

#[cfg(test)]
mod tests {
    use super::excerpt;

    #[test]
    fn a_short_log_is_quoted_whole() {
        assert_eq!(excerpt("a\nb\n"), "a\nb");
    }

    #[test]
    fn a_long_log_keeps_its_error_lines_and_its_end() {
        let mut log = vec!["[info] starting".to_owned()];
        log.push("[critical][main] error initializing configuration 'bootstrap.json': no such field".to_owned());
        log.extend((0..40).map(|n| format!("[info] backtrace frame {n}")));
        let quoted = excerpt(&log.join("\n"));
        let lines: Vec<&str> = quoted.lines().collect();
        assert_eq!(lines[0], "...");
        assert!(lines[1].contains("error initializing configuration"), "{quoted}");
        assert_eq!(lines[2], "...");
        assert_eq!(lines.last(), Some(&"[info] backtrace frame 39"));
        assert_eq!(lines.len(), 3 + 12, "{quoted}");
    }

    #[test]
    fn a_very_long_line_is_cut() {
        let quoted = excerpt(&"x".repeat(5000));
        assert_eq!(quoted.len(), 600 + 3);
    }
}
