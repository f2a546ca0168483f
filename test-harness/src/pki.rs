//! Certificates made at test time with the `openssl` command line, for TLS listeners and
//! client certificates (mTLS, RFC 8705 certificate-bound tokens).
//!
//! A [`Pki`] is a fresh directory under `target/pki-runs/` holding a CA (P-256, valid for one
//! day), a server certificate for `localhost` and `127.0.0.1` signed by it, and any client
//! certificates asked for with [`Pki::client`], each with an optional URI SAN (a SPIFFE id).
//! Nothing here is committed or reused: the keys are generated on every run and the directory
//! is removed when the [`Pki`] is dropped. A missing `openssl` is an error naming it, never a
//! skipped test.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::envoy::repo_root;
use crate::idp::b64url;

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Cert {
    /// The certificate, PEM text.
    pub fn cert_pem(&self) -> String {
        read(&self.cert)
    }

    /// The private key, PEM text.
    pub fn key_pem(&self) -> String {
        read(&self.key)
    }

    /// The certificate's DER encoding (converted by `openssl x509 -outform der`).
    pub fn der(&self) -> Vec<u8> {
        let path = self.cert.to_string_lossy().into_owned();
        openssl(&["x509", "-in", &path, "-outform", "der"], None)
    }

    /// RFC 8705 §3.1 `x5t#S256`: base64url (no padding) of SHA-256 of the DER certificate.
    pub fn x5t_s256(&self) -> String {
        b64url(Sha256::digest(self.der()))
    }
}

/// A throw-away CA with a server certificate; removed when dropped.
pub struct Pki {
    dir: PathBuf,
    pub ca: Cert,
    /// `CN=localhost`, SANs `DNS:localhost` and `IP:127.0.0.1`, signed by [`ca`](Self::ca).
    pub server: Cert,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Runs `openssl args…` (in `dir` when given) and returns its stdout; panics with its stderr.
fn openssl(args: &[&str], dir: Option<&Path>) -> Vec<u8> {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

impl Pki {
    /// A new CA and server certificate in a fresh directory.
    pub fn new() -> Pki {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = repo_root().join("target/pki-runs").join(format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=Portcullis test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            Some(&dir),
        );
        let ca = Cert { cert: dir.join("ca.pem"), key: dir.join("ca.key") };
        let mut pki = Pki { dir, ca, server: Cert { cert: PathBuf::new(), key: PathBuf::new() } };
        pki.server = pki.issue(
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        pki
    }

    /// A client certificate `CN=<name>` signed by the CA, with `uri_san` as its URI SAN when
    /// given (e.g. `spiffe://cluster.local/ns/shop/sa/web`).
    pub fn client(&self, name: &str, uri_san: Option<&str>) -> Cert {
        let mut ext = String::from("extendedKeyUsage=clientAuth\n");
        if let Some(uri) = uri_san {
            ext.push_str(&format!("subjectAltName=URI:{uri}\n"));
        }
        self.issue(name, name, &ext)
    }

    /// Issues `<file>.pem` / `<file>.key` for `CN=<cn>` with the extensions `ext`.
    fn issue(&self, file: &str, cn: &str, ext: &str) -> Cert {
        assert!(file.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "file name {file:?}");
        let (key, csr, pem, extfile) =
            (format!("{file}.key"), format!("{file}.csr"), format!("{file}.pem"), format!("{file}.ext"));
        std::fs::write(self.dir.join(&extfile), ext).unwrap_or_else(|e| panic!("cannot write {extfile}: {e}"));
        let subject = format!("/CN={cn}");
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &subject,
            ],
            Some(&self.dir),
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                &extfile,
            ],
            Some(&self.dir),
        );
        Cert { cert: self.dir.join(pem), key: self.dir.join(key) }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_chain_to_the_ca_and_carry_their_sans() {
        let pki = Pki::new();
        let web = pki.client("web", Some("spiffe://cluster.local/ns/shop/sa/web"));
        let ca = pki.ca.cert.to_string_lossy().into_owned();
        for cert in [&pki.server, &web] {
            let path = cert.cert.to_string_lossy().into_owned();
            let out = String::from_utf8(openssl(&["verify", "-CAfile", &ca, &path], None)).unwrap();
            assert!(out.trim().ends_with("OK"), "{out}");
        }
        let text = |c: &Cert| {
            let path = c.cert.to_string_lossy().into_owned();
            String::from_utf8(openssl(&["x509", "-in", &path, "-noout", "-text"], None)).unwrap()
        };
        assert!(text(&web).contains("URI:spiffe://cluster.local/ns/shop/sa/web"));
        assert!(text(&pki.server).contains("IP Address:127.0.0.1"));
        assert!(web.key_pem().contains("PRIVATE KEY"));
        // x5t#S256: SHA-256 of the DER, base64url without padding (43 characters).
        let t = web.x5t_s256();
        assert_eq!((t.len(), t.contains('=')), (43, false));
        assert_eq!(t, b64url(Sha256::digest(web.der())));
        assert_ne!(t, pki.client("other", None).x5t_s256());
        let dir = pki.dir.clone();
        drop(pki);
        assert!(!dir.exists(), "removed on drop");
    }
}
