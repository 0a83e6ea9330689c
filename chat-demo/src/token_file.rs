//! `--admin-token-file`: the admin token read from a file, so it does not
//! show in `ps` or in the process environment.

use std::io::Read;
use std::path::Path;

/// Largest token file read; a token is a short secret, not a document.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// A token read from a file. Its `Debug` does not show it.
#[derive(Clone)]
pub(crate) struct TokenFromFile(pub(crate) String);

impl std::fmt::Debug for TokenFromFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenFromFile(..)")
    }
}

/// Reads the token file, as a clap value parser: the file's whole content
/// without surrounding whitespace (so the newline an editor adds is not
/// part of it). Refused, with the reason, when the file cannot be read, is
/// over 4 KiB, is empty, or holds anything but visible ASCII (the token
/// travels in an HTTP header and a cookie).
pub(crate) fn read(path: &str) -> Result<TokenFromFile, String> {
    let file = std::fs::File::open(Path::new(path)).map_err(|e| format!("cannot read it: {e}"))?;
    let mut raw = Vec::new();
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if raw.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(format!(
            "it is larger than {MAX_TOKEN_FILE_BYTES} bytes; it should hold only the token"
        ));
    }
    let text = std::str::from_utf8(&raw).map_err(|_| "it is not UTF-8 text".to_string())?;
    let token = text.trim();
    if token.is_empty() {
        return Err("it is empty".into());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token holds spaces or characters other than visible ASCII".into());
    }
    Ok(TokenFromFile(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(content: &[u8]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, content).expect("write");
        let path = path.to_str().expect("UTF-8 path").to_owned();
        (dir, path)
    }

    #[test]
    fn the_trailing_newline_is_not_part_of_the_token() {
        let (_dir, path) = file_with(b"  s3cret-token\r\n");
        assert_eq!(read(&path).map(|t| t.0), Ok("s3cret-token".to_owned()));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let cases: [(&[u8], &str); 4] = [
            (b"\n", "it is empty"),
            (b"two words", "visible ASCII"),
            (&[0xff, 0xfe], "not UTF-8"),
            (&[b'a'; 4097], "larger than 4096 bytes"),
        ];
        for (content, reason) in cases {
            let (_dir, path) = file_with(content);
            let err = read(&path).map(|t| t.0).expect_err("refused");
            assert!(err.contains(reason), "{err}");
        }
        let err = read("/nonexistent/token")
            .map(|t| t.0)
            .expect_err("refused");
        assert!(err.starts_with("cannot read it:"), "{err}");
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let t = TokenFromFile("s3cret".into());
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
