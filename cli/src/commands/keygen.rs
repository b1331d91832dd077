//! `certgate keygen`: an Ed25519 key pair for signing tables (`compile --sign-key`), and
//! the public-key forms the filter (`feed.publicKeys`) and `emit --feed-public-key` take.
//! Also the helpers that read those keys back.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ed25519_compact::{KeyPair, PublicKey};

use super::EXIT_OK;

/// Generate a table-signing key pair.
#[derive(Debug, clap::Args)]
#[command(
    about = "Generate an Ed25519 key pair for signing tables",
    after_help = "Writes the private key to OUT (PKCS#8 PEM, mode 0600; an existing file is never \
overwritten) and the public key to OUT.pub (SPKI PEM); both are what `openssl pkey` reads. Prints the \
public key as `ed25519:BASE64`, the form `feed.publicKeys` and `certgate emit --feed-public-key` take.\n\n\
Keep the private key where tables are compiled only; pin the public key in every filter. To rotate, \
pin the new public key next to the old one, roll the filter configuration out, then sign with the new key \
and finally drop the old key (docs/revocation.md).\n\n\
Exit codes: 0 written, 2 usage or I/O error (OUT exists, directory not writable).\n\n\
Examples:\n  certgate keygen -o signing.key\n  certgate compile policies/ -o table.cgt --sign-key signing.key"
)]
pub struct Args {
    /// Where to write the private key (the public key goes to OUT.pub)
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let kp = KeyPair::generate();
    let public = public_path(&args.output);
    if public.exists() {
        bail!("`{}` already exists; not overwriting it", public.display());
    }
    write_new(&args.output, kp.sk.to_pem().as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, kp.pk.to_pem().as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&args.output);
        return Err(e);
    }
    eprintln!(
        "wrote {} (private, mode 0600) and {}",
        args.output.display(),
        public.display()
    );
    println!("{}", ruleset::signature::key_id(&kp.pk));
    Ok(EXIT_OK)
}

/// `OUT.pub`.
fn public_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Creates `path` (failing if it exists) with `mode`, writes and syncs `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).with_context(|| {
        format!(
            "cannot create `{}` (an existing key is never overwritten)",
            path.display()
        )
    })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write `{}`", path.display()))
}

/// Reads a private key file written by `keygen` (or `openssl genpkey -algorithm ed25519`).
pub fn read_private(path: &Path) -> anyhow::Result<KeyPair> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    KeyPair::from_pem(&text).map_err(|_| {
        anyhow::anyhow!(
            "`{}` is not an Ed25519 private key in PKCS#8 PEM (make one with `certgate keygen`)",
            path.display()
        )
    })
}

/// A public key given as `ed25519:BASE64` (or bare base64), or as a file holding that
/// or an SPKI PEM (`keygen`'s OUT.pub, `openssl pkey -pubout`).
pub fn read_public(arg: &str) -> anyhow::Result<[u8; 32]> {
    if let Some(k) = ruleset::signature::parse_key(arg) {
        return Ok(k);
    }
    let text = std::fs::read_to_string(arg).with_context(|| {
        format!("`{arg}` is neither an `ed25519:BASE64` public key nor a readable key file")
    })?;
    if let Some(k) = ruleset::signature::parse_key(&text) {
        return Ok(k);
    }
    match PublicKey::from_pem(&text) {
        Ok(pk) => Ok(*pk),
        Err(_) => {
            bail!("`{arg}` holds no Ed25519 public key (expected SPKI PEM or `ed25519:BASE64`)")
        }
    }
}

/// Signs unsigned table bytes: appends the trailer with `kp`'s signature.
pub fn sign(bytes: &mut Vec<u8>, kp: &KeyPair) {
    let sig = kp.sk.sign(ruleset::signature::message(bytes), None);
    ruleset::signature::append_trailer(bytes, &kp.pk, &sig);
}
