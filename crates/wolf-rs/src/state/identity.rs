//! The host's identity: RSA-2048 key and self-signed SHA-256 certificate (made once, reused), and
//! the host UUID.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::RsaKeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::state::atomic::write_atomic;
use wolf_protocol::pairing::{CertInfo, ServerIdentity};

/// Key and certificate, parsed once and shared.
pub struct Identity {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_der: PrivatePkcs8KeyDer<'static>,
    pub pairing: ServerIdentity,
}

impl Identity {
    /// Parse PEM key (PKCS#8) and certificate.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Identity> {
        let key_der = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .or_err(ErrorKind::Identity, || "parsing the private key PEM")?
        {
            PrivateKeyDer::Pkcs8(k) => k,
            _ => {
                return Err(Error::new(ErrorKind::Identity, "the private key must be PKCS#8 (BEGIN PRIVATE KEY)"));
            }
        };
        let key = RsaKeyPair::from_pkcs8(key_der.secret_pkcs8_der())
            .map_err(|e| Error::new(ErrorKind::Identity, format!("the private key is not a usable RSA key: {e}")))?;
        let cert = CertInfo::from_pem(cert_pem).or_err(ErrorKind::Identity, || "parsing the certificate")?;
        let cert_der = CertificateDer::from(cert.der.clone());
        Ok(Identity { cert_pem: cert_pem.to_owned(), cert_der, key_der, pairing: ServerIdentity { cert, key } })
    }

    /// Make a new RSA-2048 key and a self-signed SHA-256 certificate; returns (key PEM, cert PEM).
    pub fn generate(common_name: &str) -> Result<(String, String)> {
        Self::certify(&Self::new_key()?, common_name)
    }

    fn new_key() -> Result<PrivatePkcs8KeyDer<'static>> {
        let key = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| Error::new(ErrorKind::Identity, "generating an RSA-2048 key"))?;
        let pkcs8 = key.as_der().map_err(|_| Error::new(ErrorKind::Identity, "encoding the RSA key as PKCS#8"))?;
        Ok(PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec()))
    }

    /// A self-signed SHA-256 certificate for an existing PKCS#8 RSA key; returns (key PEM, cert PEM).
    pub fn certify(pkcs8: &PrivatePkcs8KeyDer<'_>, common_name: &str) -> Result<(String, String)> {
        let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(pkcs8, &rcgen::PKCS_RSA_SHA256)
            .or_err(ErrorKind::Identity, || "loading the RSA key into the certificate builder")?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        let cert = params.self_signed(&signer).or_err(ErrorKind::Identity, || "self-signing the certificate")?;
        Ok((signer.serialize_pem(), cert.pem()))
    }
}

/// Where the key and certificate live, and whether they were just made.
pub struct Loaded {
    pub identity: Arc<Identity>,
    pub created: bool,
    pub key_path: PathBuf,
    pub cert_path: PathBuf,
}

/// Load the key and certificate, or make both when both are absent. One without the other, or an
/// unreadable file, is an error: regenerating would silently unpair every client. Blocking.
pub fn load_or_create(key_path: &Path, cert_path: &Path) -> Result<Loaded> {
    let started = Instant::now();
    let (key_exists, cert_exists) = (key_path.exists(), cert_path.exists());
    let created = match (key_exists, cert_exists) {
        (true, true) => false,
        (false, false) => {
            let (key_pem, cert_pem) = Identity::generate("wolf-rs")?;
            write_atomic(key_path, key_pem.as_bytes(), 0o600)?;
            write_atomic(cert_path, cert_pem.as_bytes(), 0o600)?;
            true
        }
        // Key written, certificate not (a crash between the two writes): no client can have
        // paired with a certificate that never existed, so certify the key again.
        (true, false) => {
            let key_pem = std::fs::read_to_string(key_path)
                .or_err(ErrorKind::Identity, || format!("reading {}", key_path.display()))?;
            let pkcs8 = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
                .or_err(ErrorKind::Identity, || format!("{} is not a PKCS#8 PEM key", key_path.display()))?;
            let (_, cert_pem) = Identity::certify(&pkcs8, "wolf-rs")?;
            write_atomic(cert_path, cert_pem.as_bytes(), 0o600)?;
            tracing::warn!(cert = %cert_path.display(), "certificate was missing; made a new one for the existing key");
            true
        }
        (false, true) => {
            return Err(Error::new(
                ErrorKind::Identity,
                format!(
                    "{} exists but its key {} does not; restore the key, or remove both to make a new identity (clients must pair again)",
                    cert_path.display(),
                    key_path.display()
                ),
            ));
        }
    };
    let key_pem =
        std::fs::read_to_string(key_path).or_err(ErrorKind::Identity, || format!("reading {}", key_path.display()))?;
    let cert_pem = std::fs::read_to_string(cert_path)
        .or_err(ErrorKind::Identity, || format!("reading {}", cert_path.display()))?;
    let identity = Identity::from_pem(&key_pem, &cert_pem).map_err(|e| {
        Error::new(ErrorKind::Identity, format!("{} / {}: {e}", key_path.display(), cert_path.display()))
    })?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        created,
        fingerprint = %identity.pairing.cert.fingerprint_hex(),
        "TLS certificate {} in {} ms",
        if created { "generated" } else { "loaded" },
        started.elapsed().as_millis()
    );
    Ok(Loaded { identity: Arc::new(identity), created, key_path: key_path.to_owned(), cert_path: cert_path.to_owned() })
}

/// The host UUID: the config's if set, else the one kept in `<state dir>/host_uuid` (made once).
pub fn host_uuid(configured: &str, state_dir: &Path) -> Result<uuid::Uuid> {
    if !configured.is_empty() {
        return uuid::Uuid::parse_str(configured)
            .map_err(|e| Error::with_source(ErrorKind::Config, format!("uuid {configured:?}"), e));
    }
    let path = state_dir.join("host_uuid");
    match std::fs::read_to_string(&path) {
        Ok(text) => uuid::Uuid::parse_str(text.trim()).map_err(|e| {
            Error::with_source(
                ErrorKind::Identity,
                format!("{} does not hold a UUID; fix or remove it", path.display()),
                e,
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4();
            write_atomic(&path, format!("{id}\n").as_bytes(), 0o644)?;
            Ok(id)
        }
        Err(e) => Err(Error::with_source(ErrorKind::Identity, format!("reading {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_once_then_reuses_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let (k, c) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let first = load_or_create(&k, &c).unwrap();
        assert!(first.created);
        for p in [&k, &c] {
            assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let second = load_or_create(&k, &c).unwrap();
        assert!(!second.created);
        assert_eq!(first.identity.pairing.cert.fingerprint, second.identity.pairing.cert.fingerprint);
        let x509 = x509_parser::parse_x509_certificate(&second.identity.cert_der).unwrap().1;
        assert_eq!(x509.signature_algorithm.algorithm, x509_parser::oid_registry::OID_PKCS1_SHA256WITHRSA);
        assert_eq!(
            x509.public_key()
                .parsed()
                .map(|k| match k {
                    x509_parser::public_key::PublicKey::RSA(r) => r.key_size(),
                    _ => 0,
                })
                .unwrap(),
            2048
        );
    }

    #[test]
    fn a_key_without_its_certificate_is_certified_again() {
        let dir = tempfile::tempdir().unwrap();
        let (k, c) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let first = load_or_create(&k, &c).unwrap();
        std::fs::remove_file(&c).unwrap();
        let again = load_or_create(&k, &c).unwrap();
        assert_eq!(first.identity.pairing.cert.public_key, again.identity.pairing.cert.public_key);
        std::fs::remove_file(&k).unwrap();
        assert!(load_or_create(&k, &c).is_err(), "a certificate without its key is an error");
    }

    #[test]
    fn half_an_identity_or_garbage_is_an_error_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (k, c) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        std::fs::write(&k, "garbage").unwrap();
        assert!(load_or_create(&k, &c).is_err());
        std::fs::write(&c, "garbage").unwrap();
        assert!(load_or_create(&k, &c).is_err());
        assert_eq!(std::fs::read_to_string(&k).unwrap(), "garbage");
    }

    #[test]
    fn host_uuid_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = host_uuid("", dir.path()).unwrap();
        assert_eq!(a, host_uuid("", dir.path()).unwrap());
        let fixed = "0b5f5d8e-3c5a-4b1e-9a51-2a3f0e1d2c3b";
        assert_eq!(host_uuid(fixed, dir.path()).unwrap().to_string(), fixed);
    }
}
