//! Posing as a switch, for tests of what the controller does with one.

use std::net::SocketAddr;
use std::time::Duration;

/// A fake switch: TLS with `client` (trusting `ca`), then the switch's side of the OpenFlow
/// handshake claiming `dpid`. Returns once the controller closes the session or after `wait`.
pub async fn fake_switch(addr: SocketAddr, client: Option<&plexus_pki::Identity>, dpid: u64, wait: Duration) -> Result<(), String> {
    use plexus_ovs::openflow::{frame_len, Hello, Message, SwitchFeatures};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let Some(id) = client else {
        // No TLS at all: speak OpenFlow in the clear.
        let mut tcp = tcp;
        tcp.write_all(&Message::Hello(Hello::of13()).encode(1).map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
        // Whatever comes back (a TLS alert), it is not OpenFlow (version 4 in the first byte).
        let mut buf = [0u8; 64];
        return match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && buf[0] == 4 => Ok(()),
            Ok(_) => Err("closed without OpenFlow".into()),
            Err(_) => Err("silence".into()),
        };
    };
    let cfg = std::sync::Arc::new(id.client_config().map_err(|e| e.to_string())?);
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(addr.ip().to_string()).map_err(|e| e.to_string())?;
    let mut s = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
    s.write_all(&Message::Hello(Hello::of13()).encode(1).map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        while let Ok(Some(n)) = frame_len(&buf) {
            if buf.len() < n {
                break;
            }
            let frame: Vec<u8> = buf.drain(..n).collect();
            if let Ok((xid, Message::FeaturesRequest)) = Message::decode(&frame) {
                let f = SwitchFeatures { datapath_id: dpid, n_buffers: 0, n_tables: 254, auxiliary_id: 0, capabilities: 0 };
                s.write_all(&Message::FeaturesReply(f).encode(xid).map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
            }
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) => return Err("closed by the controller".into()),
            Ok(Err(e)) => return Err(format!("closed by the controller: {e}")),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Ok(()),
        }
    }
}
