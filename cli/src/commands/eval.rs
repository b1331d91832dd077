//! `certgate eval`: the decision a table makes for a certificate or an identity, through the
//! same engine the filter runs.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use ruleset::{Action, Engine, PeerBuilder};

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
    let mut builder = PeerBuilder::new()
        .identity(args.identity.clone())
        .port(args.port)
        .sni(args.sni.clone())
        .source_ip(args.source_ip)
        .tls_version_text(args.tls_version.as_deref())
        .map_err(|e| anyhow!("{e}"))?;
    if let Some(path) = &args.cert {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
        builder = builder
            .cert_pem_or_der(&bytes)
            .map_err(|e| anyhow!("`{}` {e}", path.display()))?;
    }
    let peer = builder
        .build()
        .map_err(|_| anyhow!("give --cert or --identity"))?;
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
