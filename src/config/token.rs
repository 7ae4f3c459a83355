//! Where a join token comes from: `--token-file FILE`, `--token-file -`
//! (standard input), the config file's `token` key, or `JUJUD_TOKEN`.
//! Never the command line: every local user reads `/proc/PID/cmdline`,
//! while `/proc/PID/environ` and a mode-0600 file are readable only by the
//! same user and root.
//!
//! Owns reading and checking token files, and the refusal of the old
//! `--token` flag. Must never put a token in an error message or a log
//! line, never read a token file that group or others can read, and never
//! read more than [`MAX_TOKEN_FILE_BYTES`].

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Longest token file (or standard input) read; a token is about 200 bytes.
/// Past it the file is refused, whatever it holds.
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The `--token-file` value that means standard input.
pub const STDIN: &str = "-";

/// The ways a token may be given, for error messages.
pub const ALTERNATIVES: &str = "--token-file FILE (mode 0600), --token-file - (standard input), \
     the JUJUD_TOKEN environment variable, or `token` in the --config file (mode 0600)";

/// Why a token could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// `--token T` was passed: refused without reading or echoing T.
    #[error(
        "--token is not accepted: a token on the command line is readable by every local \
         user (/proc/PID/cmdline). Give it with {ALTERNATIVES}"
    )]
    OnCommandLine,
    /// The file (token file, or a config file holding a token) can be read
    /// by group or others.
    #[error(
        "{} holds a join token but is readable by group or others (mode {mode:o}): \
         run `chmod 600 {}` (a token gives its holder a place in the cluster)",
        path.display(), path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("cannot read token file {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("token file {} is larger than {MAX_TOKEN_FILE_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("token file {} is empty", path.display())]
    Empty { path: PathBuf },
}

/// Reads the token from `path` (or standard input for `-`): the first line,
/// trimmed. A file must be a regular file of mode 0600 or stricter.
pub fn read_token_file(path: &Path) -> Result<String, TokenError> {
    let read_error = |error| TokenError::Read { path: path.to_owned(), error };
    let text = if path.as_os_str() == STDIN {
        // One line, so a token pasted at a terminal needs no end-of-file.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::stdin().lock().take(MAX_TOKEN_FILE_BYTES + 1),
            &mut line,
        )
        .map_err(read_error)?;
        if line.len() as u64 > MAX_TOKEN_FILE_BYTES {
            return Err(TokenError::TooLarge { path: path.to_owned() });
        }
        line
    } else {
        let file = std::fs::File::open(path).map_err(read_error)?;
        // Checked on the open file, so a swap after the check changes nothing.
        let meta = file.metadata().map_err(read_error)?;
        if !meta.is_file() {
            return Err(read_error(std::io::Error::other("not a regular file")));
        }
        check_private(path, meta.permissions().mode())?;
        read_bounded(file, path)?
    };
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(TokenError::Empty { path: path.to_owned() });
    }
    Ok(token.to_owned())
}

/// Refuses a file whose mode lets group or others read it.
pub fn check_private(path: &Path, mode: u32) -> Result<(), TokenError> {
    if mode & 0o044 != 0 {
        return Err(TokenError::TooOpen { path: path.to_owned(), mode: mode & 0o7777 });
    }
    Ok(())
}

fn read_bounded(source: impl Read, path: &Path) -> Result<String, TokenError> {
    let mut text = String::new();
    source
        .take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|error| TokenError::Read { path: path.to_owned(), error })?;
    if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(TokenError::TooLarge { path: path.to_owned() });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    fn write(dir: &Path, name: &str, mode: u32, text: &str) -> PathBuf {
        let path = dir.join(name);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_private_file_gives_its_first_line_trimmed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write(tmp.path(), "t", 0o600, "  jjd1.secret \nignored\n");
        assert_eq!(read_token_file(&path).unwrap(), "jjd1.secret");
        let path = write(tmp.path(), "r", 0o400, "jjd1.secret");
        assert_eq!(read_token_file(&path).unwrap(), "jjd1.secret");
    }

    #[test]
    fn a_file_others_can_read_is_refused_without_echoing_the_token() {
        let tmp = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604] {
            let path = write(tmp.path(), "t", mode, "jjd1.secret\n");
            let err = read_token_file(&path).unwrap_err();
            assert!(matches!(err, TokenError::TooOpen { .. }), "{mode:o}: {err:?}");
            let message = err.to_string();
            assert!(message.contains("chmod 600") && !message.contains("secret"), "{message}");
        }
    }

    #[test]
    fn empty_huge_missing_and_directory_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = write(tmp.path(), "e", 0o600, "\n  \n");
        assert!(matches!(read_token_file(&empty), Err(TokenError::Empty { .. })));
        let huge = write(tmp.path(), "h", 0o600, &"a".repeat(MAX_TOKEN_FILE_BYTES as usize + 1));
        assert!(matches!(read_token_file(&huge), Err(TokenError::TooLarge { .. })));
        assert!(matches!(read_token_file(&tmp.path().join("none")), Err(TokenError::Read { .. })));
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(read_token_file(tmp.path()), Err(TokenError::Read { .. })));
    }
}
