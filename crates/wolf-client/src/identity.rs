//! A client identity made the way Moonlight makes it, kept in a folder between runs.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::RsaKeyPair;
use rustls_pki_types::PrivatePkcs8KeyDer;
use wolf_protocol::pairing::CertInfo;

use crate::error::{Error, ErrorKind, Result, ResultExt};

/// A client certificate made the way Moonlight makes it: RSA-2048, SHA-256, self-signed, serial 0.
pub struct ClientIdentity {
    pub cert: CertInfo,
    pub key: RsaKeyPair,
    pub key_der: PrivatePkcs8KeyDer<'static>,
}

impl ClientIdentity {
    pub fn generate() -> Result<ClientIdentity> {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| Error::new(ErrorKind::Identity, "RSA keygen"))?;
        let pkcs8 = key.as_der().map_err(|_| Error::new(ErrorKind::Identity, "PKCS#8 encoding"))?;
        let key_der = PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
        let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_RSA_SHA256)
            .or_err(ErrorKind::Identity, || "loading the client key")?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "NVIDIA GameStream Client");
        params.serial_number = Some(rcgen::SerialNumber::from(vec![0u8]));
        let cert = params.self_signed(&signer).or_err(ErrorKind::Identity, || "self-signing the client cert")?;
        let info = CertInfo::from_pem(&cert.pem()).or_err(ErrorKind::Identity, || "parsing the client cert")?;
        Ok(ClientIdentity { cert: info, key, key_der })
    }

    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<ClientIdentity> {
        use rustls_pki_types::pem::PemObject;
        let key_der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .or_err(ErrorKind::Identity, || "client key PEM (PKCS#8)")?;
        let key = RsaKeyPair::from_pkcs8(key_der.secret_pkcs8_der())
            .map_err(|e| Error::new(ErrorKind::Identity, format!("client key: {e}")))?;
        let cert = CertInfo::from_pem(cert_pem).or_err(ErrorKind::Identity, || "client certificate")?;
        Ok(ClientIdentity { cert, key, key_der })
    }

    /// PKCS#8 PEM of the key.
    pub fn key_pem(&self) -> Result<String> {
        let k = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&self.key_der, &rcgen::PKCS_RSA_SHA256)
            .or_err(ErrorKind::Identity, || "encoding the client key")?;
        Ok(k.serialize_pem())
    }

    /// The identity kept in `dir` (client_key.pem, client_cert.pem), made on first use. Blocking.
    pub fn load_or_create(dir: &std::path::Path) -> Result<ClientIdentity> {
        let (k, c) = (dir.join("client_key.pem"), dir.join("client_cert.pem"));
        if k.exists() && c.exists() {
            let key = std::fs::read_to_string(&k).or_err(ErrorKind::Io, || format!("reading {}", k.display()))?;
            let cert = std::fs::read_to_string(&c).or_err(ErrorKind::Io, || format!("reading {}", c.display()))?;
            return ClientIdentity::from_pem(&key, &cert);
        }
        let id = ClientIdentity::generate()?;
        write_file(&k, id.key_pem()?.as_bytes(), 0o600)?;
        write_file(&c, id.cert.pem.as_bytes(), 0o644)?;
        Ok(id)
    }
}

/// Replace `path` with `bytes` (unix `mode`) in one rename, so a crash leaves the old file or the new.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).or_err(ErrorKind::Io, || format!("creating {}", dir.display()))?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).or_err(ErrorKind::Io, || format!("a temp file in {}", dir.display()))?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).or_err(ErrorKind::Io, || "chmod")?;
    tmp.write_all(bytes).or_err(ErrorKind::Io, || format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| Error::with_source(ErrorKind::Io, format!("renaming into {}", path.display()), e.error))?;
    Ok(())
}
