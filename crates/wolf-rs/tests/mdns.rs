//! mDNS: the host is found as `_nvstream._tcp` on its HTTP port. Multicast must never leave this
//! machine, so the test re-runs itself inside a private network namespace (user + net) with a veth
//! pair of its own.

use std::time::Duration;

use wolf_testkit::{ConfigBuilder, TestHost};

const CHILD_ENV: &str = "WOLF_MDNS_TEST_IN_NETNS";
const HOST_IP: &str = "10.213.0.1";

#[test]
fn host_is_found_by_mdns_in_a_private_network_namespace() {
    let setup = format!(
        "ip link set lo up && ip link add v0 type veth peer name v1 && ip addr add {HOST_IP}/24 dev v0 && \
         ip addr add 10.213.0.2/24 dev v1 && ip link set v0 up && ip link set v1 up && "
    );
    wolf_testkit::namespace::rerun_inside(&["--net"], &setup, "mdns_inside_namespace", CHILD_ENV);
}

/// Runs only inside the namespace made above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdns_inside_namespace() {
    if std::env::var_os(CHILD_ENV).is_none() {
        eprintln!("runs inside the namespace made by host_is_found_by_mdns_in_a_private_network_namespace");
        return;
    }
    let host = TestHost::start(ConfigBuilder::loopback().with(|c| {
        c.hostname = "mdns-host".into();
        c.bind_address = "0.0.0.0".into();
        c.network.local_ip = HOST_IP.into();
        c.network.mac = String::new();
        c.health.port = wolf_rs::config::Health::default().port;
        c.mdns.enabled = true;
    }))
    .await;
    let browser = mdns_sd::ServiceDaemon::new().expect("browser daemon");
    let rx = browser.browse(wolf_rs::mdns::SERVICE_TYPE).expect("browse");
    let want_port = host.http.port();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match rx.recv_async().await {
                Ok(mdns_sd::ServiceEvent::ServiceResolved(info)) => return Some(info),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
    .expect("the host is resolved over mDNS");
    assert_eq!(found.get_port(), want_port);
    assert!(found.get_fullname().starts_with("mdns-host."), "{}", found.get_fullname());
    assert!(found.get_addresses().iter().any(|a| a.to_string() == HOST_IP), "{:?}", found.get_addresses());
    let _ = browser.shutdown();
    host.stop().await;
}
