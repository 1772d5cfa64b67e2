//! The GameStream PIN pairing: key derivation, AES-128-ECB, the certificates' signature bytes,
//! RSA-PKCS#1 v1.5 SHA-256, and the four HTTP steps as a state machine.

use aws_lc_rs::cipher::{AES_128, DecryptingKey, EncryptingKey, UnboundCipherKey};
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{self, RsaKeyPair};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    #[error("{field} is not valid hex")]
    BadHex { field: &'static str },
    #[error("{field} has {got} bytes; expected {expected}")]
    BadLength { field: &'static str, got: usize, expected: &'static str },
    #[error("Out of order call to {got}; the pairing expected {expected}")]
    OutOfOrder { got: &'static str, expected: &'static str },
    #[error("client certificate is not a PEM X.509 certificate: {0}")]
    BadCertificate(String),
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}

/// A 4-digit PIN as Moonlight shows it.
pub fn is_valid_pin(pin: &str) -> bool {
    pin.len() == 4 && pin.bytes().all(|b| b.is_ascii_digit())
}

pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// key = SHA-256(salt ‖ PIN)[..16]
pub fn derive_key(salt: &[u8; 16], pin: &str) -> [u8; 16] {
    let h = sha256(&[salt, pin.as_bytes()]);
    let mut k = [0u8; 16];
    k.copy_from_slice(&h[..16]);
    k
}

fn ecb_key(key: &[u8; 16]) -> Result<UnboundCipherKey, PairError> {
    UnboundCipherKey::new(&AES_128, key).map_err(|_| PairError::Crypto("AES key"))
}

/// AES-128-ECB without padding; `data` must be a multiple of 16 bytes.
pub fn aes_ecb_encrypt(key: &[u8; 16], data: &[u8]) -> Result<Vec<u8>, PairError> {
    if data.len() % 16 != 0 {
        return Err(PairError::BadLength { field: "AES input", got: data.len(), expected: "a multiple of 16" });
    }
    let k = EncryptingKey::ecb(ecb_key(key)?).map_err(|_| PairError::Crypto("AES-ECB key"))?;
    let mut buf = data.to_vec();
    k.encrypt(&mut buf).map_err(|_| PairError::Crypto("AES-ECB encrypt"))?;
    Ok(buf)
}

pub fn aes_ecb_decrypt(key: &[u8; 16], data: &[u8]) -> Result<Vec<u8>, PairError> {
    if data.len() % 16 != 0 {
        return Err(PairError::BadLength { field: "AES input", got: data.len(), expected: "a multiple of 16" });
    }
    let k = DecryptingKey::ecb(ecb_key(key)?).map_err(|_| PairError::Crypto("AES-ECB key"))?;
    let mut buf = data.to_vec();
    let out = k
        .decrypt(&mut buf, aws_lc_rs::cipher::DecryptionContext::None)
        .map_err(|_| PairError::Crypto("AES-ECB decrypt"))?;
    Ok(out.to_vec())
}

/// What pairing needs to know about an X.509 certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub pem: String,
    pub der: Vec<u8>,
    /// Raw bytes of the signature BIT STRING (what `X509_get0_signature` returns).
    pub signature: Vec<u8>,
    /// The subjectPublicKey bytes (RSAPublicKey DER for RSA).
    pub public_key: Vec<u8>,
    /// SHA-256 of the DER: how a paired client is recognised on HTTPS.
    pub fingerprint: [u8; 32],
}

impl CertInfo {
    pub fn from_pem(pem: &str) -> Result<CertInfo, PairError> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| PairError::BadCertificate(format!("PEM: {e}")))?;
        let mut info = CertInfo::from_der(der.as_ref())?;
        info.pem = pem.to_owned();
        Ok(info)
    }

    pub fn from_der(der: &[u8]) -> Result<CertInfo, PairError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| PairError::BadCertificate(format!("X.509: {e}")))?;
        Ok(CertInfo {
            pem: String::new(),
            der: der.to_vec(),
            signature: cert.signature_value.data.to_vec(),
            public_key: cert.tbs_certificate.subject_pki.subject_public_key.data.to_vec(),
            fingerprint: sha256(&[der]),
        })
    }

    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }
}

/// RSA-PKCS#1 v1.5 SHA-256.
pub fn rsa_sign(key: &RsaKeyPair, msg: &[u8]) -> Result<Vec<u8>, PairError> {
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
        .map_err(|_| PairError::Crypto("RSA sign"))?;
    Ok(sig)
}

pub fn rsa_verify(public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_key).verify(msg, sig).is_ok()
}

pub fn random16() -> Result<[u8; 16], PairError> {
    let mut b = [0u8; 16];
    SystemRandom::new().fill(&mut b).map_err(|_| PairError::Crypto("random"))?;
    Ok(b)
}

fn unhex(field: &'static str, s: &str) -> Result<Vec<u8>, PairError> {
    hex::decode(s).map_err(|_| PairError::BadHex { field })
}

fn array16(field: &'static str, b: &[u8]) -> Result<[u8; 16], PairError> {
    b.try_into().map_err(|_| PairError::BadLength { field, got: b.len(), expected: "16" })
}

/// The host's side of pairing: its certificate and key.
pub struct ServerIdentity {
    pub cert: CertInfo,
    pub key: RsaKeyPair,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Step 1 arrived; the PIN is not known yet.
    AwaitingPin,
    AwaitingClientChallenge,
    AwaitingServerChallengeResp,
    AwaitingClientPairingSecret,
    Finished,
}

impl Step {
    fn expected(self) -> &'static str {
        match self {
            Step::AwaitingPin => "the PIN",
            Step::AwaitingClientChallenge => "clientchallenge",
            Step::AwaitingServerChallengeResp => "serverchallengeresp",
            Step::AwaitingClientPairingSecret => "clientpairingsecret",
            Step::Finished => "nothing (finished)",
        }
    }
}

/// One pending pairing, from `getservercert` to `clientpairingsecret`.
#[derive(Debug)]
pub struct PairingSession {
    pub client: CertInfo,
    salt: [u8; 16],
    key: Option<[u8; 16]>,
    step: Step,
    server_secret: [u8; 16],
    server_challenge: [u8; 16],
    client_hash: Option<Vec<u8>>,
}

impl PairingSession {
    /// Step 1 (`phrase=getservercert`): `salt` is 32 hex chars, `clientcert` the hex of a PEM.
    pub fn start(salt_hex: &str, clientcert_hex: &str) -> Result<PairingSession, PairError> {
        let salt = array16("salt", &unhex("salt", salt_hex)?)?;
        let pem_bytes = unhex("clientcert", clientcert_hex)?;
        let pem = String::from_utf8(pem_bytes).map_err(|_| PairError::BadCertificate("not UTF-8".into()))?;
        let client = CertInfo::from_pem(&pem)?;
        Ok(PairingSession {
            client,
            salt,
            key: None,
            step: Step::AwaitingPin,
            server_secret: random16()?,
            server_challenge: random16()?,
            client_hash: None,
        })
    }

    /// Fix the server's secret and challenge (known-answer tests).
    pub fn with_server_randoms(mut self, secret: [u8; 16], challenge: [u8; 16]) -> Self {
        self.server_secret = secret;
        self.server_challenge = challenge;
        self
    }

    pub fn step(&self) -> Step {
        self.step
    }

    fn expect(&self, want: Step, got: &'static str) -> Result<(), PairError> {
        if self.step == want { Ok(()) } else { Err(PairError::OutOfOrder { got, expected: self.step.expected() }) }
    }

    /// The PIN arrived: derive the AES key. Step 1's reply follows.
    pub fn set_pin(&mut self, pin: &str) -> Result<(), PairError> {
        self.expect(Step::AwaitingPin, "PIN")?;
        self.key = Some(derive_key(&self.salt, pin));
        self.step = Step::AwaitingClientChallenge;
        Ok(())
    }

    fn key(&self) -> Result<[u8; 16], PairError> {
        self.key.ok_or(PairError::Crypto("no AES key before the PIN"))
    }

    /// Step 2: decrypt the client's challenge, answer
    /// `AES(H(challenge ‖ serverCert.signature ‖ serversecret) ‖ serverchallenge)`.
    pub fn client_challenge(&mut self, server: &ServerIdentity, enc_hex: &str) -> Result<String, PairError> {
        self.expect(Step::AwaitingClientChallenge, "clientchallenge")?;
        let key = self.key()?;
        let enc = unhex("clientchallenge", enc_hex)?;
        if enc.len() != 16 {
            return Err(PairError::BadLength { field: "clientchallenge", got: enc.len(), expected: "16" });
        }
        let challenge = aes_ecb_decrypt(&key, &enc)?;
        let hash = sha256(&[&challenge, &server.cert.signature, &self.server_secret]);
        let mut plain = hash.to_vec();
        plain.extend_from_slice(&self.server_challenge);
        let out = aes_ecb_encrypt(&key, &plain)?;
        self.step = Step::AwaitingServerChallengeResp;
        Ok(hex::encode_upper(out))
    }

    /// Step 3: keep the client's hash, answer `serversecret ‖ sign(serversecret)`.
    pub fn server_challenge_resp(&mut self, server: &ServerIdentity, enc_hex: &str) -> Result<String, PairError> {
        self.expect(Step::AwaitingServerChallengeResp, "serverchallengeresp")?;
        let key = self.key()?;
        let enc = unhex("serverchallengeresp", enc_hex)?;
        if enc.is_empty() || enc.len() % 16 != 0 {
            return Err(PairError::BadLength { field: "serverchallengeresp", got: enc.len(), expected: "32" });
        }
        self.client_hash = Some(aes_ecb_decrypt(&key, &enc)?);
        let sig = rsa_sign(&server.key, &self.server_secret)?;
        let mut out = self.server_secret.to_vec();
        out.extend_from_slice(&sig);
        self.step = Step::AwaitingClientPairingSecret;
        Ok(hex::encode_upper(out))
    }

    /// Step 4: the client proves it knew the PIN and holds its key. `Ok(true)` = paired.
    pub fn client_pairing_secret(&mut self, hex_in: &str) -> Result<bool, PairError> {
        self.expect(Step::AwaitingClientPairingSecret, "clientpairingsecret")?;
        let data = unhex("clientpairingsecret", hex_in)?;
        if data.len() <= 16 {
            return Err(PairError::BadLength {
                field: "clientpairingsecret",
                got: data.len(),
                expected: "16 + signature",
            });
        }
        let (secret, sig) = data.split_at(16);
        self.step = Step::Finished;
        let expected = sha256(&[&self.server_challenge, &self.client.signature, secret]);
        let hash_ok = self.client_hash.as_deref().is_some_and(|h| h.get(..32) == Some(&expected[..]));
        Ok(hash_ok && rsa_verify(&self.client.public_key, secret, sig))
    }
}

/// The client's side of the four HTTP steps, for the project's test client and benches.
pub mod client {
    use super::*;

    pub struct ClientPairing {
        pub key: [u8; 16],
        pub challenge: [u8; 16],
        pub client_secret: [u8; 16],
        server_challenge: Option<[u8; 16]>,
        server_hash: Option<Vec<u8>>,
    }

    impl ClientPairing {
        pub fn new(salt: &[u8; 16], pin: &str) -> Result<Self, PairError> {
            Ok(ClientPairing {
                key: derive_key(salt, pin),
                challenge: random16()?,
                client_secret: random16()?,
                server_challenge: None,
                server_hash: None,
            })
        }

        /// Hex for step 2's `clientchallenge`.
        pub fn client_challenge(&self) -> Result<String, PairError> {
            Ok(hex::encode(aes_ecb_encrypt(&self.key, &self.challenge)?))
        }

        /// Reads step 2's reply, returns hex for step 3's `serverchallengeresp`.
        pub fn on_challenge_response(&mut self, resp_hex: &str, client_cert: &CertInfo) -> Result<String, PairError> {
            let plain = aes_ecb_decrypt(&self.key, &unhex("challengeresponse", resp_hex)?)?;
            if plain.len() != 48 {
                return Err(PairError::BadLength { field: "challengeresponse", got: plain.len(), expected: "48" });
            }
            self.server_hash = Some(plain[..32].to_vec());
            let sc = array16("serverchallenge", &plain[32..48])?;
            self.server_challenge = Some(sc);
            let hash = sha256(&[&sc, &client_cert.signature, &self.client_secret]);
            Ok(hex::encode(aes_ecb_encrypt(&self.key, &hash)?))
        }

        /// Checks step 3's `pairingsecret` against the server certificate (the PIN and MITM check).
        pub fn verify_pairing_secret(&self, resp_hex: &str, server_cert: &CertInfo) -> Result<bool, PairError> {
            let data = unhex("pairingsecret", resp_hex)?;
            if data.len() <= 16 {
                return Ok(false);
            }
            let (secret, sig) = data.split_at(16);
            let expected = sha256(&[&self.challenge, &server_cert.signature, secret]);
            let hash_ok = self.server_hash.as_deref() == Some(&expected[..]);
            Ok(hash_ok && rsa_verify(&server_cert.public_key, secret, sig))
        }

        /// Hex for step 4's `clientpairingsecret`.
        pub fn client_pairing_secret(&self, client_key: &RsaKeyPair) -> Result<String, PairError> {
            let mut out = self.client_secret.to_vec();
            out.extend_from_slice(&rsa_sign(client_key, &self.client_secret)?);
            Ok(hex::encode(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_key_known_answer() {
        let salt: [u8; 16] = hex::decode("a0c288cfb0ea624ec3e5cc54d6ab7e38").unwrap().try_into().unwrap();
        assert_eq!(hex::encode(derive_key(&salt, "7284")), "8a0191f59f31950d5de3396901aa585d");
    }

    #[test]
    fn ecb_round_trip_and_rejects_partial_blocks() {
        let k = [7u8; 16];
        let data = [1u8; 48];
        let enc = aes_ecb_encrypt(&k, &data).unwrap();
        assert_ne!(enc, data);
        // ECB: identical blocks encrypt identically.
        assert_eq!(enc[..16], enc[16..32]);
        assert_eq!(aes_ecb_decrypt(&k, &enc).unwrap(), data);
        assert!(aes_ecb_encrypt(&k, &[0u8; 15]).is_err());
    }

    #[test]
    fn pins() {
        assert!(is_valid_pin("0123"));
        for bad in ["123", "12345", "12a4", "", "١٢٣٤"] {
            assert!(!is_valid_pin(bad), "{bad}");
        }
    }
}
