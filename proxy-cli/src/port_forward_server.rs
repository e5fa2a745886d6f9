//! `proxy port-forward-server`: the objects from flags and a file, the exposure check,
//! TLS and the token, then the library's server until a signal stops it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use proxy_portforward::cluster_file;
use proxy_portforward::objects::Cluster;
use proxy_portforward::server::{Server, ServerConfig, tls_config};

use crate::args::UsageError;
use crate::args::port_forward_server::PortForwardServerArgs;
use crate::registry::Forwards;
use crate::run::Hangups;
use crate::shutdown::Signals;

/// The objects the flags and the file (if any) declare together.
///
/// # Errors
///
/// A file that cannot be read or parsed (named with its line and key), a pod given twice,
/// a service listing a pod given nowhere.
pub fn cluster(args: &PortForwardServerArgs) -> Result<Cluster, UsageError> {
    let mut cluster = match &args.config {
        Some(path) => load(path)?,
        None => Cluster::default(),
    };
    let usage = |e: proxy_portforward::objects::ObjectError| UsageError(e.to_string());
    for pod in &args.pods {
        cluster.add_pod(pod.clone()).map_err(usage)?;
    }
    for service in &args.services {
        cluster.add_service(service.clone()).map_err(usage)?;
    }
    Ok(cluster)
}

fn load(path: &Path) -> Result<Cluster, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
    cluster_file::parse(&text, &path.display().to_string()).map_err(|e| UsageError(e.to_string()))
}

/// Refuses an address beyond loopback without TLS and a token, unless `--insecure`.
///
/// # Errors
///
/// The refusal, naming the address and what is missing.
pub fn check_exposure(args: &PortForwardServerArgs) -> Result<(), UsageError> {
    let exposed = !args.listen.ip().is_loopback();
    let missing: Vec<&str> = [
        (args.tls_cert.is_none(), "TLS (--tls-cert, --tls-key)"),
        (args.token_file.is_none(), "a token (--token-file)"),
    ]
    .into_iter()
    .filter_map(|(missing, what)| missing.then_some(what))
    .collect();
    if exposed && !missing.is_empty() && !args.insecure {
        return Err(UsageError(format!(
            "--listen {} is reachable beyond this host, and port-forward reaches into pods: \
             give {}, or --insecure",
            args.listen,
            missing.join(" and ")
        )));
    }
    Ok(())
}

fn token(path: &Path) -> Result<String, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("--token-file {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(UsageError(format!(
            "--token-file {}: the token must be one word, and not empty",
            path.display()
        )));
    }
    Ok(token.to_owned())
}

/// `--check`: everything but binding.
///
/// # Errors
///
/// As [`run`], before it binds.
pub fn check(args: &PortForwardServerArgs) -> Result<(), UsageError> {
    prepare(args).map(drop)
}

type Prepared = (Server, Option<Arc<ServerConfig>>);

fn prepare(args: &PortForwardServerArgs) -> Result<Prepared, UsageError> {
    check_exposure(args)?;
    let cluster = cluster(args)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(tls_config(cert, key).map_err(|e| UsageError(e.to_string()))?)
        }
        _ => None,
    };
    let mut builder = Server::builder(cluster)
        .udp(!args.no_udp)
        .idle_timeout((args.streaming_connection_idle_timeout).filter(|idle| !idle.is_zero()));
    if let Some(path) = &args.token_file {
        builder = builder.token(token(path)?);
    }
    Ok((builder.build(), tls))
}

/// Serves until SIGINT or SIGTERM; SIGHUP reads `--config` again.
///
/// # Errors
///
/// Bad arguments ([`UsageError`]), or the address cannot be bound.
pub async fn run(args: &PortForwardServerArgs, forwards: &Forwards) -> anyhow::Result<()> {
    let (server, tls) = prepare(args)?;
    let mut signals = Signals::new().context("cannot install the signal handlers")?;
    let mut hangups = Hangups::new().context("cannot install the SIGHUP handler")?;
    let listening = server
        .bind(args.listen, tls)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    forwards.set_port_forward(server.clone());
    forwards.set_ready();
    announce(listening.local_addr());
    let name = loop {
        tokio::select! {
            () = hangups.recv() => reload(args, &server),
            name = signals.recv() => break name,
        }
    };
    forwards.set_draining();
    tracing::info!(signal = name, "shutting down");
    drop(listening);
    Ok(())
}

/// kubectl proxy's line, on stdout, flushed.
fn announce(addr: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Starting to serve on {addr}");
    let _ = out.flush();
}

fn reload(args: &PortForwardServerArgs, server: &Server) {
    if args.config.is_none() {
        tracing::info!("SIGHUP: no --config to read again");
        return;
    }
    match cluster(args) {
        Ok(cluster) => {
            server.set_cluster(cluster);
            tracing::info!("reloaded the objects");
        }
        Err(e) => tracing::error!("reload rejected: {e}; the objects served stay"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn args(line: &[&str]) -> PortForwardServerArgs {
        let mut argv = vec!["proxy", "port-forward-server"];
        argv.extend_from_slice(line);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::PortForwardServer(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn beyond_loopback_needs_tls_and_a_token_or_insecure() {
        assert!(check_exposure(&args(&[])).is_ok());
        assert!(check_exposure(&args(&["--listen", "[::1]:0"])).is_ok());
        let refused = check_exposure(&args(&["--listen", "0.0.0.0:8001"])).unwrap_err();
        assert!(refused.0.contains("--listen 0.0.0.0:8001"), "{refused}");
        assert!(
            refused
                .0
                .contains("TLS (--tls-cert, --tls-key) and a token (--token-file)")
        );
        let refused = check_exposure(&args(&[
            "--listen",
            "10.0.0.1:1",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
        ]))
        .unwrap_err();
        assert!(
            refused
                .0
                .contains("give a token (--token-file), or --insecure"),
            "{refused}"
        );
        assert!(check_exposure(&args(&["--listen", "0.0.0.0:8001", "--insecure"])).is_ok());
    }

    #[test]
    fn objects_from_flags() {
        let cluster = cluster(&args(&[
            "--pod",
            "web=127.0.0.1",
            "--pod",
            "shop/db=netns:/run/netns/db",
            "--service",
            "web:80=web",
        ]))
        .unwrap();
        assert!(cluster.pod("shop", "db").is_some());
        assert!(cluster.service("default", "web").is_some());
        let missing = cluster_of(&["--service", "web:80=web"]);
        assert!(
            missing.contains("lists pod `web`, which is not given"),
            "{missing}"
        );
        let twice = cluster_of(&["--pod", "web=::1", "--pod", "web=::1"]);
        assert!(twice.contains("pod default/web is given twice"), "{twice}");
    }

    fn cluster_of(line: &[&str]) -> String {
        cluster(&args(line)).unwrap_err().0
    }

    #[test]
    fn bad_tokens_are_named() {
        let err = Cli::try_parse_from(["proxy", "port-forward-server", "--pod", "Web=x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("Web=x") || err.contains("`Web`"), "{err}");
        let err = Cli::try_parse_from(["proxy", "port-forward-server", "--listen", "8001"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`8001` is not an IP:PORT address"), "{err}");
        let err = Cli::try_parse_from(["proxy", "port-forward-server", "--tls-cert", "c"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--tls-key"), "{err}");
    }

    #[test]
    fn the_token_file_is_one_word() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  abc.def\n").unwrap();
        assert_eq!(token(&path).unwrap(), "abc.def");
        std::fs::write(&path, "\n").unwrap();
        assert!(token(&path).unwrap_err().0.contains("must be one word"));
        std::fs::write(&path, "a b").unwrap();
        assert!(token(&path).is_err());
        let missing = token(&dir.path().join("nope")).unwrap_err().0;
        assert!(missing.starts_with("--token-file "), "{missing}");
    }
}
