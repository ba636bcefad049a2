//! The id codec of KRNs in REST paths: standard base64 with padding out; on input also the
//! URL-safe alphabet, with or without padding, and percent-encoded text (`%2F`, `%2B`, `%3D`).

use std::borrow::Cow;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

use super::err::IdFlaw;

/// Standard alphabet, padding optional: input is first mapped from URL-safe to standard.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard base64 with padding.
pub(crate) fn encode(text: &str) -> String {
    STANDARD.encode(text)
}

/// Decodes an id in any accepted form back to its text.
pub(crate) fn decode(id: &str) -> Result<String, IdFlaw> {
    let unescaped = percent_decode(id)?;
    let normal: Vec<u8> = unescaped
        .iter()
        .map(|&b| match b {
            b'-' => b'+',
            b'_' => b'/',
            other => other,
        })
        .collect();
    let bytes = LENIENT.decode(&normal).map_err(|_| IdFlaw::NotBase64)?;
    String::from_utf8(bytes).map_err(|_| IdFlaw::NotUtf8)
}

/// `%XX` sequences to bytes; everything else unchanged.
fn percent_decode(s: &str) -> Result<Cow<'_, [u8]>, IdFlaw> {
    let bytes = s.as_bytes();
    if !bytes.contains(&b'%') {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|&c| hex(c));
            let lo = bytes.get(i + 2).and_then(|&c| hex(c));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(IdFlaw::BadPercent),
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(Cow::Owned(out))
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_with_padding_out() {
        assert_eq!(
            encode("krn:iam:kaa::policy/Admin_user_read"),
            "a3JuOmlhbTprYWE6OnBvbGljeS9BZG1pbl91c2VyX3JlYWQ="
        );
        assert_eq!(
            encode("krn:iam:kaa::group/Foo"),
            "a3JuOmlhbTprYWE6Omdyb3VwL0Zvbw=="
        );
    }

    #[test]
    fn every_input_alphabet() {
        // `?>?` encodes to `Pz4/` (standard) / `Pz4_` (URL-safe); `??` to `Pz8=`.
        for id in ["Pz4/", "Pz4_", "Pz4%2F", "Pz4%2f"] {
            assert_eq!(decode(id).as_deref(), Ok("?>?"), "{id}");
        }
        for id in ["Pz8=", "Pz8", "Pz8%3D", "Pz8%3d"] {
            assert_eq!(decode(id).as_deref(), Ok("??"), "{id}");
        }
        // `>>>` encodes to `Pj4+` (standard) / `Pj4-` (URL-safe).
        for id in ["Pj4+", "Pj4-", "Pj4%2B", "Pj4%2b"] {
            assert_eq!(decode(id).as_deref(), Ok(">>>"), "{id}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode("a%2"), Err(IdFlaw::BadPercent));
        assert_eq!(decode("a%zz"), Err(IdFlaw::BadPercent));
        assert_eq!(decode("%"), Err(IdFlaw::BadPercent));
        assert_eq!(decode("!!!!"), Err(IdFlaw::NotBase64));
        assert_eq!(decode("a"), Err(IdFlaw::NotBase64));
        assert_eq!(decode("Pz8=="), Err(IdFlaw::NotBase64));
        // 0xff 0xfe is not UTF-8.
        assert_eq!(decode("//4="), Err(IdFlaw::NotUtf8));
    }

    #[test]
    fn empty_id_is_empty_text() {
        assert_eq!(decode("").as_deref(), Ok(""));
    }
}
