//! `plexus apply`, `plexus diff` and `plexus export`: the cluster as files (YAML or JSON, many
//! documents per file), the way operators keep configuration. `diff` prints what `apply`
//! would change, field by field, and changes nothing; `apply` makes the cluster match in one
//! batch (`POST /v1/batch`: all or nothing); `--prune` also deletes what an earlier apply made
//! and the files no longer name — objects carry the label [`APPLIED_LABEL`] once an apply
//! wrote them, and nothing without it is ever pruned. `export` writes the cluster in the same
//! format, so that applying it changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use plexus_api::{Batch, Client, Endpoint, EndpointSpec, NetworkSpec, Operation, PolicySpec, RouterSpec, Valid, Validate};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::resources::ApiOpts;

/// The label an apply puts on what it writes: what `--prune` may delete.
pub(crate) const APPLIED_LABEL: &str = "plexus-apply";
const APPLIED_VALUE: &str = "managed";

/// One document of a file: an object's kind and spec (an endpoint names its network too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum Doc {
    /// A network.
    Network {
        /// Its spec.
        spec: NetworkSpec,
    },
    /// A router.
    Router {
        /// Its spec.
        spec: RouterSpec,
    },
    /// A policy.
    Policy {
        /// Its spec.
        spec: PolicySpec,
    },
    /// An endpoint an operator pins (its `id` is required).
    Endpoint {
        /// Its network.
        network: String,
        /// Its spec.
        spec: EndpointSpec,
    },
}

impl Doc {
    /// `kind name`, as the plan and errors say it.
    fn key(&self) -> (u8, String) {
        match self {
            Doc::Network { spec } => (0, spec.name.clone()),
            Doc::Router { spec } => (1, spec.name.clone()),
            Doc::Policy { spec } => (2, spec.name.clone()),
            Doc::Endpoint { network, spec } => (3, format!("{network}/{}", spec.id.as_deref().unwrap_or("?"))),
        }
    }
}

const KINDS: [&str; 4] = ["network", "router", "policy", "endpoint"];

fn label(key: &(u8, String)) -> String {
    format!("{} {}", KINDS[key.0 as usize], key.1)
}

/// `plexus apply` and `plexus diff`.
#[derive(Args)]
pub(crate) struct FilesCmd {
    #[command(flatten)]
    api: ApiOpts,
    /// A file or a directory of `.yaml`, `.yml` and `.json` files (repeat for more).
    #[arg(short = 'f', long = "file", required = true)]
    files: Vec<PathBuf>,
    /// Also delete (or, for diff, show the deletion of) what an earlier apply made and these
    /// files no longer name.
    #[arg(long)]
    prune: bool,
}

/// `plexus export`.
#[derive(Args)]
pub(crate) struct ExportCmd {
    #[command(flatten)]
    api: ApiOpts,
}

/// The files `paths` name, a directory's in name order.
fn files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("{}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
                .collect();
            in_dir.sort();
            out.extend(in_dir);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Every document of `text` (YAML, of which JSON is a part), checked; errors name the file,
/// the document and the field.
pub(crate) fn parse(file: &Path, text: &str) -> anyhow::Result<Vec<Doc>> {
    let mut docs = Vec::new();
    for (i, d) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let at = format!("{}: document {}", file.display(), i + 1);
        // Straight from the YAML, so that an error says its line.
        let doc: Doc = serde_path_to_error::deserialize(d).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.inner().to_string();
            // An internally tagged document loses YAML's positions: find the field's line.
            let line = if inner.contains(" at line ") { None } else { unknown_field(&inner).and_then(|f| line_of(text, i, f)) };
            let line = line.map(|l| format!(" (line {l})")).unwrap_or_default();
            anyhow::anyhow!("{at}{line}: {}{inner}", if path == "." { String::new() } else { format!("{path}: ") })
        })?;
        let checked = check(doc).map_err(|e| anyhow::anyhow!("{at}: spec.{}: {}", e.field, e.reason))?;
        docs.push(checked);
    }
    Ok(docs)
}

/// The field an "unknown field `x`" error names.
fn unknown_field(msg: &str) -> Option<&str> {
    msg.strip_prefix("unknown field `").or_else(|| msg.split("unknown field `").nth(1))?.split('`').next()
}

/// The 1-based line of `text` where document `doc` (0-based) first has key `field`.
fn line_of(text: &str, doc: usize, field: &str) -> Option<usize> {
    let mut n = 0;
    let mut started = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") {
            // A leading separator opens the first document rather than ending one.
            if started {
                n += 1;
            }
            started = true;
            continue;
        }
        started |= !line.trim().is_empty();
        let key = |l: &str| {
            l.trim_start().trim_start_matches(['{', '-', ' ']).starts_with(&format!("{field}:"))
                || l.contains(&format!(" {field}:"))
                || l.contains(&format!("{{{field}:"))
        };
        if n == doc && key(line) {
            return Some(i + 1);
        }
    }
    None
}

/// A document's spec through the API's own checks (defaults filled in as the controller
/// would), labelled as applied.
fn check(doc: Doc) -> Result<Doc, plexus_api::FieldError> {
    fn valid<T: Validate>(spec: T) -> Result<T, plexus_api::FieldError> {
        Valid::new(spec).map(Valid::into_inner)
    }
    Ok(match doc {
        Doc::Network { spec } => Doc::Network { spec: valid(spec)? },
        Doc::Router { spec } => Doc::Router { spec: valid(spec)? },
        Doc::Policy { spec } => Doc::Policy { spec: valid(spec)? },
        Doc::Endpoint { network, spec } => {
            if spec.id.is_none() {
                return Err(plexus_api::FieldError::new("id", "an applied endpoint needs an id (it is how the next apply finds it)"));
            }
            Doc::Endpoint { network, spec: valid(spec)? }
        }
    })
}

/// Every document of every file, with no object named twice.
fn read(paths: &[PathBuf]) -> anyhow::Result<Vec<Doc>> {
    let mut docs = Vec::new();
    let mut seen: BTreeMap<(u8, String), String> = BTreeMap::new();
    for f in files(paths)? {
        let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        for (i, d) in parse(&f, &text)?.into_iter().enumerate() {
            let here = format!("{}: document {}", f.display(), i + 1);
            if let Some(first) = seen.insert(d.key(), here.clone()) {
                bail!("{here}: {} is named twice (also in {first})", label(&d.key()));
            }
            docs.push(d);
        }
    }
    Ok(docs)
}

/// The cluster as the plan sees it.
struct Current {
    networks: BTreeMap<String, plexus_api::Network>,
    routers: BTreeMap<String, plexus_api::Router>,
    policies: BTreeMap<String, plexus_api::Policy>,
    endpoints: BTreeMap<(String, String), Endpoint>,
}

async fn current(api: &Client) -> anyhow::Result<Current> {
    let networks: BTreeMap<String, plexus_api::Network> = api.networks().await?.into_iter().map(|n| (n.spec.name.clone(), n)).collect();
    let mut endpoints = BTreeMap::new();
    for n in networks.keys() {
        for e in api.endpoints(n).await? {
            endpoints.insert((e.network.clone(), e.id.clone()), e);
        }
    }
    Ok(Current {
        networks,
        routers: api.routers().await?.into_iter().map(|r| (r.spec.name.clone(), r)).collect(),
        policies: api.policies().await?.into_iter().map(|p| (p.spec.name.clone(), p)).collect(),
        endpoints,
    })
}

fn applied(labels: &BTreeMap<String, String>) -> bool {
    labels.get(APPLIED_LABEL).is_some_and(|v| v == APPLIED_VALUE)
}

fn with_label(mut labels: BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels.insert(APPLIED_LABEL.into(), APPLIED_VALUE.into());
    labels
}

/// The fields in which `want` differs from `have` (`a.b: old -> new`), both as JSON.
fn field_diff(prefix: &str, want: &Value, have: &Value, out: &mut Vec<String>) {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            let keys: BTreeSet<&String> = w.keys().chain(h.keys()).collect();
            for k in keys {
                let (a, b) = (w.get(k).unwrap_or(&Value::Null), h.get(k).unwrap_or(&Value::Null));
                field_diff(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, a, b, out);
            }
        }
        (w, h) if w != h => out.push(format!("{prefix}: {h} -> {w}")),
        _ => {}
    }
}

/// One change of the plan.
struct Step {
    line: String,
    ops: Vec<Operation>,
}

/// Compares a spec as wanted (with the server's own choices filled in from `have`) and as it
/// is, the applied label aside: `None` when equal, the changed fields otherwise.
fn changed<T: Serialize>(want: &T, have: &T) -> anyhow::Result<Option<Vec<String>>> {
    let (mut w, mut h) = (serde_json::to_value(want)?, serde_json::to_value(have)?);
    for v in [&mut w, &mut h] {
        if let Some(l) = v.get_mut("labels").and_then(Value::as_object_mut) {
            l.remove(APPLIED_LABEL);
            if l.is_empty() {
                v.as_object_mut().map(|o| o.remove("labels"));
            }
        }
    }
    let mut fields = Vec::new();
    field_diff("", &w, &h, &mut fields);
    Ok((!fields.is_empty()).then_some(fields))
}

/// What it takes to make the cluster what `docs` say (and, with `prune`, to delete what an
/// earlier apply made that they no longer name).
fn plan(docs: &[Doc], cur: &Current, prune: bool) -> anyhow::Result<Vec<Step>> {
    let defined: BTreeSet<&str> = docs.iter().filter_map(|d| if let Doc::Network { spec } = d { Some(spec.name.as_str()) } else { None }).collect();
    let known = |n: &str| defined.contains(n) || cur.networks.contains_key(n);
    let mut steps = Vec::new();
    let mut put = |key: (u8, String), fields: Option<Option<Vec<String>>>, op: Operation, pre: Vec<Operation>| {
        let what = label(&key);
        match fields {
            None => steps.push(Step { line: format!("+ {what}"), ops: [pre, vec![op]].concat() }),
            Some(Some(f)) => steps.push(Step {
                line: format!("~ {what}\n{}", f.iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")),
                ops: [pre, vec![op]].concat(),
            }),
            Some(None) => {}
        }
    };
    let mut ordered: Vec<&Doc> = docs.iter().collect();
    ordered.sort_by_key(|d| d.key().0);
    for d in ordered {
        let key = d.key();
        match d {
            Doc::Network { spec } => {
                let mut want = spec.clone();
                let fields = match cur.networks.get(&spec.name) {
                    Some(have) => {
                        if let (plexus_api::NetworkKind::Overlay { vni: w @ None }, plexus_api::NetworkKind::Overlay { vni: h }) =
                            (&mut want.kind, &have.spec.kind)
                        {
                            *w = *h; // the controller's choice stands
                        }
                        Some(changed(&want, &have.spec)?)
                    }
                    None => None,
                };
                want.labels = with_label(want.labels);
                put(key, fields, Operation::PutNetwork { spec: want }, Vec::new());
            }
            Doc::Router { spec } => {
                if let Some(n) = spec.networks.iter().find(|n| !known(n)) {
                    bail!("{}: network {n} is neither in the files nor in the cluster", label(&key));
                }
                let fields = cur.routers.get(&spec.name).map(|have| changed(spec, &have.spec)).transpose()?;
                put(key, fields, Operation::PutRouter { spec: RouterSpec { labels: with_label(spec.labels.clone()), ..spec.clone() } }, Vec::new());
            }
            Doc::Policy { spec } => {
                if !known(&spec.network) {
                    bail!("{}: network {} is neither in the files nor in the cluster", label(&key), spec.network);
                }
                let fields = cur.policies.get(&spec.name).map(|have| changed(spec, &have.spec)).transpose()?;
                put(key, fields, Operation::PutPolicy { spec: PolicySpec { labels: with_label(spec.labels.clone()), ..spec.clone() } }, Vec::new());
            }
            Doc::Endpoint { network, spec } => {
                if !known(network) {
                    bail!("{}: network {network} is neither in the files nor in the cluster", label(&key));
                }
                let id = spec.id.clone().unwrap_or_default();
                let mut want = EndpointSpec { labels: with_label(spec.labels.clone()), ..spec.clone() };
                let have = cur.endpoints.get(&(network.clone(), id.clone()));
                let fields = match have {
                    Some(e) => {
                        // What the controller chose stands unless the file says otherwise.
                        want.ip = want.ip.or(Some(e.ip));
                        want.mac = want.mac.or(Some(e.mac.to_string()));
                        want.owner = want.owner.or(e.owner.clone());
                        Some(changed(&want, &as_spec(e))?)
                    }
                    None => None,
                };
                // New labels are set in place (policies follow them at once); any other change
                // remakes the endpoint, in the same batch.
                let only_labels = matches!(&fields, Some(Some(f)) if f.iter().all(|l| l.starts_with("labels")));
                if only_labels {
                    put(key, fields, Operation::SetEndpointLabels { network: network.clone(), id, labels: want.labels }, Vec::new());
                } else {
                    let pre =
                        if matches!(fields, Some(Some(_))) { vec![Operation::DeleteEndpoint { network: network.clone(), id: id.clone() }] } else { Vec::new() };
                    put(key, fields, Operation::CreateEndpoint { network: network.clone(), spec: want }, pre);
                }
            }
        }
    }
    if prune {
        let named: BTreeSet<(u8, String)> = docs.iter().map(Doc::key).collect();
        let gone = |k: (u8, String)| !named.contains(&k);
        for e in cur.endpoints.values().filter(|e| applied(&e.labels)) {
            let key = (3, format!("{}/{}", e.network, e.id));
            if gone(key.clone()) {
                steps.push(Step { line: format!("- {}", label(&key)), ops: vec![Operation::DeleteEndpoint { network: e.network.clone(), id: e.id.clone() }] });
            }
        }
        for p in cur.policies.values().filter(|p| applied(&p.spec.labels) && gone((2, p.spec.name.clone()))) {
            steps.push(Step { line: format!("- policy {}", p.spec.name), ops: vec![Operation::DeletePolicy { name: p.spec.name.clone() }] });
        }
        for r in cur.routers.values().filter(|r| applied(&r.spec.labels) && gone((1, r.spec.name.clone()))) {
            steps.push(Step { line: format!("- router {}", r.spec.name), ops: vec![Operation::DeleteRouter { name: r.spec.name.clone() }] });
        }
        for n in cur.networks.values().filter(|n| applied(&n.spec.labels) && gone((0, n.spec.name.clone()))) {
            steps.push(Step { line: format!("- network {}", n.spec.name), ops: vec![Operation::DeleteNetwork { name: n.spec.name.clone(), force: false }] });
        }
    }
    Ok(steps)
}

/// A stored endpoint as the spec that would make it.
fn as_spec(e: &Endpoint) -> EndpointSpec {
    EndpointSpec {
        id: Some(e.id.clone()),
        host: e.host.clone(),
        ip: Some(e.ip),
        ip6: e.ip6,
        mac: Some(e.mac.to_string()),
        owner: e.owner.clone(),
        labels: e.labels.clone(),
        publish: e.publish.clone(),
    }
}

/// `plexus diff`: the plan, and nothing changed.
pub(crate) async fn diff(c: FilesCmd) -> anyhow::Result<()> {
    let docs = read(&c.files)?;
    let api = c.api.auth.client(&c.api.api)?;
    let steps = plan(&docs, &current(&api).await?, c.prune)?;
    print_plan(steps.iter().map(|s| &s.line));
    Ok(())
}

fn print_plan<'a>(lines: impl ExactSizeIterator<Item = &'a String>) {
    if lines.len() == 0 {
        println!("no changes");
    }
    for l in lines {
        println!("{l}");
    }
}

/// What an apply did: the plan's lines, and the objects the batch made (none when the cluster
/// matched already).
pub(crate) struct Applied {
    /// One line (or a few) per change.
    pub lines: Vec<String>,
    /// What the batch returned, per operation.
    pub objects: Vec<Value>,
}

/// Makes the cluster what `files` say, in one batch.
pub(crate) async fn apply_files(api: &Client, files: &[PathBuf], prune: bool) -> anyhow::Result<Applied> {
    let docs = read(files)?;
    let steps = plan(&docs, &current(api).await?, prune)?;
    let lines: Vec<String> = steps.iter().map(|s| s.line.clone()).collect();
    if steps.is_empty() {
        return Ok(Applied { lines, objects: Vec::new() });
    }
    let operations: Vec<Operation> = steps.into_iter().flat_map(|s| s.ops).collect();
    if operations.len() > plexus_api::batch::MAX_OPERATIONS {
        bail!("{} changes; one apply makes at most {} (split the files)", operations.len(), plexus_api::batch::MAX_OPERATIONS);
    }
    let objects = api.batch(&Batch { operations }).await.context("applying (nothing was changed)")?;
    Ok(Applied { lines, objects })
}

/// `plexus apply`: the plan, applied in one batch.
pub(crate) async fn apply(c: FilesCmd) -> anyhow::Result<()> {
    let api = c.api.auth.client(&c.api.api)?;
    let done = apply_files(&api, &c.files, c.prune).await?;
    print_plan(done.lines.iter());
    if !done.lines.is_empty() {
        println!("applied: {} change(s)", done.lines.len());
    }
    Ok(())
}

/// `plexus export`: the cluster as documents `apply` takes (endpoints only where an apply
/// pinned them; the rest belong to their runtimes).
pub(crate) async fn export(c: ExportCmd) -> anyhow::Result<()> {
    let api = c.api.auth.client(&c.api.api)?;
    let cur = current(&api).await?;
    let mut docs: Vec<Doc> = Vec::new();
    docs.extend(cur.networks.values().map(|n| Doc::Network { spec: n.spec.clone() }));
    docs.extend(cur.routers.values().map(|r| Doc::Router { spec: r.spec.clone() }));
    docs.extend(cur.policies.values().map(|p| Doc::Policy { spec: p.spec.clone() }));
    docs.extend(cur.endpoints.values().filter(|e| applied(&e.labels)).map(|e| Doc::Endpoint { network: e.network.clone(), spec: as_spec(e) }));
    match c.api.output {
        crate::resources::Output::Json => println!("{}", serde_json::to_string_pretty(&docs)?),
        _ => {
            for d in &docs {
                print!("---\n{}", serde_yaml_ng::to_string(d)?);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_checked_and_errors_name_the_document_and_field() {
        let f = Path::new("t.yaml");
        let ok = "kind: network\nspec: {name: red, kind: {type: overlay}, subnet: 10.1.0.0/24}\n---\nkind: router\nspec: {name: r, networks: [red]}\n";
        let docs = parse(f, ok).expect("two documents");
        assert_eq!(docs.len(), 2);
        let Doc::Network { spec } = &docs[0] else { panic!("{docs:?}") };
        assert_eq!(spec.gateway, Some("10.1.0.1".parse().unwrap()), "defaults filled in as the controller would");
        let e = parse(f, "kind: network\nspec: {name: red, kind: {type: overlay}, subnet: 10.1.0.0/24, colour: blue}\n").unwrap_err().to_string();
        assert!(e.contains("t.yaml: document 1 (line 2)") && e.contains("colour"), "{e}");
        let two = "---\nkind: router\nspec: {name: r, networks: [red]}\n---\nkind: network\nspec:\n  name: blue\n  colour: red\n";
        let e = parse(f, two).unwrap_err().to_string();
        assert!(e.contains("document 2 (line 8)") && e.contains("colour"), "{e}");
        let e = parse(f, "kind: bridge\nspec: {}\n").unwrap_err().to_string();
        assert!(e.contains("document 1") && e.contains("bridge"), "{e}");
        let e = parse(f, "kind: network\nspec: {name: red, kind: {type: overlay}, subnet: 10.1.0.0/33}\n").unwrap_err().to_string();
        assert!(e.contains("spec.subnet"), "{e}");
    }
}
