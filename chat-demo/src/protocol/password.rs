//! Room passwords: checked shapes, and argon2id hashes in the PHC string
//! form (`$argon2id$v=19$m=...,t=...,p=...$<salt>$<hash>`), with the
//! crate's default parameters (19 MiB, 2 passes, 1 lane). The room stores
//! only the hash. Hashing and verifying are deliberately slow (tens of
//! milliseconds in an optimised build): the room runs them off the async
//! workers, and every failed attempt is charged to the IP's rate budget.
//!
//! ```
//! use chat_demo::protocol::password::{hash, verify};
//!
//! let stored = hash("open sesame", [7; 16]).expect("hashes");
//! assert!(stored.starts_with("$argon2id$"));
//! assert!(verify("open sesame", &stored));
//! assert!(!verify("open sesame!", &stored));
//! ```

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use super::{ProtocolError, exceeds_chars};

/// Longest password, in characters.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Checks a password to set: 1 to [`MAX_PASSWORD_CHARS`] characters.
///
/// # Errors
///
/// [`ProtocolError::InvalidManage`] otherwise.
pub fn check(password: &str) -> Result<(), ProtocolError> {
    if password.is_empty() || exceeds_chars(password, MAX_PASSWORD_CHARS) {
        Err(ProtocolError::InvalidManage)
    } else {
        Ok(())
    }
}

/// The PHC string of `password` with `salt` (16 random bytes).
///
/// # Errors
///
/// The hasher's error text (it fails only on parameters or lengths far
/// outside ours).
pub fn hash(password: &str, salt: [u8; 16]) -> Result<String, String> {
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the stored PHC string (false for a stored
/// value that does not parse).
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_and_verify_only_the_password() {
        let a = hash("pw", [1; 16]).expect("hash");
        let b = hash("pw", [2; 16]).expect("hash");
        assert_ne!(a, b, "the salt changes the hash");
        assert!(!a.contains("pw$") && verify("pw", &a) && verify("pw", &b));
        assert!(!verify("PW", &a) && !verify("", &a));
        assert!(!verify("pw", "not a hash"));
    }

    #[test]
    fn password_shapes() {
        assert!(check("x").is_ok() && check(&"é".repeat(128)).is_ok());
        assert_eq!(check(""), Err(ProtocolError::InvalidManage));
        assert_eq!(check(&"x".repeat(129)), Err(ProtocolError::InvalidManage));
    }
}
