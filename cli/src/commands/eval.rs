//! `certgate eval`: the decision a table makes for a certificate or an identity, through the
//! same engine the filter runs.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use ruleset::{Action, Engine, Peer, PeerCert, TlsVersion};

use super::{EXIT_FINDINGS, EXIT_OK};

/// Evaluate a table for one peer.
#[derive(Debug, clap::Args)]
#[command(
    about = "Print the decision a table makes for a certificate or a SPIFFE ID",
    group(clap::ArgGroup::new("peer").required(true).args(["cert", "identity"])),
    after_help = "Prints one JSON object: {\"action\",\"reason\",\"rule\",\"policy\",\"mode\",\"identity\"}. \
`action` is what the policy decides (in audit mode: what enforce mode would do).\n\n\
With --cert, the certificate goes through every check the filter makes (revocation, trust domain, \
key, signature, lifetime). With --identity (a what-if), revocation and certificate checks are skipped; trust domain, TLS version and rules apply.\n\n\
Exit codes: 0 a decision was printed (allow or deny), 1 the decision is deny and --fail-on-deny \
is set, 2 usage or I/O error (unreadable table or certificate).\n\n\
Examples:\n  certgate eval --table table.cgt --cert client.pem --tls-version 1.3 --port 8443\n  \
certgate eval --table table.cgt --identity spiffe://cluster.local/ns/frontend/sa/web --fail-on-deny"
)]
pub struct Args {
    /// The compiled table
    #[arg(long, value_name = "TABLE.cgt")]
    pub table: PathBuf,
    /// The peer's certificate, PEM or DER (the first certificate of a PEM bundle is the leaf)
    #[arg(long, value_name = "PEM_OR_DER")]
    pub cert: Option<PathBuf>,
    /// Evaluate the rules for this SPIFFE ID without a certificate
    #[arg(long, value_name = "SPIFFE_ID")]
    pub identity: Option<String>,
    /// Negotiated TLS version: 1.2 or 1.3 (unknown if absent)
    #[arg(long, value_name = "VERSION")]
    pub tls_version: Option<String>,
    /// Destination port
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Requested server name (SNI)
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// Source IP address of the connection
    #[arg(long, value_name = "IP")]
    pub source_ip: Option<IpAddr>,
    /// Exit 1 when the decision is deny (for scripts and CI)
    #[arg(long)]
    pub fail_on_deny: bool,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let (_, table) = super::read_table(&args.table)?;
    let cert = match (&args.cert, &args.identity) {
        (Some(path), _) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
            let certs = ruleset::cert::parse_pem_or_der(&bytes)
                .map_err(|e| anyhow!("`{}` is not a certificate: {e}", path.display()))?;
            match certs.into_iter().next() {
                Some(leaf) => PeerCert::Parsed(std::sync::Arc::new(leaf)),
                None => bail!("`{}` holds no certificate", path.display()),
            }
        }
        (None, Some(id)) => PeerCert::Assumed {
            identity: id.clone(),
        },
        (None, None) => bail!("give --cert or --identity"),
    };
    let tls_version = match &args.tls_version {
        None => None,
        Some(v) => Some(
            TlsVersion::parse(v)
                .ok_or_else(|| anyhow!("unknown TLS version `{v}`: use 1.2 or 1.3"))?,
        ),
    };
    let peer = Peer {
        cert,
        tls_version,
        port: args.port,
        sni: args.sni.clone(),
        source_ip: args.source_ip,
    };
    let engine = Engine::new(table);
    let d = engine.evaluate(&peer);
    // Keys in the documented order (serde_json's map would sort them).
    let q = |v: Option<&str>| serde_json::to_string(&v).unwrap_or_else(|_| "null".into());
    let out = format!(
        "{{\"action\":{},\"reason\":{},\"rule\":{},\"policy\":{},\"mode\":{},\"identity\":{}}}",
        q(Some(d.action.as_str())),
        q(Some(d.reason.code())),
        q(d.rule),
        q(d.policy),
        q(Some(d.mode.as_str())),
        q(d.identity)
    );
    println!("{out}");
    Ok(if args.fail_on_deny && d.action == Action::Deny {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}
