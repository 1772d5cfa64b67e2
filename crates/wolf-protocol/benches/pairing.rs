//! Cost of each server-side pairing step and of the serverinfo XML.

use aws_lc_rs::signature::RsaKeyPair;
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use wolf_protocol::pairing::{CertInfo, PairingSession, ServerIdentity, client::ClientPairing, derive_key};
use wolf_protocol::xml;

/// An RSA-2048 key and its certificate from the pairing fixtures (`sunshine/<who>_key.pem`, ...).
fn fixture_identity(who: &str) -> (CertInfo, RsaKeyPair) {
    let read = |f: String| {
        let p = format!("{}/tests/fixtures/pairing/sunshine/{f}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    let key = PrivatePkcs8KeyDer::from_pem_slice(read(format!("{who}_key.pem")).as_bytes()).expect("key");
    let cert = CertInfo::from_pem(&read(format!("{who}_cert.pem"))).expect("cert");
    (cert, RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()).expect("RSA key"))
}

fn bench(c: &mut Criterion) {
    let (cert, key) = fixture_identity("server");
    let server = ServerIdentity { cert, key };
    let (client_cert, client_key) = fixture_identity("client");
    let salt = [7u8; 16];
    let salt_hex = hex::encode(salt);
    let cert_hex = hex::encode(client_cert.pem.as_bytes());

    c.bench_function("pair/derive_key", |b| b.iter(|| derive_key(black_box(&salt), "1234")));
    c.bench_function("pair/step1_getservercert", |b| {
        b.iter(|| PairingSession::start(black_box(&salt_hex), black_box(&cert_hex)).expect("step 1"))
    });

    // Steps 2–4 need a session in the right state; set one up per iteration outside the timing.
    let prepared = || {
        let mut s = PairingSession::start(&salt_hex, &cert_hex).expect("step 1");
        s.set_pin("1234").expect("pin");
        let cp = ClientPairing::new(&salt, "1234").expect("client");
        let challenge = cp.client_challenge().expect("challenge");
        (s, cp, challenge)
    };
    c.bench_function("pair/step2_clientchallenge", |b| {
        b.iter_batched(
            prepared,
            |(mut s, _, ch)| s.client_challenge(&server, &ch).expect("step 2"),
            criterion::BatchSize::SmallInput,
        )
    });
    let after2 = || {
        let (mut s, mut cp, ch) = prepared();
        let resp = s.client_challenge(&server, &ch).expect("step 2");
        let scr = cp.on_challenge_response(&resp, &client_cert).expect("resp");
        (s, cp, scr)
    };
    c.bench_function("pair/step3_serverchallengeresp_rsa_sign", |b| {
        b.iter_batched(
            after2,
            |(mut s, _, scr)| s.server_challenge_resp(&server, &scr).expect("step 3"),
            criterion::BatchSize::SmallInput,
        )
    });
    let after3 = || {
        let (mut s, cp, scr) = after2();
        s.server_challenge_resp(&server, &scr).expect("step 3");
        let cps = cp.client_pairing_secret(&client_key).expect("secret");
        (s, cps)
    };
    c.bench_function("pair/step4_clientpairingsecret_rsa_verify", |b| {
        b.iter_batched(
            after3,
            |(mut s, cps)| assert!(s.client_pairing_secret(&cps).expect("step 4")),
            criterion::BatchSize::SmallInput,
        )
    });

    c.bench_function("serverinfo_xml", |b| {
        b.iter(|| {
            xml::serverinfo(black_box(&xml::ServerInfo {
                hostname: "wolf-rs",
                uniqueid: "0b5f5d8e-3c5a-4b1e-9a51-2a3f0e1d2c3b",
                https_port: 47984,
                http_port: 47989,
                hevc: false,
                mac: "02:00:00:aa:bb:cc",
                local_ip: "192.168.1.10",
                gpu_type: "software",
                paired: true,
                current_game: 0,
                busy: false,
            }))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
