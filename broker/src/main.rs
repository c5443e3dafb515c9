//! The `switchyard` binary. See the library docs for the layout.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use switchyard::backends;
use switchyard::cli::{
    AclArgs, AclCommand, Cli, ClusterCommand, Command, ConsumeArgs, ExportFormat, GroupCommand,
    MetadataFileCommand, OutputArgs, ProduceArgs, ServeArgs, TargetArgs, TopicCommand, UserCommand,
};
use switchyard::config::LogFormat;
use switchyard::ops::{self, OpsError, Report};
use switchyard_backend_api::{
    ClusterSecret, MembershipChange, MetadataError, NodeId, Principal, available_backends,
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Backends => list_backends(),
        Command::Serve(args) => serve(&args),
        #[cfg(feature = "conformance")]
        Command::Conformance {
            backends,
            seeds,
            ops,
            first_seed,
            output,
        } => conformance(
            switchyard::conformance::Plan {
                backends,
                seeds,
                ops_per_client: ops,
                base_seed: first_seed,
            },
            output.as_deref(),
        ),
        Command::Cluster(ClusterCommand::Status { target }) => status(&target),
        Command::User(command) => user(command),
        Command::Topic(command) => topic(command),
        Command::Group(command) => group(command),
        Command::Produce(args) => produce(&args),
        Command::Consume(args) => consume(&args),
        Command::Acl(command) => acl(command),
        Command::Metadata(MetadataFileCommand::Export {
            output,
            format,
            bootstrap,
            ssl_truststore_location,
            config,
        }) => export(
            &output,
            format,
            bootstrap
                .as_deref()
                .map(|b| (b, ssl_truststore_location.as_deref())),
            &config,
        ),
        Command::Metadata(MetadataFileCommand::Import { file, config }) => import(&file, &config),
        Command::Cluster(ClusterCommand::Promote { node, config }) => promote(node, &config),
        Command::Cluster(ClusterCommand::AddNode { node, addr, config }) => change_membership(
            MembershipChange::AddNode {
                id: NodeId(node),
                addr,
            },
            &config,
        ),
        Command::Cluster(ClusterCommand::RemoveNode { node, config }) => {
            change_membership(MembershipChange::RemoveNode { id: NodeId(node) }, &config)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole cause chain on one line, without a backtrace even when
            // RUST_BACKTRACE is set: these are operator errors, not bugs.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn list_backends() -> anyhow::Result<()> {
    let listing = backends::listing(&available_backends());
    std::io::stdout()
        .lock()
        .write_all(listing.as_bytes())
        .context("writing the backend list")
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.load_config()?;
    init_logging(config.log_format);
    switchyard::telemetry::install().context("installing the metrics recorder")?;
    raise_open_file_limit();
    // Data directories 0700 and files 0600: metadata and partition logs are nobody else's.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(switchyard::serve::run(&config))?;
    Ok(())
}

/// Raise the soft limit on open files to the hard limit: every client connection, peer
/// connection and log segment is a descriptor, and the usual soft default (1,024) is far
/// below what a broker needs. Failure is logged, not fatal.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current >= limit.maximum {
        return;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(
            from = ?limit.current,
            to = ?limit.maximum,
            "raised the open-file limit"
        ),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

/// Load the configuration `args` point at and run one operator request against the cluster
/// it describes, on a single-threaded runtime.
fn operate<T>(
    args: &ServeArgs,
    request: impl AsyncFnOnce(&switchyard::config::Config) -> Result<T, MetadataError>,
) -> anyhow::Result<Result<T, MetadataError>> {
    let config = args.load_config()?;
    init_logging(config.log_format);
    raise_open_file_limit();
    // Data directories 0700 and files 0600: metadata and partition logs are nobody else's.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    Ok(runtime.block_on(request(&config)))
}

#[cfg(feature = "conformance")]
fn conformance(
    plan: switchyard::conformance::Plan,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let bar = progress_bar(None, "fault runs");
    let report = runtime.block_on(switchyard::conformance::run(&plan, |step| match step {
        switchyard::conformance::Step::Planned(runs) => {
            bar.set_length(runs);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} fault runs and checks, eta {eta}",
            ) {
                bar.set_style(style);
            }
        }
        switchyard::conformance::Step::Ran(report) => {
            bar.println(report.to_string());
            bar.inc(1);
        }
        switchyard::conformance::Step::Checked(caught) => {
            if let Some(report) = caught {
                bar.println(report.to_string());
            }
            bar.inc(1);
        }
    }))?;
    bar.finish_and_clear();
    match output {
        Some(path) => {
            let previous = std::fs::read_to_string(path).unwrap_or_default();
            let report = switchyard::conformance::keeping_data_path_section(&report, &previous);
            std::fs::write(path, report).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout()
            .lock()
            .write_all(report.as_bytes())
            .context("writing the report")?,
    }
    Ok(())
}

/// The listeners and credentials `args` name.
fn target(args: &TargetArgs) -> anyhow::Result<switchyard::users::Target> {
    let credentials = match &args.cluster_secret_file {
        Some(path) => Some(switchyard::kafka::sasl::PeerCredentials {
            secret: ClusterSecret::from_file(path)?,
            me: Principal::Operator,
        }),
        None => None,
    };
    Ok(switchyard::users::Target {
        bootstrap: args
            .bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
        credentials,
        tls: match &args.ssl_truststore_location {
            Some(path) => Some(
                switchyard::kafka::tls::TlsClient::trusting(
                    path,
                    args.ssl_certificate_location
                        .as_deref()
                        .zip(args.ssl_key_location.as_deref()),
                )
                .map_err(anyhow::Error::msg)?,
            ),
            None => None,
        },
        timeout: std::time::Duration::from_millis(args.timeout_ms),
    })
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn user(command: UserCommand) -> anyhow::Result<()> {
    init_logging(LogFormat::Text);
    let mechanism = |name: &str| match switchyard::kafka::sasl::Mechanism::parse(name) {
        Some(switchyard::kafka::sasl::Mechanism::Scram(m)) => Ok(m),
        _ => anyhow::bail!("--mechanism {name:?} is not SCRAM-SHA-256 or SCRAM-SHA-512"),
    };
    let runtime = current_thread()?;
    match command {
        UserCommand::Create {
            name,
            password_file,
            mechanism: m,
            iterations,
            target: args,
        } => {
            let password = read_password(&password_file)?;
            let m = mechanism(&m)?;
            let target = target(&args)?;
            runtime
                .block_on(switchyard::users::upsert(
                    &target, &name, m, iterations, &password,
                ))
                .with_context(|| format!("creating user {name}"))?;
            println!("user {name}: {m} credential stored ({iterations} iterations)");
        }
        UserCommand::Delete {
            name,
            mechanism: m,
            target: args,
        } => {
            let m = mechanism(&m)?;
            let target = target(&args)?;
            runtime
                .block_on(switchyard::users::delete(&target, &name, m))
                .with_context(|| format!("deleting user {name}'s {m} credential"))?;
            println!("user {name}: {m} credential deleted");
        }
        UserCommand::List { target: args } => {
            let target = target(&args)?;
            let users = runtime
                .block_on(switchyard::users::list(&target))
                .context("listing users")?;
            let mut out = String::new();
            for user in users {
                let credentials: Vec<String> = user
                    .credentials
                    .iter()
                    .map(|(m, iterations)| format!("{m} ({iterations} iterations)"))
                    .collect();
                out.push_str(&format!("{} {}\n", user.user, credentials.join(", ")));
            }
            std::io::stdout()
                .lock()
                .write_all(out.as_bytes())
                .context("writing the users")?;
        }
    }
    Ok(())
}

/// The binding `args` name.
fn binding(args: &AclArgs) -> anyhow::Result<switchyard_backend_api::security::AclBinding> {
    use switchyard_backend_api::security::{AclBinding, AclPermission, PatternType, ResourceType};
    let operation = switchyard::acls::operation(&args.operation).with_context(|| {
        format!(
            "--operation {:?} is not a Kafka ACL operation",
            args.operation
        )
    })?;
    let (resource_type, resource_name) = match (&args.topic, &args.group) {
        (Some(topic), _) => (ResourceType::Topic, topic.clone()),
        (_, Some(group)) => (ResourceType::Group, group.clone()),
        _ => (ResourceType::Cluster, "kafka-cluster".to_owned()),
    };
    Ok(AclBinding {
        resource_type,
        resource_name,
        pattern_type: if args.prefixed {
            PatternType::Prefixed
        } else {
            PatternType::Literal
        },
        principal: args.principal.clone(),
        host: args.host.clone(),
        operation,
        permission: if args.deny {
            AclPermission::Deny
        } else {
            AclPermission::Allow
        },
    })
}

fn acl(command: AclCommand) -> anyhow::Result<()> {
    init_logging(LogFormat::Text);
    let runtime = current_thread()?;
    match command {
        AclCommand::Create {
            binding: args,
            target: where_,
        } => {
            let binding = binding(&args)?;
            let target = target(&where_)?;
            runtime
                .block_on(switchyard::acls::create(&target, &binding))
                .context("creating the ACL")?;
            println!("created: {}", switchyard::acls::describe(&binding));
        }
        AclCommand::List {
            principal,
            target: where_,
        } => {
            let target = target(&where_)?;
            let bindings = runtime
                .block_on(switchyard::acls::list(&target, principal.as_deref()))
                .context("listing ACLs")?;
            let mut out = String::new();
            for binding in &bindings {
                out.push_str(&switchyard::acls::describe(binding));
                out.push('\n');
            }
            std::io::stdout()
                .lock()
                .write_all(out.as_bytes())
                .context("writing the ACLs")?;
        }
        AclCommand::Delete {
            binding: args,
            target: where_,
        } => {
            let binding = binding(&args)?;
            let target = target(&where_)?;
            let removed = runtime
                .block_on(switchyard::acls::delete(&target, &binding))
                .context("deleting the ACL")?;
            anyhow::ensure!(
                removed > 0,
                "no such ACL: {}",
                switchyard::acls::describe(&binding)
            );
            println!("deleted: {}", switchyard::acls::describe(&binding));
        }
    }
    Ok(())
}

/// The first line of `path` (`-`: standard input), without its line ending.
fn read_password(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the password from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the password file {}", path.display()))?
    };
    let password = text.lines().next().unwrap_or_default();
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    Ok(password.as_bytes().to_vec())
}

/// A progress bar on standard error (hidden when it is not a terminal): of `total` when
/// known, else a spinner with a count; `what` says what it counts.
fn progress_bar(total: Option<u64>, what: &str) -> indicatif::ProgressBar {
    let (bar, template) = match total {
        Some(total) => (
            indicatif::ProgressBar::new(total),
            format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} ({{per_sec}})"),
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            format!("{{elapsed_precise}} {{spinner}} {{pos}} {what} ({{per_sec}})"),
        ),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar
}

/// Run one operator command against the cluster `target` describes and print its report as
/// `output` says; an error when it failed, or when any of what it was asked failed.
fn report<R: Report>(
    target: &TargetArgs,
    output: &OutputArgs,
    what: &str,
    run: impl AsyncFnOnce(&mut ops::Client) -> Result<R, OpsError>,
) -> anyhow::Result<()> {
    init_logging(LogFormat::Text);
    let mut client = ops::Client::new(self::target(target)?);
    let runtime = current_thread()?;
    let report = runtime
        .block_on(run(&mut client))
        .with_context(|| what.to_owned())?;
    std::io::stdout()
        .lock()
        .write_all(ops::render(&report, output.format).as_bytes())
        .context("writing the report")?;
    let failed = report.failures();
    anyhow::ensure!(failed == 0, "{what}: {failed} failed");
    Ok(())
}

fn topic(command: TopicCommand) -> anyhow::Result<()> {
    use switchyard::ops::topic;
    match command {
        TopicCommand::Create {
            topics,
            partitions,
            replicas,
            configs,
            target,
            output,
        } => report(&target, &output, "creating topics", async |c| {
            topic::create(c, &topics, partitions, replicas, &configs).await
        }),
        TopicCommand::List { target, output } => {
            report(&target, &output, "listing topics", topic::list)
        }
        TopicCommand::Describe {
            topics,
            target,
            output,
        } => report(&target, &output, "describing topics", async |c| {
            topic::describe(c, &topics).await
        }),
        TopicCommand::AlterConfig {
            topic: name,
            set,
            delete,
            target,
            output,
        } => report(&target, &output, "altering topic configs", async |c| {
            topic::alter_config(c, &name, &set, &delete).await
        }),
        TopicCommand::AddPartitions {
            topic: name,
            num,
            target,
            output,
        } => report(&target, &output, "adding partitions", async |c| {
            topic::add_partitions(c, &name, num).await
        }),
        TopicCommand::Delete {
            topics,
            target,
            output,
        } => report(&target, &output, "deleting topics", async |c| {
            topic::delete(c, &topics).await
        }),
    }
}

fn group(command: GroupCommand) -> anyhow::Result<()> {
    use switchyard::ops::group;
    match command {
        GroupCommand::List { target, output } => {
            report(&target, &output, "listing groups", group::list)
        }
        GroupCommand::Describe {
            groups,
            target,
            output,
        } => report(&target, &output, "describing groups", async |c| {
            group::describe(c, &groups).await
        }),
        GroupCommand::Seek {
            group: id,
            to,
            topics,
            target,
            output,
        } => report(&target, &output, "resetting group offsets", async |c| {
            group::seek(c, &id, to, &topics).await
        }),
        GroupCommand::Delete {
            groups,
            target,
            output,
        } => report(&target, &output, "deleting groups", async |c| {
            group::delete(c, &groups).await
        }),
    }
}

fn produce(args: &ProduceArgs) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let values = std::io::stdin()
        .lock()
        .lines()
        .map(|line| line.map(bytes::Bytes::from))
        .collect::<Result<Vec<_>, _>>()
        .context("reading standard input")?;
    anyhow::ensure!(
        !values.is_empty(),
        "nothing to produce: standard input is empty"
    );
    let bar = progress_bar(Some(values.len() as u64), "records produced");
    let produced = report(&args.target, &args.output, "producing", async |c| {
        ops::records::produce(
            c,
            &args.topic,
            args.partition,
            args.key.as_deref(),
            values,
            args.acks,
            |n| bar.inc(n as u64),
        )
        .await
    });
    bar.finish_and_clear();
    produced
}

fn consume(args: &ConsumeArgs) -> anyhow::Result<()> {
    init_logging(LogFormat::Text);
    let mut client = ops::Client::new(target(&args.target)?);
    let spec = ops::records::Consume {
        topic: args.topic.clone(),
        partitions: args.partitions.clone(),
        start: args.offset,
        max: args.num,
        until_end: args.until_end,
    };
    let format = args.output.format;
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    let bar = progress_bar(args.num.map(|n| n as u64), "records consumed");
    let runtime = current_thread()?;
    runtime
        .block_on(ops::records::consume(&mut client, &spec, |record| {
            bar.inc(1);
            if failed.is_some() {
                return;
            }
            let line = match format {
                ops::Format::Text => record.value.clone().unwrap_or_default(),
                ops::Format::Json => serde_json::to_string(record).unwrap_or_default(),
            };
            if let Err(e) = writeln!(out, "{line}") {
                failed = Some(e);
            }
        }))
        .with_context(|| format!("consuming {}", args.topic))?;
    bar.finish_and_clear();
    match failed {
        Some(e) => Err(e).context("writing records"),
        None => out.flush().context("writing records"),
    }
}

fn status(args: &TargetArgs) -> anyhow::Result<()> {
    init_logging(LogFormat::Text);
    let target = target(args)?;
    let runtime = current_thread()?;
    let status = runtime
        .block_on(switchyard::status::cluster_status(&target))
        .context("asking the cluster for its status")?;
    std::io::stdout()
        .lock()
        .write_all(status.to_string().as_bytes())
        .context("writing the status")
}

fn export(
    output: &std::path::Path,
    format: ExportFormat,
    live: Option<(&str, Option<&std::path::Path>)>,
    args: &ServeArgs,
) -> anyhow::Result<()> {
    let export = match live {
        None => {
            let config = args.load_config()?;
            init_logging(config.log_format);
            switchyard::export::export_offline(&config)?
        }
        Some((bootstrap, truststore)) => {
            init_logging(LogFormat::Text);
            let target = target(&TargetArgs {
                bootstrap: bootstrap.to_owned(),
                cluster_secret_file: args
                    .cluster_secret_file
                    .clone()
                    .or_else(|| std::env::var_os("SWITCHYARD_CLUSTER_SECRET_FILE").map(Into::into)),
                ssl_truststore_location: truststore.map(ToOwned::to_owned),
                ssl_certificate_location: None,
                ssl_key_location: None,
                timeout_ms: 30_000,
            })?;
            current_thread()?
                .block_on(switchyard::export::export_live(&target))
                .context("exporting from the running cluster")?
        }
    };
    let bytes = match format {
        ExportFormat::Binary => export.to_file_bytes().context("encoding the export")?,
        ExportFormat::Json => {
            let mut json = serde_json::to_vec_pretty(&export.to_json()?)?;
            json.push(b'\n');
            json
        }
    };
    write_new_file(output, &bytes)?;
    print!("{}", switchyard::export::Summary(&export));
    println!("wrote {} ({} bytes)", output.display(), bytes.len());
    Ok(())
}

/// Write `bytes` to `path` durably and readable by its owner only (an export holds the users'
/// salted SCRAM keys): a temporary file beside it, fsynced, renamed over it.
fn write_new_file(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    written
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| std::fs::File::open(parent)?.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn import(file: &std::path::Path, args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.load_config()?;
    init_logging(config.log_format);
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let export = switchyard_backend_api::export::MetadataExport::from_file_bytes(&bytes)
        .with_context(|| format!("{} is not an export this build reads", file.display()))?;
    let imported = switchyard::export::import(&config, &export)?;
    print!("{}", switchyard::export::Summary(&export));
    println!(
        "initialised node {} of {} (nodes {}) in {}; start it with --metadata-backend {}",
        imported.node,
        imported.backend,
        imported
            .members
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        imported.dir.display(),
        imported.backend,
    );
    Ok(())
}

fn promote(node: u64, args: &ServeArgs) -> anyhow::Result<()> {
    let epoch = operate(args, async |config| {
        backends::promote(config, NodeId(node)).await
    })?
    .with_context(|| format!("promoting node {node}"))?;
    println!("node {node} is the primary at epoch {epoch}");
    Ok(())
}

fn change_membership(change: MembershipChange, args: &ServeArgs) -> anyhow::Result<()> {
    let what = format!("{change:?}");
    let view = operate(args, async |config| {
        backends::change_membership(config, change).await
    })?
    .with_context(|| format!("changing the membership: {what}"))?;
    let leader = view
        .leader
        .map_or_else(|| "none".to_owned(), |l| l.to_string());
    let mut out = format!("leader {leader}, epoch {}\n", view.epoch);
    for member in &view.members {
        let role = if member.voter { "voter" } else { "learner" };
        let addr = member.addr.as_deref().unwrap_or("-");
        out.push_str(&format!("node {} {role} {addr}\n", member.id));
    }
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing the membership")
}

/// The levels when `RUST_LOG` is not set: the consensus library's internals (openraft logs
/// its whole state at info) only from warnings up.
const DEFAULT_LOG_FILTER: &str = "info,openraft=warn";

/// Log to stderr as `format` says; `RUST_LOG` filters, [`DEFAULT_LOG_FILTER`] otherwise.
fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}
