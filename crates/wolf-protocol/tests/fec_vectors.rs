//! Known-answer test of the video FEC parity against vectors computed by nanors itself (the
//! Reed-Solomon library Moonlight clients decode with); fixture in tests/fixtures/fec.

use serde_json::Value;

#[test]
fn parity_matches_nanors() {
    let path = format!("{}/tests/fixtures/fec/nanors_vectors.json", env!("CARGO_MANIFEST_DIR"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for c in cases {
        let ds = c["data_shards"].as_u64().unwrap() as usize;
        let ps = c["parity_shards"].as_u64().unwrap() as usize;
        let len = c["shard_len"].as_u64().unwrap() as usize;
        // The fixture's data rule: byte b of data shard i = (i*31 + b*7 + 1) mod 256.
        let mut shards: Vec<Vec<u8>> =
            (0..ds).map(|i| (0..len).map(|b| ((i * 31 + b * 7 + 1) % 256) as u8).collect()).collect();
        shards.extend((0..ps).map(|_| vec![0u8; len]));
        fec_rs::ReedSolomon::new(ds, ps).unwrap().encode(&mut shards).unwrap();
        for (j, want) in c["parity_hex"].as_array().unwrap().iter().enumerate() {
            assert_eq!(hex::encode(&shards[ds + j]), want.as_str().unwrap(), "case ({ds},{ps}) parity {j}");
        }
    }
}
