//! Secrets at rest: the Tenant Manager's client secrets and Keycloak admin credentials are stored
//! sealed with AES-256-GCM (OpenSSL) under a key from the configuration. A sealed value reads
//! `enc:v1:<key id>:<base64 of nonce, ciphertext and tag>`; the key id is the first 8 hex digits
//! of the key's SHA-256, so a value names the key that opens it. Each value is bound to its row
//! and column (the associated data), so a sealed value copied to another row does not open.
//! Without a key, values are stored as they are; a stored value without the prefix is read as
//! it is (rows from before encryption), and re-sealed by [`super::Database::reseal_secrets`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};

use super::StorageError;

const PREFIX: &str = "enc:v1:";
const NONCE: usize = 12;
const TAG: usize = 16;

#[derive(Clone)]
struct Key {
    id: String,
    bytes: [u8; 32],
}

/// The key values are sealed with, and older keys that still open values (rotation).
#[derive(Clone, Default)]
pub struct SecretKeys {
    current: Option<Key>,
    previous: Vec<Key>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKeys")
            .field("current", &self.current.as_ref().map(|k| &k.id))
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn key(text: &str) -> Result<Key, String> {
    let bytes = STANDARD.decode(text.trim()).map_err(|_| {
        "must be 32 bytes in standard base64 (`openssl rand -base64 32`)".to_string()
    })?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
        format!(
            "must be 32 bytes in standard base64 (`openssl rand -base64 32`), got {} bytes",
            b.len()
        )
    })?;
    let digest = openssl::sha::sha256(&bytes);
    let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    Ok(Key { id, bytes })
}

impl SecretKeys {
    /// No key: values are stored as they are.
    pub fn none() -> SecretKeys {
        SecretKeys::default()
    }

    /// The current key and the decrypt-only previous keys, each 32 bytes in base64. The error
    /// names which one is wrong (never its value).
    pub fn parse(current: &str, previous: &[String]) -> Result<SecretKeys, String> {
        let current = if current.trim().is_empty() {
            None
        } else {
            Some(key(current).map_err(|e| format!("the secret key {e}"))?)
        };
        let previous = previous
            .iter()
            .filter(|p| !p.trim().is_empty())
            .enumerate()
            .map(|(i, p)| key(p).map_err(|e| format!("previous secret key {} {e}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        if current.is_none() && !previous.is_empty() {
            return Err("previous secret keys need a current secret key".into());
        }
        Ok(SecretKeys { current, previous })
    }

    pub fn is_set(&self) -> bool {
        self.current.is_some()
    }

    /// Id of the key values are sealed with.
    pub fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(|k| k.id.as_str())
    }

    /// Seal `plain` for the place `aad` names (stored as it is without a key).
    pub fn seal(&self, aad: &str, plain: &str) -> Result<String, StorageError> {
        let Some(k) = &self.current else {
            return Ok(plain.to_string());
        };
        let mut nonce = [0u8; NONCE];
        openssl::rand::rand_bytes(&mut nonce)
            .map_err(|e| StorageError::Internal(format!("random: {e}")))?;
        let mut tag = [0u8; TAG];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            &k.bytes,
            Some(&nonce),
            aad.as_bytes(),
            plain.as_bytes(),
            &mut tag,
        )
        .map_err(|e| StorageError::Internal(format!("cannot seal a secret: {e}")))?;
        let mut out = Vec::with_capacity(NONCE + ct.len() + TAG);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out.extend_from_slice(&tag);
        Ok(format!("{PREFIX}{}:{}", k.id, STANDARD.encode(out)))
    }

    /// The plain value of a stored one (a value without the prefix is plain already).
    pub fn open(&self, aad: &str, stored: &str) -> Result<String, StorageError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let (id, data) = rest
            .split_once(':')
            .ok_or_else(|| StorageError::Internal(format!("{aad}: malformed sealed value")))?;
        let k = self
            .current
            .iter()
            .chain(self.previous.iter())
            .find(|k| k.id == id)
            .ok_or_else(|| {
                StorageError::Internal(format!(
                    "{aad} is sealed with key `{id}`, which is not configured: set it as \
                     `tenant-manager.secret-key` or among `tenant-manager.previous-secret-keys`"
                ))
            })?;
        let raw = STANDARD
            .decode(data)
            .map_err(|_| StorageError::Internal(format!("{aad}: malformed sealed value")))?;
        if raw.len() < NONCE + TAG {
            return Err(StorageError::Internal(format!(
                "{aad}: malformed sealed value"
            )));
        }
        let (nonce, rest) = raw.split_at(NONCE);
        let (ct, tag) = rest.split_at(rest.len() - TAG);
        let plain = decrypt_aead(
            Cipher::aes_256_gcm(),
            &k.bytes,
            Some(nonce),
            aad.as_bytes(),
            ct,
            tag,
        )
        .map_err(|_| {
            StorageError::Internal(format!(
                "{aad}: the sealed value does not open with key `{id}` (altered or moved)"
            ))
        })?;
        String::from_utf8(plain)
            .map_err(|_| StorageError::Internal(format!("{aad}: the sealed value is not text")))
    }

    /// Whether a stored value is as it would be written now: sealed with the current key, or
    /// plain when there is no key.
    pub fn is_current(&self, stored: &str) -> bool {
        match (&self.current, stored.strip_prefix(PREFIX)) {
            (None, None) => true,
            (Some(k), Some(rest)) => rest.split_once(':').is_some_and(|(id, _)| id == k.id),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn seal_open_rotate() {
        let a = SecretKeys::parse(&b64(1), &[]).unwrap();
        let sealed = a.seal("t/acme", "s3cret").unwrap();
        assert!(sealed.starts_with("enc:v1:") && !sealed.contains("s3cret"));
        assert_ne!(a.seal("t/acme", "s3cret").unwrap(), sealed, "fresh nonce");
        assert_eq!(a.open("t/acme", &sealed).unwrap(), "s3cret");
        assert!(a.is_current(&sealed));
        // Bound to its place.
        assert!(a.open("t/other", &sealed).is_err());
        // Tampering is detected.
        let mut bad = sealed.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert!(a.open("t/acme", &bad).is_err());
        // A new key opens old values only with the old key kept as a previous one.
        let b_only = SecretKeys::parse(&b64(2), &[]).unwrap();
        let e = b_only.open("t/acme", &sealed).unwrap_err().to_string();
        assert!(e.contains("not configured"), "{e}");
        let b = SecretKeys::parse(&b64(2), &[b64(1)]).unwrap();
        assert_eq!(b.open("t/acme", &sealed).unwrap(), "s3cret");
        assert!(!b.is_current(&sealed));
        // Plain values (no key, or rows from before) read as they are.
        assert_eq!(SecretKeys::none().seal("x", "p").unwrap(), "p");
        assert_eq!(b.open("x", "plain").unwrap(), "plain");
        assert!(!b.is_current("plain") && SecretKeys::none().is_current("plain"));
    }

    #[test]
    fn keys_are_checked() {
        assert!(SecretKeys::parse("short", &[]).is_err());
        assert!(SecretKeys::parse(&STANDARD.encode([0u8; 16]), &[]).is_err());
        assert!(SecretKeys::parse("", &[b64(1)]).is_err());
        let e = SecretKeys::parse(&b64(1), &["nope".into()]).unwrap_err();
        assert!(e.contains("previous secret key 1"), "{e}");
        assert!(!SecretKeys::parse("", &[]).unwrap().is_set());
    }
}
