//! `plexus-cni` (a link to `plexus` by that name) and `plexus cni`: the CNI plugin. A runtime
//! runs it with the network configuration on stdin and `CNI_*` variables; it prints one JSON
//! document, a result or a CNI error object, and exits 0 or 1.

use std::io::Read;

/// The name a runtime finds the plugin under (the `type` in its network configuration).
pub(crate) const PLUGIN_NAME: &str = "plexus-cni";

/// Runs one CNI invocation and returns the process's exit code.
pub(crate) fn run() -> i32 {
    let vars: std::collections::HashMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("CNI_")).collect();
    let mut stdin = Vec::new();
    // A runtime's configuration is small; a larger stdin is not one.
    if let Err(e) = std::io::stdin().take(1 << 20).read_to_end(&mut stdin) {
        return answer(Err((plexus_agent::cni::CniError::new(plexus_agent::cni::code::IO, format!("reading stdin: {e}")), "1.0.0".into())));
    }
    let out = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| (plexus_agent::cni::CniError::new(plexus_agent::cni::code::IO, format!("starting a runtime: {e}")), "1.0.0".to_string()))
        .and_then(|rt| rt.block_on(plexus_agent::cni::plugin::run(&vars, &stdin)));
    answer(out)
}

fn answer(out: Result<serde_json::Value, (plexus_agent::cni::CniError, String)>) -> i32 {
    match out {
        // DEL and CHECK print nothing when they succeed.
        Ok(serde_json::Value::Null) => 0,
        Ok(v) => {
            println!("{v}");
            0
        }
        Err((e, version)) => {
            tracing::warn!(code = e.code, msg = %e.msg, "CNI request refused");
            println!("{}", e.to_json(&version));
            1
        }
    }
}
