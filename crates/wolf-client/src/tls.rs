//! TLS towards a host, as Moonlight does it: any host certificate while pairing, the pinned one after.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::{ErrorKind, Result, ResultExt};
use crate::identity::ClientIdentity;

/// Moonlight does not verify the host certificate while pairing; after pairing it pins it.
#[derive(Debug)]
struct PinnedOrAny {
    pinned: Option<Vec<u8>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedOrAny {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match &self.pinned {
            Some(p) if p.as_slice() != end_entity.as_ref() => {
                Err(rustls::Error::General("host certificate differs from the pinned one".into()))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// TLS settings for talking to a host: present `identity` (if any), pin `server_der` (if any).
pub fn tls_config(identity: Option<&ClientIdentity>, server_der: Option<Vec<u8>>) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(PinnedOrAny { pinned: server_der, algorithms: provider.signature_verification_algorithms });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .or_err(ErrorKind::Tls, || "TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(vec![CertificateDer::from(id.cert.der.clone())], id.key_der.clone_key().into())
            .or_err(ErrorKind::Tls, || "client certificate")?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
