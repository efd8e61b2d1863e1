//! Signed models: an app that sets [`OpenOptions::trusted_keys`](crate::OpenOptions) opens
//! only model files signed by one of its keys.
//!
//! A signature is a small text file kept next to the model (`MODEL.sig` for `MODEL`), so
//! that the same scheme covers `.onnx` and `.student` files and signing never rewrites a
//! model:
//!
//! ```text
//! student-signature v1
//! key <the signer's ed25519 public key, 64 hex digits>
//! sha256 <SHA-256 of the model file, 64 hex digits>
//! signature <ed25519 signature, 128 hex digits>
//! ```
//!
//! The signed message is the line `student-signature v1\n` followed by the 32 bytes of the
//! file's SHA-256, so a signature made for a model cannot be replayed as anything else.
//! Keys are Ed25519 (RFC 8032) through the `ed25519-dalek` crate; a key file holds the key
//! as 64 hex digits on one line.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// The first line of a signature file, and the prefix of every signed message.
const HEADER: &str = "student-signature v1";

/// The largest signature file read, in bytes: the format's four lines fit in 300.
pub(crate) const MAX_SIGNATURE_BYTES: u64 = 4096;

/// A public key whose signatures an app accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedKey(VerifyingKey);

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedKey({})", self.to_hex())
    }
}

impl TrustedKey {
    /// Reads a public key written as 64 hex digits (surrounding whitespace is ignored).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] when the text is not 32 hex-encoded bytes, not a valid
    /// Ed25519 point, or a point of small order (a weak key: signatures that verify under it
    /// can be made without any secret).
    pub fn from_hex(text: &str) -> Result<TrustedKey, Error> {
        let bad = |reason: String| Error::InvalidOption {
            name: "trusted key",
            reason,
        };
        let bytes: [u8; 32] = unhex(text.trim())
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("expected 64 hex digits (an Ed25519 public key)".to_string()))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| bad("the 32 bytes are not a valid Ed25519 public key".to_string()))?;
        if key.is_weak() {
            return Err(bad(
                "the key is a point of small order, for which anyone can make a signature \
                 that verifies; it cannot be a key made by `student keygen`"
                    .to_string(),
            ));
        }
        Ok(TrustedKey(key))
    }

    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex(self.0.as_bytes())
    }
}

/// A private key that signs models. Kept by whoever publishes models, never shipped in an
/// app.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// The key made from 32 random bytes (take them from the operating system's generator).
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// Reads a key written as 64 hex digits by [`to_hex`](SecretKey::to_hex).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] when the text is not 32 hex-encoded bytes.
    pub fn from_hex(text: &str) -> Result<SecretKey, Error> {
        let seed: [u8; 32] = unhex(text.trim())
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| Error::InvalidOption {
                name: "secret key",
                reason: "expected 64 hex digits (an Ed25519 secret key)".to_string(),
            })?;
        Ok(SecretKey::from_seed(seed))
    }

    /// The key as 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex(self.0.as_bytes())
    }

    /// The public key that verifies this key's signatures.
    pub fn public(&self) -> TrustedKey {
        TrustedKey(self.0.verifying_key())
    }
}

/// The signature file for a model whose bytes are `model`.
pub fn sign(model: &[u8], key: &SecretKey) -> String {
    let digest = Sha256::digest(model);
    let signature = key.0.sign(&message(&digest));
    format!(
        "{HEADER}\nkey {}\nsha256 {}\nsignature {}\n",
        key.public().to_hex(),
        hex(&digest),
        hex(&signature.to_bytes())
    )
}

/// Checks that `signature` (the text of a signature file) signs `model` by one of
/// `trusted`. Returns the key that signed it.
///
/// # Errors
/// [`Error::Signature`] naming what failed: a malformed signature file, a signature for
/// other bytes, a key that is not trusted, or a signature that does not verify.
pub fn verify<'k>(
    model: &[u8],
    signature: &[u8],
    trusted: &'k [TrustedKey],
    origin: &str,
) -> Result<&'k TrustedKey, Error> {
    let fail = |reason: String| Error::Signature {
        origin: origin.to_string(),
        reason,
    };
    let parsed = parse(signature).map_err(|e| fail(format!("malformed signature file: {e}")))?;
    let digest = Sha256::digest(model);
    if digest[..] != parsed.sha256 {
        return Err(fail(
            "the signature is for other bytes (its SHA-256 differs from the model's): the \
             model was changed after it was signed, or the signature belongs to another model"
                .to_string(),
        ));
    }
    let Some(key) = trusted.iter().find(|k| k.0.as_bytes() == &parsed.key) else {
        return Err(fail(format!(
            "signed by key {}, which is not among the {} trusted key(s)",
            hex(&parsed.key),
            trusted.len()
        )));
    };
    // `verify_strict` also refuses a signature whose R is of small order.
    key.0
        .verify_strict(&message(&digest), &Signature::from_bytes(&parsed.signature))
        .map_err(|_| fail("the signature does not verify with the key it names".to_string()))?;
    Ok(key)
}

fn message(digest: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER.len() + 1 + digest.len());
    m.extend_from_slice(HEADER.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(digest);
    m
}

struct Parsed {
    key: [u8; 32],
    sha256: [u8; 32],
    signature: [u8; 64],
}

fn parse(text: &[u8]) -> Result<Parsed, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8 text".to_string())?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some(HEADER) {
        return Err(format!("the first line is not `{HEADER}`"));
    }
    let mut field = |name: &str| -> Result<Vec<u8>, String> {
        let line = lines.next().ok_or_else(|| format!("no `{name}` line"))?;
        let value = line
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| format!("expected a `{name}` line, found `{}`", brief(line)))?;
        unhex(value.trim()).ok_or_else(|| format!("the `{name}` value is not hex"))
    };
    let key = field("key")?;
    let sha256 = field("sha256")?;
    let signature = field("signature")?;
    if let Some(extra) = lines.next() {
        return Err(format!(
            "unexpected line after the signature: `{}`",
            brief(extra)
        ));
    }
    Ok(Parsed {
        key: key
            .try_into()
            .map_err(|_| "the key is not 32 bytes".to_string())?,
        sha256: sha256
            .try_into()
            .map_err(|_| "the sha256 is not 32 bytes".to_string())?,
        signature: signature
            .try_into()
            .map_err(|_| "the signature is not 64 bytes".to_string())?,
    })
}

fn brief(line: &str) -> String {
    line.chars().take(40).collect()
}

/// `bytes` as lowercase hex digits.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    // Hex digits only: `from_str_radix` alone would also take a sign.
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    #[test]
    fn a_signed_model_verifies_only_with_its_key_and_bytes() {
        let model = b"model bytes".to_vec();
        let text = sign(&model, &key(1));
        let trusted = [key(2).public(), key(1).public()];
        let by = verify(&model, text.as_bytes(), &trusted, "m").unwrap();
        assert_eq!(by, &key(1).public());

        let mut changed = model.clone();
        changed[0] ^= 1;
        let e = verify(&changed, text.as_bytes(), &trusted, "m").unwrap_err();
        assert!(e.to_string().contains("for other bytes"), "{e}");

        let e = verify(&model, text.as_bytes(), &[key(2).public()], "m").unwrap_err();
        assert!(e.to_string().contains("not among the 1 trusted"), "{e}");
    }

    #[test]
    fn a_forged_signature_line_fails_verification() {
        let model = b"model".to_vec();
        let text = sign(&model, &key(1));
        let line = text.lines().nth(3).unwrap();
        let flipped_digit = if line.ends_with('0') { '1' } else { '0' };
        let forged = text.replace(line, &format!("{}{flipped_digit}", &line[..line.len() - 1]));
        let e = verify(&model, forged.as_bytes(), &[key(1).public()], "m").unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
    }

    #[test]
    fn malformed_signature_files_say_what_is_wrong() {
        let model = b"model";
        let trusted = [key(1).public()];
        for (text, expected) in [
            (&b""[..], "first line"),
            (b"\xff\xfe", "not UTF-8"),
            (b"student-signature v1\nkey zz\n", "not hex"),
            (
                b"student-signature v1\nkey 00\nsha256 00\nsignature 00\n",
                "not 32 bytes",
            ),
            (
                b"student-signature v1\nsha256 00\n",
                "expected a `key` line",
            ),
            (b"student-signature v1\nkey +0\n", "not hex"),
            (
                b"student-signature v1\nkey 00\nsha256 00\nsignature 00\nmore\n",
                "unexpected line",
            ),
        ] {
            let e = verify(model, text, &trusted, "m").unwrap_err();
            assert!(e.to_string().contains(expected), "{e} / {expected}");
        }
    }

    #[test]
    fn keys_round_trip_through_hex() {
        let k = key(7);
        assert_eq!(
            SecretKey::from_hex(&k.to_hex()).unwrap().public(),
            k.public()
        );
        let public = k.public();
        assert_eq!(
            TrustedKey::from_hex(&format!(" {}\n", public.to_hex())).unwrap(),
            public
        );
        assert!(TrustedKey::from_hex("abc").is_err());
        assert!(SecretKey::from_hex(&"g".repeat(64)).is_err());
    }

    /// Under a key of small order a signature with R = the identity and s = 0 verifies for
    /// any message, so trusting such a key would trust every model.
    #[test]
    fn keys_of_small_order_are_refused() {
        let identity = format!("01{}", "00".repeat(31));
        let order_two = format!("ec{}7f", "ff".repeat(30));
        for weak in [identity, order_two] {
            let e = TrustedKey::from_hex(&weak).unwrap_err();
            assert!(e.to_string().contains("small order"), "{e}");
        }
    }
}
