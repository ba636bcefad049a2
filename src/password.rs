//! Password hashing for users whose password this service keeps (local IAM users, tenant users
//! of the embedded run): Argon2id with its default parameters and a random salt, PHC string out.

/// The PHC string of `pw`'s Argon2id hash.
pub fn hash(pw: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("argon2: {e}"))
}
