//! `plexus bench flows`: flow programming through the codec against `ovs-ofctl`.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use plexus_lab::{wire, Lab, LabConfig};
use plexus_ovs::openflow::{Action, Connection, ConnectionOptions, Field, FlowMod, FlowStatsRequest, Match, Message, Stream};
use plexus_ovs::ovsdb::BridgeSpec;
use plexus_pki::{Ca, Usage};

const BR: &str = "br-bench";

fn flow(i: u32) -> (FlowMod, String) {
    let dst = Ipv4Addr::from(0x0a00_0000 + i);
    let fm = FlowMod::add(0, 100, Match::new().ipv4_dst(dst))
        .cookie(i as u64)
        .apply(vec![Action::RegLoad { dst: Field::Reg(0), ofs: 0, n_bits: 32, value: i as u64 }, Action::resubmit(1)]);
    let text = format!("table=0,priority=100,cookie={i:#x},ip,nw_dst={dst},actions=load:{i:#x}->NXM_NX_REG0[],resubmit(,1)");
    (fm, text)
}

pub(super) async fn run(n: u32, runs: usize) -> anyhow::Result<()> {
    if runs == 0 || n == 0 {
        bail!("--flows and --runs must be at least 1");
    }
    let name = format!("bf{}", std::process::id() % 100_000_000);
    let cfg = LabConfig::owned(&name, 1);
    let lab = tokio::task::spawn_blocking(move || Lab::up(&cfg)).await?.context("starting a one-host lab")?;
    let host = lab.hosts[0].clone();
    let vs = wire::vswitch(&host).await?;
    let (msgs, text): (Vec<Message>, Vec<String>) = (0..n).map(flow).map(|(f, t)| (Message::FlowMod(f), t)).unzip();
    let file = lab.dir.join("flows.txt");
    std::fs::write(&file, text.join("\n") + "\n")?;
    let mgmt = host.ovs.mgmt_sock(BR);
    let spec = BridgeSpec {
        name: BR.into(),
        datapath_type: "netdev".into(),
        fail_mode: Some("secure".into()),
        protocols: vec!["OpenFlow13".into()],
        ..Default::default()
    };
    // A fresh bridge each run: wait for the old management socket to go and for the new one
    // to accept an OpenFlow session.
    let fresh = || async {
        vs.delete_bridge(BR).await?;
        for _ in 0..200 {
            if !mgmt.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        vs.ensure_bridge(&spec).await?;
        for _ in 0..200 {
            if Connection::connect_unix(&mgmt, ConnectionOptions::default()).await.is_ok() {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("bridge {BR} did not come up")
    };
    let count = |of: Connection| async move { anyhow::Ok(of.dump_flows(FlowStatsRequest::default()).await?.len()) };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    eprintln!("programming {n} flows, {runs} runs per method ...");
    for run in 1..=runs {
        fresh().await?;
        let t = Instant::now();
        let (of, _ev) = Connection::connect_unix(&mgmt, ConnectionOptions::default()).await?;
        of.bundle(&msgs).await?;
        let dt = t.elapsed().as_secs_f64();
        let got = count(of).await?;
        if got != n as usize {
            bail!("codec run {run}: the switch holds {got} flows, expected {n}");
        }
        ours.push(dt);

        fresh().await?;
        let t = Instant::now();
        let out = Command::new("ovs-ofctl")
            .args(["-O", "OpenFlow13", "--bundle", "add-flows"])
            .arg(format!("unix:{}", mgmt.display()))
            .arg(&file)
            .output()
            .context("running ovs-ofctl (install openvswitch-common)")?;
        let dt2 = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("ovs-ofctl add-flows failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let (of, _ev) = Connection::connect_unix(&mgmt, ConnectionOptions::default()).await?;
        let got = count(of).await?;
        if got != n as usize {
            bail!("ovs-ofctl run {run}: the switch holds {got} flows, expected {n}");
        }
        theirs.push(dt2);
        eprintln!("run {run}: plexus codec {dt:.3} s, ovs-ofctl {dt2:.3} s");
    }
    let (a, b) = (super::median(ours), super::median(theirs));
    println!("flow programming, {n} flows into a fresh netdev bridge (median of {runs}):");
    println!("  plexus codec (bundle + commit):   {a:.3} s  {:>9.0} flows/s", n as f64 / a);
    println!("  ovs-ofctl --bundle add-flows:     {b:.3} s  {:>9.0} flows/s", n as f64 / b);
    println!("  ratio plexus/ovs-ofctl throughput: {:.2}x", b / a);

    // What TLS costs: the switch connects to us, as to a controller, over tcp: and over ssl:
    // (the only kind a controller node accepts); the same flows go down each session.
    let pki = lab.dir.join("bench-pki");
    let server = Ca::identity_in(&pki, "bench-controller", &["127.0.0.1".into()], Usage::Node)?;
    let name = plexus_pki::host_cert_name(&host.name);
    Ca::identity_in(&pki, &name, &[], Usage::Client)?;
    let file = |f: String| pki.join(f).display().to_string();
    vs.set_ssl(&file(format!("{name}.key")), &file(format!("{name}.crt")), &file("ca.crt".into())).await?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server.server_config(None)?);
    plexus_agent::netns::exec(&host.netns, &["ip", "link", "set", "lo", "up"])?;
    // Bound inside the host's namespace, where its ovs-vswitchd connects from.
    let std_listener = plexus_agent::netns::bind_tcp(&host.netns, "127.0.0.1:0".parse()?)?;
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let port = listener.local_addr()?.port();
    let (mut plain, mut tls) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        for secure in [false, true] {
            fresh().await?;
            let target = format!("{}:127.0.0.1:{port}", if secure { "ssl" } else { "tcp" });
            vs.set_controllers(BR, &[target]).await?;
            let (tcp, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept()).await.context("the switch did not connect")??;
            let stream = if secure {
                let s = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await.context("TLS handshake timed out")??;
                Stream::Other(Box::new(s))
            } else {
                Stream::Tcp(tcp)
            };
            let (of, _ev) = Connection::handshake(stream, ConnectionOptions::default()).await?;
            let t = Instant::now();
            of.bundle(&msgs).await?;
            let dt = t.elapsed().as_secs_f64();
            let got = count(of).await?;
            if got != n as usize {
                bail!("{} run {run}: the switch holds {got} flows, expected {n}", if secure { "ssl" } else { "tcp" });
            }
            if secure {
                tls.push(dt)
            } else {
                plain.push(dt)
            }
        }
        eprintln!("run {run}: over tcp: {:.3} s, over ssl: {:.3} s", plain[run - 1], tls[run - 1]);
    }
    let (p, s) = (super::median(plain), super::median(tls));
    println!("the same {n} flows over a switch-initiated session (median of {runs}):");
    println!("  tcp: target (plain):               {p:.3} s  {:>9.0} flows/s", n as f64 / p);
    println!("  ssl: target (TLS, mutual certs):   {s:.3} s  {:>9.0} flows/s", n as f64 / s);
    println!("  ratio TLS/plain throughput:        {:.2}x", p / s);
    drop(vs);
    drop(lab);
    Ok(())
}
