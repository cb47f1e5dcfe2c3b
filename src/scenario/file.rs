//! Reading an input file (scenario, inventory) with a size cap: only a regular file is read, so a
//! FIFO, device, socket or directory is refused without blocking on it or reading it forever.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::ScenarioError;

/// Largest input file meshfed reads. A scenario of the largest allowed size (the bounds in
/// `docs/scenario.md`) is far below it; anything bigger is a mistake, not a scenario.
pub const MAX_INPUT_BYTES: u64 = 1024 * 1024;

/// Reads `path` as UTF-8 text: a regular file of at most [`MAX_INPUT_BYTES`]. `what` names the
/// file in messages (`scenario file`).
pub fn read_text(path: &Path, what: &str) -> Result<String, ScenarioError> {
    let refuse = |message: String| ScenarioError::whole_file(path, message);
    // The metadata is checked before opening so a FIFO is never opened; the opened file is
    // checked again (O_NONBLOCK keeps even a FIFO swapped in meanwhile from blocking the open).
    let metadata = std::fs::metadata(path).map_err(|error| refuse(format!("cannot read the {what}: {error}")))?;
    if let Some(kind) = not_regular(&metadata) {
        return Err(refuse(format!(
            "the {what} is {kind}, not a regular file: give a YAML file"
        )));
    }
    let file = File::options()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(path)
        .map_err(|error| refuse(format!("cannot read the {what}: {error}")))?;
    let metadata = file
        .metadata()
        .map_err(|error| refuse(format!("cannot read the {what}: {error}")))?;
    if let Some(kind) = not_regular(&metadata) {
        return Err(refuse(format!(
            "the {what} is {kind}, not a regular file: give a YAML file"
        )));
    }
    let too_big = || {
        refuse(format!(
            "the {what} is larger than {MAX_INPUT_BYTES} bytes (1 MiB), the most meshfed reads; \
             a scenario within every documented bound is far smaller"
        ))
    };
    if metadata.len() > MAX_INPUT_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    // One byte more than the cap tells a file that grew after the check from one that fits.
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| refuse(format!("cannot read the {what}: {error}")))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let (line, column) = line_column_after(valid);
        ScenarioError {
            file: path.to_owned(),
            line,
            column,
            message: format!(
                "the {what} is not UTF-8: invalid byte 0x{:02x} here; save it as UTF-8",
                error.as_bytes()[valid.len()]
            ),
        }
    })
}

/// What kind of file this is when it is not a regular one.
fn not_regular(metadata: &std::fs::Metadata) -> Option<&'static str> {
    let kind = metadata.file_type();
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// 1-based line and column (in characters) of the position just after `text`.
fn line_column_after(text: &[u8]) -> (u64, u64) {
    let line_start = text
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |newline| newline + 1);
    let line = 1 + text.iter().filter(|&&byte| byte == b'\n').count() as u64;
    // `text` is valid UTF-8 up to here, so counting non-continuation bytes counts characters.
    let column = 1 + text[line_start..].iter().filter(|&&byte| byte & 0xC0 != 0x80).count() as u64;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_column_after;

    #[test]
    fn position_after_text_counts_lines_and_characters() {
        assert_eq!(line_column_after(b""), (1, 1));
        assert_eq!(line_column_after(b"ab"), (1, 3));
        assert_eq!(line_column_after(b"ab\n"), (2, 1));
        assert_eq!(line_column_after("a\n\u{e9}x".as_bytes()), (2, 3));
    }
}
