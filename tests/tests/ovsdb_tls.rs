//! The OVSDB client over `ssl:` against a real `ovsdb-server` listening with `pssl:`: with the
//! host's certificate of the cluster's CA it talks; without TLS, with another CA's certificate
//! or with no TLS settings at all, it gets nowhere.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use plexus_agent::ovsdb_tls::RustlsConnector;
use plexus_ovs::ovsdb::{Client, ClientOptions, Target};
use plexus_pki::{Ca, Usage};
use plexus_tests::unique_name;

/// An `ovsdb-server` of its own, ended by pid (from its pidfile) when dropped.
struct Server {
    dir: PathBuf,
    addr: SocketAddr,
}

impl Server {
    fn start(dir: PathBuf, ip: std::net::Ipv4Addr, server: &str) -> Server {
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("conf.db");
        let out = Command::new("ovsdb-tool")
            .arg("create")
            .arg(&db)
            .arg("/usr/share/openvswitch/vswitch.ovsschema")
            .output()
            .expect("ovsdb-tool (install openvswitch-switch)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // A free port on this test's own loopback address.
        let port = std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port();
        let f = |name: &str| dir.join(name).display().to_string();
        let out = Command::new("ovsdb-server")
            .arg(&db)
            .arg(format!("--remote=pssl:{port}:{ip}"))
            .arg(format!("--private-key={}", f(&format!("{server}.key"))))
            .arg(format!("--certificate={}", f(&format!("{server}.crt"))))
            .arg(format!("--ca-cert={}", f("ca.crt")))
            .arg(format!("--pidfile={}", f("ovsdb-server.pid")))
            .arg(format!("--unixctl={}", f("ovsdb-server.ctl")))
            .arg(format!("--log-file={}", f("ovsdb-server.log")))
            .args(["--detach", "--no-chdir", "-vconsole:off"])
            .output()
            .expect("ovsdb-server (install openvswitch-switch)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Server { dir, addr: SocketAddr::new(ip.into(), port) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(self.dir.join("ovsdb-server.pid")).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            // SAFETY: the pid of the server this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn opts(tls: Option<RustlsConnector>) -> ClientOptions {
    ClientOptions {
        tls: tls.map(|t| Arc::new(t) as Arc<dyn plexus_ovs::ovsdb::TlsConnector>),
        backoff_max: Duration::from_millis(200),
        ..ClientOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ovsdb_client_speaks_ssl_with_the_hosts_certificate_and_nothing_less() {
    let dir = std::env::temp_dir().join(unique_name('o'));
    let _ = std::fs::remove_dir_all(&dir);
    let pid = std::process::id();
    let ip = std::net::Ipv4Addr::new(127, (pid >> 8) as u8, pid as u8, 200);
    // The server's certificate names its address; the agent's names its host.
    Ca::identity_in(&dir, "ovsdb", &[ip.to_string()], Usage::Api).unwrap();
    let host = Ca::identity_in(&dir, &plexus_pki::host_cert_name("h1"), &[], Usage::Client).unwrap();
    let stranger = Ca::identity_in(&dir.join("elsewhere"), &plexus_pki::host_cert_name("h1"), &[], Usage::Client).unwrap();
    let stranger = plexus_pki::Identity { ca_pem: host.ca_pem.clone(), ..stranger };
    let server = Server::start(dir.clone(), ip, "ovsdb");

    let good = Client::start(Target::Ssl(server.addr), opts(Some(RustlsConnector::new(&host).unwrap())));
    let mut connected = false;
    for _ in 0..50 {
        if good.wait_connected(Duration::from_millis(200)).await.is_ok() {
            connected = true;
            break;
        }
    }
    assert!(connected, "no OVSDB session over ssl: (see {})", dir.join("ovsdb-server.log").display());
    assert!(good.list_dbs().await.unwrap().contains(&"Open_vSwitch".to_string()));

    for (what, target, tls) in [
        ("another CA's certificate", Target::Ssl(server.addr), Some(RustlsConnector::new(&stranger).unwrap())),
        ("plain TCP", Target::Tcp(server.addr), None),
        ("no TLS settings", Target::Ssl(server.addr), None),
    ] {
        let c = Client::start(target, opts(tls));
        // A session that seems up is not enough: a request must be answered.
        let answered = match c.wait_connected(Duration::from_secs(2)).await {
            Ok(_) => tokio::time::timeout(Duration::from_secs(2), c.list_dbs()).await.is_ok_and(|r| r.is_ok()),
            Err(_) => false,
        };
        assert!(!answered, "{what} got an answer from ovsdb-server");
    }
    assert!("ssl:10.0.0.1:6640".parse::<Target>().is_ok() && "ssl:nowhere".parse::<Target>().is_err());
    drop(server);
}
