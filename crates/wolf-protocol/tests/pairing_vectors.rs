//! Known-answer tests of every pairing step against transcripts of real hosts (fixtures in
//! tests/fixtures/pairing, copied from public test data of Wolf and moonlight-common-rust).

use aws_lc_rs::signature::RsaKeyPair;
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use wolf_protocol::pairing::{CertInfo, PairError, PairingSession, ServerIdentity, derive_key};

fn fixture(name: &str) -> String {
    let p = format!("{}/tests/fixtures/pairing/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn vectors(host: &str) -> Value {
    serde_json::from_str(&fixture(&format!("{host}/vectors.json"))).unwrap()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("{k} missing"))
}

fn h16(v: &Value, k: &str) -> [u8; 16] {
    hex::decode(s(v, k)).unwrap().try_into().unwrap()
}

fn server(host: &str) -> ServerIdentity {
    let key = PrivatePkcs8KeyDer::from_pem_slice(fixture(&format!("{host}/server_key.pem")).as_bytes()).unwrap();
    ServerIdentity {
        cert: CertInfo::from_pem(&fixture(&format!("{host}/server_cert.pem"))).unwrap(),
        key: RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()).unwrap(),
    }
}

fn run_transcript(host: &str) {
    let v = vectors(host);
    let server = server(host);
    assert_eq!(hex::encode(&server.cert.signature), s(&v, "server_cert_signature"));
    let client = CertInfo::from_pem(&fixture(&format!("{host}/client_cert.pem"))).unwrap();
    assert_eq!(hex::encode(&client.signature), s(&v, "client_cert_signature"));

    let mut p = PairingSession::start(s(&v, "salt"), s(&v, "clientcert"))
        .unwrap()
        .with_server_randoms(h16(&v, "server_secret"), h16(&v, "server_challenge"));
    assert_eq!(p.client.der, client.der);
    p.set_pin(s(&v, "pin")).unwrap();
    let resp = p.client_challenge(&server, s(&v, "client_challenge_encrypted")).unwrap();
    assert_eq!(resp.to_lowercase(), s(&v, "challengeresponse"), "step 2 challengeresponse");
    let secret = p.server_challenge_resp(&server, s(&v, "serverchallengeresp")).unwrap();
    assert_eq!(secret.to_lowercase(), s(&v, "pairingsecret"), "step 3 pairingsecret");
    assert!(p.client_pairing_secret(s(&v, "clientpairingsecret")).unwrap(), "step 4 accepts the real client");
}

#[test]
fn aes_key_vectors() {
    let list: Vec<Value> = serde_json::from_str(&fixture("aes_key_vectors.json")).unwrap();
    assert!(!list.is_empty());
    for v in list {
        let salt: [u8; 16] = hex::decode(s(&v, "salt")).unwrap().try_into().unwrap();
        assert_eq!(hex::encode(derive_key(&salt, s(&v, "pin"))), s(&v, "aes_key"));
    }
}

#[test]
fn wolf_transcript() {
    run_transcript("wolf");
}

#[test]
fn sunshine_transcript() {
    run_transcript("sunshine");
}

#[test]
fn wrong_pin_is_refused_at_step_4() {
    let v = vectors("sunshine");
    let server = server("sunshine");
    let mut p = PairingSession::start(s(&v, "salt"), s(&v, "clientcert")).unwrap();
    p.set_pin("0000").unwrap();
    p.client_challenge(&server, s(&v, "client_challenge_encrypted")).unwrap();
    p.server_challenge_resp(&server, s(&v, "serverchallengeresp")).unwrap();
    assert!(!p.client_pairing_secret(s(&v, "clientpairingsecret")).unwrap());
}

#[test]
fn tampered_client_signature_is_refused() {
    let v = vectors("sunshine");
    let server = server("sunshine");
    let mut p = PairingSession::start(s(&v, "salt"), s(&v, "clientcert"))
        .unwrap()
        .with_server_randoms(h16(&v, "server_secret"), h16(&v, "server_challenge"));
    p.set_pin(s(&v, "pin")).unwrap();
    p.client_challenge(&server, s(&v, "client_challenge_encrypted")).unwrap();
    p.server_challenge_resp(&server, s(&v, "serverchallengeresp")).unwrap();
    let mut bad = s(&v, "clientpairingsecret").to_owned();
    let last = if bad.ends_with('0') { "1" } else { "0" };
    bad.replace_range(bad.len() - 1.., last);
    assert!(!p.client_pairing_secret(&bad).unwrap());
}

#[test]
fn out_of_order_and_malformed_steps_are_errors() {
    let v = vectors("sunshine");
    let server = server("sunshine");
    let mut p = PairingSession::start(s(&v, "salt"), s(&v, "clientcert")).unwrap();
    assert!(matches!(
        p.client_challenge(&server, s(&v, "client_challenge_encrypted")),
        Err(PairError::OutOfOrder { .. })
    ));
    p.set_pin(s(&v, "pin")).unwrap();
    assert!(matches!(p.client_pairing_secret("00"), Err(PairError::OutOfOrder { .. })));
    assert!(matches!(p.client_challenge(&server, "zz"), Err(PairError::BadHex { .. })));
    assert!(matches!(p.client_challenge(&server, "abc"), Err(PairError::BadHex { .. })));
    assert!(matches!(p.client_challenge(&server, "00112233"), Err(PairError::BadLength { .. })));
    assert!(matches!(PairingSession::start("0011", s(&v, "clientcert")), Err(PairError::BadLength { .. })));
    assert!(matches!(PairingSession::start(s(&v, "salt"), "41414141"), Err(PairError::BadCertificate(_))));
}
