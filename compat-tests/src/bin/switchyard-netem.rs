//! `switchyard-netem`: the [`Network`] of a cluster of real broker processes, driven over
//! stdin by the real-client fault runs (`compat-tests/clients/datapath.py`).
//!
//! ```text
//! switchyard-netem --cluster 1=127.0.0.1:7001,2=…,3=… --kafka 1=127.0.0.1:9001,2=…,3=…
//! ```
//!
//! `--cluster` names each node's cluster address, `--kafka` its Kafka listener. Once every
//! proxy listens it prints, one per line, `peers N <the --peers node N opens with>` and
//! `kafka N <the address node N advertises>`, then `ready`. It then reads one command per
//! line and answers `ok` or `error: …`:
//! - `set FROM TO open|cut|delay MS|lossy N`: the direction `FROM → TO` (0 is the clients);
//! - `isolate N`: cut both directions between node N and every other node;
//! - `heal`: open every link.
//!
//! It exits when stdin closes, closing every proxy.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::time::Duration;

use anyhow::{Context as _, bail};
use switchyard_compat_tests::{Link, Network};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut cluster, mut kafka) = (None, None);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--cluster" => cluster = Some(addresses(&value)?),
            "--kafka" => kafka = Some(addresses(&value)?),
            other => {
                bail!("unknown argument {other}; usage: --cluster ID=ADDR,… --kafka ID=ADDR,…")
            }
        }
    }
    let cluster = cluster.context("--cluster is required")?;
    let kafka = kafka.context("--kafka is required")?;
    anyhow::ensure!(
        cluster.keys().eq(kafka.keys()),
        "--cluster and --kafka name different nodes"
    );
    // The proxies run on the runtime's worker; this thread reads the commands.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let network = runtime.block_on(async {
        let mut network = Network::between(cluster.clone()).await?;
        let mut out = std::io::stdout().lock();
        for id in cluster.keys() {
            let peers = network.identity(*id)?.peers;
            let peers: Vec<String> = peers.iter().map(|(n, a)| format!("{}={a}", n.0)).collect();
            writeln!(out, "peers {id} {}", peers.join(","))?;
        }
        for (id, listener) in kafka {
            writeln!(out, "kafka {id} {}", network.front(id, listener).await?)?;
        }
        writeln!(out, "ready")?;
        out.flush()?;
        anyhow::Ok(network)
    })?;
    for line in std::io::stdin().lock().lines() {
        let answer = match command(&network, &line?) {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("error: {e:#}"),
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    runtime.block_on(async move { drop(network) });
    Ok(())
}

/// `1=ADDR,2=ADDR,…` as node id → address.
fn addresses(list: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    list.split(',')
        .map(|entry| {
            let (id, addr) = entry
                .split_once('=')
                .with_context(|| format!("{entry:?} is not ID=ADDRESS"))?;
            Ok((
                id.parse().with_context(|| format!("node id {id:?}"))?,
                addr.to_owned(),
            ))
        })
        .collect()
}

/// Apply one control line to `network`.
fn command(network: &Network, line: &str) -> anyhow::Result<()> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |word: &str| -> anyhow::Result<u64> {
        word.parse()
            .with_context(|| format!("{word:?} is not a number"))
    };
    match words.as_slice() {
        ["heal"] => network.heal(),
        ["isolate", node] => network.isolate(number(node)?),
        ["set", from, to, state @ ..] => {
            let link = match state {
                ["open"] => Link::Open,
                ["cut"] => Link::Cut,
                ["delay", ms] => Link::Delay(Duration::from_millis(number(ms)?)),
                ["lossy", one_in] => Link::Lossy {
                    one_in: u32::try_from(number(one_in)?)?.max(1),
                },
                _ => bail!("unknown link state {state:?}"),
            };
            network.set(number(from)?, number(to)?, link);
        }
        _ => bail!("unknown command {line:?}"),
    }
    Ok(())
}
