//! The typed, in-memory form of a compiled table. The compiler builds it, `encode`
//! turns it into bytes, `decode` turns bytes back into it, and `eval` decides on it.

use std::net::IpAddr;

/// What a policy does with its decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Deny decisions close the connection.
    Enforce,
    /// Every decision is recorded; nothing is rejected.
    Audit,
}

/// The outcome a rule or the default asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let the connection through.
    Allow,
    /// Reject the connection.
    Deny,
}

/// Which decisions produce an audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditLog {
    /// Every decision.
    All,
    /// Deny decisions (and audit-mode would-deny decisions) only.
    Deny,
    /// No audit records.
    None,
}

/// A TLS protocol version, ordered oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// TLS 1.0
    V1_0,
    /// TLS 1.1
    V1_1,
    /// TLS 1.2
    V1_2,
    /// TLS 1.3
    V1_3,
}

/// A named elliptic curve of an ECDSA key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Curve {
    /// NIST P-256 (secp256r1)
    P256,
    /// NIST P-384 (secp384r1)
    P384,
    /// NIST P-521 (secp521r1)
    P521,
}

/// A hash function used in a certificate signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SigHash {
    /// MD5 (broken)
    Md5,
    /// SHA-1 (broken for certificates)
    Sha1,
    /// SHA-224
    Sha224,
    /// SHA-256
    Sha256,
    /// SHA-384
    Sha384,
    /// SHA-512
    Sha512,
    /// The algorithm has no separate hash (Ed25519) or it is not known to certgate.
    Other,
}

/// Key constraints. `None` in a field means that key type is not allowed at all,
/// unless the whole `KeyPolicy` is absent from [`Constraints`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPolicy {
    /// Minimum RSA modulus size in bits; `None` forbids RSA keys.
    pub rsa_min_bits: Option<u32>,
    /// Allowed ECDSA curves; empty forbids ECDSA keys.
    pub ecdsa_curves: Vec<Curve>,
    /// Whether Ed25519 keys are allowed.
    pub ed25519: bool,
}

/// Certificate and connection constraints checked before any rule (decision step 3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Constraints {
    /// Lowest TLS version accepted; `None` accepts whatever Envoy negotiated.
    pub min_tls: Option<TlsVersion>,
    /// Trust domains a peer's SPIFFE ID must belong to; empty accepts any.
    pub trust_domains: Vec<String>,
    /// Longest accepted `notAfter - notBefore`, in seconds.
    pub max_lifetime_secs: Option<u64>,
    /// Accepted key types and sizes; `None` accepts any key.
    pub keys: Option<KeyPolicy>,
    /// Signature hash functions that are refused.
    pub forbid_sig_hashes: Vec<SigHash>,
}

/// An inclusive destination port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port in the range.
    pub start: u16,
    /// Last port in the range (>= `start`).
    pub end: u16,
}

/// A source address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// Network address (host bits are zero).
    pub addr: IpAddr,
    /// Prefix length: at most 32 for IPv4, 128 for IPv6.
    pub prefix: u8,
}

/// One rule: it matches a peer when every present condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Unique name, reported with each decision the rule makes.
    pub name: String,
    /// Index into [`Table::policy_names`] of the policy that declared the rule.
    pub policy: u16,
    /// What the rule decides when it matches.
    pub action: Action,
    /// SPIFFE ID patterns; the identity must match one. Empty means any identity.
    pub principals: Vec<crate::Pattern>,
    /// SPIFFE ID patterns the identity must match none of.
    pub not_principals: Vec<crate::Pattern>,
    /// Destination ports; empty means any port.
    pub ports: Vec<PortRange>,
    /// Requested server names (exact, or `*.` + suffix for one label); empty means any.
    pub sni: Vec<String>,
    /// Source address blocks; empty means any source.
    pub source_cidrs: Vec<Cidr>,
}

/// A compiled table: everything the engine needs to decide, and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Names of the policies compiled into this table, in compile order.
    pub policy_names: Vec<String>,
    /// SHA-256 over the policy sources the compiler read; identifies this policy version.
    pub policy_digest: [u8; 32],
    /// When the compiler issued the table, in Unix milliseconds; strictly increasing
    /// within one lineage, so a feed can refuse an older table (rollback).
    pub issued_at_ms: u64,
    /// When the table's data stops being current (the earliest CRL `nextUpdate`, or the
    /// policy's `revocation.maxAge`), in Unix milliseconds; `None`: no expiry.
    pub expires_at_ms: Option<u64>,
    /// The Ed25519 public key the table's signature trailer names, as decoded: a claim,
    /// not trusted until [`crate::signature::verify`] checked it against pinned keys.
    /// The encoder ignores it (it writes unsigned tables; the compiler signs them).
    pub signer: Option<[u8; 32]>,
    /// Enforce or audit.
    pub mode: Mode,
    /// Decision when no rule matches.
    pub default_action: Action,
    /// Which decisions are recorded.
    pub audit_log: AuditLog,
    /// Checks before the rules.
    pub constraints: Constraints,
    /// Revoked certificates.
    pub revocation: crate::Revocation,
    /// Rules in policy order (deny rules are tried before allow rules at evaluation).
    pub rules: Vec<Rule>,
}

macro_rules! keyword_enum {
    ($ty:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            /// The keyword used in policies, tables and audit records.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s),+ }
            }
            /// Parses the keyword written by [`Self::as_str`].
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($ty::$variant),)+ _ => None }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword_enum!(Mode { Enforce => "enforce", Audit => "audit" });
keyword_enum!(Action { Allow => "allow", Deny => "deny" });
keyword_enum!(AuditLog { All => "all", Deny => "deny", None => "none" });
keyword_enum!(Curve { P256 => "P-256", P384 => "P-384", P521 => "P-521" });
keyword_enum!(SigHash {
    Md5 => "md5", Sha1 => "sha1", Sha224 => "sha224", Sha256 => "sha256",
    Sha384 => "sha384", Sha512 => "sha512", Other => "other",
});

impl TlsVersion {
    /// Every version, oldest first.
    pub const ALL: [TlsVersion; 4] = [
        TlsVersion::V1_0,
        TlsVersion::V1_1,
        TlsVersion::V1_2,
        TlsVersion::V1_3,
    ];

    /// The policy form: `1.0` … `1.3`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_0 => "1.0",
            TlsVersion::V1_1 => "1.1",
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }

    /// The form Envoy reports in `connection.tls_version`: `TLSv1.3`.
    pub fn as_envoy(self) -> &'static str {
        match self {
            TlsVersion::V1_0 => "TLSv1",
            TlsVersion::V1_1 => "TLSv1.1",
            TlsVersion::V1_2 => "TLSv1.2",
            TlsVersion::V1_3 => "TLSv1.3",
        }
    }

    /// Parses `1.2`, `TLSv1.2` (Envoy's form) and `TLSv1` (TLS 1.0).
    pub fn parse(s: &str) -> Option<TlsVersion> {
        let s = s.trim();
        let bare = s.strip_prefix("TLSv").unwrap_or(s);
        match bare {
            "1" | "1.0" => Some(TlsVersion::V1_0),
            "1.1" => Some(TlsVersion::V1_1),
            "1.2" => Some(TlsVersion::V1_2),
            "1.3" => Some(TlsVersion::V1_3),
            _ => None,
        }
    }
}

impl std::fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PortRange {
    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }

    /// Whether every port of `other` lies in this range.
    pub fn covers(&self, other: &PortRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// Why a string is not a source address block.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CidrError {
    /// Not `ADDRESS/PREFIX` or a plain address, or the prefix is too long.
    Invalid,
    /// The address has bits set beyond the prefix; `network` is what was probably meant.
    HostBits {
        /// The block with the host bits cleared.
        network: Cidr,
    },
}

impl std::fmt::Display for CidrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CidrError::Invalid => f.write_str("not an address block such as `10.0.0.0/8`"),
            CidrError::HostBits { network } => {
                write!(f, "host bits are set (the block is `{network}`)")
            }
        }
    }
}

impl std::error::Error for CidrError {}

/// `addr` with every bit after the first `prefix` cleared.
fn network_of(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX
                .checked_shl(32u32.saturating_sub(u32::from(prefix)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX
                .checked_shl(128u32.saturating_sub(u32::from(prefix)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl Cidr {
    /// A block, if `prefix` fits the family and no host bit is set.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max && network_of(addr, prefix) == addr).then_some(Cidr { addr, prefix })
    }

    /// Parses `10.0.0.0/8`, `fd00::/8`, or a single address (a full-length prefix).
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::Invalid)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| CidrError::Invalid)?
            }
            Some(_) => return Err(CidrError::Invalid),
        };
        if prefix > max {
            return Err(CidrError::Invalid);
        }
        Cidr::new(addr, prefix).ok_or(CidrError::HostBits {
            network: Cidr {
                addr: network_of(addr, prefix),
                prefix,
            },
        })
    }

    /// Whether `ip` lies in the block. IPv4-mapped IPv6 addresses match IPv4 blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && network_of(ip, self.prefix) == self.addr
    }

    /// Whether every address of `other` lies in this block.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && self.prefix <= other.prefix
            && network_of(other.addr, self.prefix) == self.addr
    }
}

/// `8443`, or `8000-8100` for a range, as policies write ports.
impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The connection facts beyond the certificate that a table decides with. A host reads
/// only these for a decision (every read of a connection attribute costs it something);
/// an audit record, which shows them all, may read the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    /// The negotiated TLS version (`minVersion`).
    pub tls_version: bool,
    /// The destination port (a rule with `ports`).
    pub port: bool,
    /// The requested server name (a rule with `sni`).
    pub sni: bool,
    /// The source address (a rule with `sourceCidrs`).
    pub source: bool,
}

impl Inputs {
    /// No connection fact: the table decides on the certificate alone.
    pub const NONE: Inputs = Inputs {
        tls_version: false,
        port: false,
        sni: false,
        source: false,
    };

    /// Every connection fact.
    pub const ALL: Inputs = Inputs {
        tls_version: true,
        port: true,
        sni: true,
        source: true,
    };
}

impl Table {
    /// Establishes the table invariants (see [`Revocation::normalize`]).
    pub fn normalize(&mut self) {
        self.revocation.normalize();
    }

    /// The connection facts this table decides with: the TLS version under
    /// `minVersion`, and the port, server name and source address when some rule has
    /// that condition (a rule's conditions are exactly these and its principals).
    pub fn inputs(&self) -> Inputs {
        let rules = &self.rules;
        Inputs {
            tls_version: self.constraints.min_tls.is_some(),
            port: rules.iter().any(|r| !r.ports.is_empty()),
            sni: rules.iter().any(|r| !r.sni.is_empty()),
            source: rules.iter().any(|r| !r.source_cidrs.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn cidr_parse() {
        assert_eq!(c("10.0.0.0/8").prefix, 8);
        assert_eq!(c("10.1.2.3").prefix, 32);
        assert_eq!(c("fd00::/8").prefix, 8);
        assert_eq!(c("0.0.0.0/0").prefix, 0);
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "nope",
            "fd00::/129",
        ] {
            assert_eq!(Cidr::parse(bad), Err(CidrError::Invalid), "{bad}");
        }
        assert_eq!(
            Cidr::parse("10.1.2.3/8"),
            Err(CidrError::HostBits {
                network: c("10.0.0.0/8")
            })
        );
    }

    #[test]
    fn cidr_contains_and_covers() {
        assert!(c("10.0.0.0/8").contains("10.255.0.1".parse().unwrap()));
        assert!(!c("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(c("10.0.0.0/8").contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!c("fd00::/8").contains("10.0.0.1".parse().unwrap()));
        assert!(c("0.0.0.0/0").contains("192.168.1.1".parse().unwrap()));
        assert!(c("10.0.0.0/8").covers(&c("10.1.0.0/16")));
        assert!(!c("10.1.0.0/16").covers(&c("10.0.0.0/8")));
        assert!(!c("10.0.0.0/8").covers(&c("fd00::/8")));
        assert!(c("0.0.0.0/0").covers(&c("192.168.1.1/32")));
    }
}
