//! The mesh's PKI: one root CA, one intermediate CA per cluster, and SPIFFE workload certificates.
//!
//! Everything here is built in memory ([`pki()`], [`MeshPki::workload_cert`], [`MeshPki::cacerts`]).
//! Only the two `create_*` functions at the bottom of the module touch the file system; they write
//! Istio's `cacerts` layout and a workload's certificate files, key files with mode 0600 from the
//! moment they exist.
//!
//! Private keys are wrapped in [`PrivateKeyPem`], whose `Debug` prints `[redacted]`, so a stray
//! `{:?}` or a logged error never leaks key material.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SignatureAlgorithm,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// The trust domain Istio uses unless configured otherwise.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Subject organisation of every certificate meshfed issues.
pub const SUBJECT_ORGANIZATION: &str = "meshfed";

/// How far back every certificate's `notBefore` is set, so peers whose clocks lag still accept it.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::hours(1);
/// Root CA lifetime, counted from issuance.
pub const ROOT_CA_VALIDITY: Duration = Duration::days(10 * 365);
/// Intermediate (per-cluster) CA lifetime, counted from issuance.
pub const INTERMEDIATE_CA_VALIDITY: Duration = Duration::days(365);
/// Workload certificate lifetime, counted from issuance (`notBefore` is a further
/// [`CLOCK_SKEW_ALLOWANCE`] earlier).
pub const WORKLOAD_CERT_VALIDITY: Duration = Duration::hours(24);

/// File names of Istio's `cacerts` secret (plugged-in CA certificates), one set per cluster.
pub const CA_CERT_FILE: &str = "ca-cert.pem";
/// The intermediate CA's private key in the `cacerts` layout.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The root CA certificate, both in the `cacerts` layout and in a workload's files.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// `cacerts`: intermediate then root. Workload files: leaf then intermediate.
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
/// A workload's private key (Istio 1.1 file layout).
pub const WORKLOAD_KEY_FILE: &str = "key.pem";
/// Directory under the `certs` output directory that holds the root CA; never shipped to a cluster.
pub const ROOT_CA_DIR: &str = "root-ca";
/// The root CA's private key, inside [`ROOT_CA_DIR`].
pub const ROOT_KEY_FILE: &str = "root-key.pem";

/// Key (and signature) algorithm of every key in a [`MeshPki`].
///
/// Deserialises from `"ecdsa-p256"` (the default, what Istio uses) or `"ecdsa-p384"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256.
    #[default]
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
}

impl KeyAlgorithm {
    /// Every supported algorithm, in the order error messages list them.
    pub const ALL: [KeyAlgorithm; 2] = [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384];

    /// The name used in scenario files and on the command line, e.g. `"ecdsa-p256"`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
        }
    }

    fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = PkiError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        KeyAlgorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.as_str() == name)
            .ok_or_else(|| PkiError::UnknownKeyAlgorithm {
                name: name.to_owned(),
                allowed: KeyAlgorithm::ALL.map(KeyAlgorithm::as_str).join(", "),
            })
    }
}

/// A PEM-encoded (PKCS#8) private key. `Debug` shows `[redacted]`; there is no `Display`.
///
/// Use [`PrivateKeyPem::expose_pem`] only where the key is meant to go: a key file or a Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(String);

impl PrivateKeyPem {
    /// The PEM text of the key, for writing it where it belongs.
    pub fn expose_pem(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem([redacted])")
    }
}

/// What went wrong while building the PKI or issuing a certificate.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A trust domain, namespace, service account or cluster name cannot be used.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidName {
        /// What the value was meant to be ("trust domain", "namespace", ...).
        kind: &'static str,
        /// The rejected value.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The same cluster was listed twice.
    #[error("cluster {cluster:?} is listed more than once")]
    DuplicateCluster {
        /// The repeated cluster name.
        cluster: String,
    },
    /// A certificate was requested for a cluster that has no intermediate CA.
    #[error("no intermediate CA for cluster {cluster:?} (clusters: {known})")]
    UnknownCluster {
        /// The requested cluster.
        cluster: String,
        /// The clusters this PKI has, comma-separated.
        known: String,
    },
    /// A key algorithm name is not one meshfed supports.
    #[error("unknown key algorithm {name:?} (allowed: {allowed})")]
    UnknownKeyAlgorithm {
        /// The rejected name.
        name: String,
        /// The allowed names, comma-separated.
        allowed: String,
    },
    /// Key generation failed.
    #[error("failed to generate the {algorithm} key for {subject}")]
    GenerateKey {
        /// Whose key it was ("root CA", "intermediate CA of cluster cluster1", a SPIFFE id).
        subject: String,
        /// The requested algorithm.
        algorithm: KeyAlgorithm,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// Building or signing a certificate failed.
    #[error("failed to issue the certificate for {subject}")]
    IssueCertificate {
        /// Whose certificate it was.
        subject: String,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
}

/// A certificate authority: its certificate, its key, and what rcgen needs to sign with it.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: PrivateKeyPem,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key.
    pub fn key_pem(&self) -> &PrivateKeyPem {
        &self.key_pem
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &self.key_pem)
            .finish_non_exhaustive()
    }
}

/// The whole mesh's PKI: a root CA and, per cluster, an intermediate CA (pathlen 0) it signed.
pub struct MeshPki {
    trust_domain: String,
    algorithm: KeyAlgorithm,
    root: CertificateAuthority,
    intermediates: BTreeMap<String, CertificateAuthority>,
}

impl fmt::Debug for MeshPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshPki")
            .field("trust_domain", &self.trust_domain)
            .field("algorithm", &self.algorithm)
            .field("root", &self.root)
            .field("intermediates", &self.intermediates)
            .finish()
    }
}

/// The four files of Istio's `cacerts` secret for one cluster, in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaCerts {
    /// `ca-cert.pem`: the cluster's intermediate CA certificate.
    pub ca_cert_pem: String,
    /// `ca-key.pem`: the intermediate CA's private key.
    pub ca_key_pem: PrivateKeyPem,
    /// `root-cert.pem`: the mesh's root CA certificate.
    pub root_cert_pem: String,
    /// `cert-chain.pem`: the intermediate certificate followed by the root certificate.
    pub cert_chain_pem: String,
}

/// One file to write: its name, its contents, and whether it is a private key (mode 0600).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PemFile<'a> {
    /// File name, without directory.
    pub name: &'static str,
    /// PEM text.
    pub contents: &'a str,
    /// True for private keys.
    pub is_private_key: bool,
}

impl fmt::Debug for PemFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let contents: &dyn fmt::Debug = if self.is_private_key {
            &"[redacted]"
        } else {
            &self.contents
        };
        f.debug_struct("PemFile")
            .field("name", &self.name)
            .field("contents", contents)
            .field("is_private_key", &self.is_private_key)
            .finish()
    }
}

impl CaCerts {
    /// The files of the `cacerts` secret, exactly these four, with Istio's names.
    pub fn files(&self) -> [PemFile<'_>; 4] {
        [
            public_file(CA_CERT_FILE, &self.ca_cert_pem),
            private_key_file(CA_KEY_FILE, &self.ca_key_pem),
            public_file(ROOT_CERT_FILE, &self.root_cert_pem),
            public_file(CERT_CHAIN_FILE, &self.cert_chain_pem),
        ]
    }
}

/// A workload's certificate, key and trust anchor, as Istio 1.1 mounts them into a sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadCert {
    /// The identity in the certificate's only SAN, e.g. `spiffe://cluster.local/ns/ns1/sa/foo`.
    pub spiffe_id: String,
    /// `cert-chain.pem`: the leaf certificate followed by its cluster's intermediate certificate.
    pub cert_chain_pem: String,
    /// `key.pem`: the leaf's private key.
    pub key_pem: PrivateKeyPem,
    /// `root-cert.pem`: the mesh's root CA certificate (the trust anchor for peers).
    pub root_cert_pem: String,
}

impl WorkloadCert {
    /// The workload's files with Istio's names: `cert-chain.pem`, `key.pem`, `root-cert.pem`.
    pub fn files(&self) -> [PemFile<'_>; 3] {
        [
            public_file(CERT_CHAIN_FILE, &self.cert_chain_pem),
            private_key_file(WORKLOAD_KEY_FILE, &self.key_pem),
            public_file(ROOT_CERT_FILE, &self.root_cert_pem),
        ]
    }
}

fn public_file<'a>(name: &'static str, contents: &'a str) -> PemFile<'a> {
    PemFile {
        name,
        contents,
        is_private_key: false,
    }
}

fn private_key_file<'a>(name: &'static str, key: &'a PrivateKeyPem) -> PemFile<'a> {
    PemFile {
        name,
        contents: key.expose_pem(),
        is_private_key: true,
    }
}

/// The SPIFFE identity Istio gives a Kubernetes service account:
/// `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
///
/// ```
/// assert_eq!(
///     meshfed::pki::spiffe_id("cluster.local", "ns1", "foo"),
///     "spiffe://cluster.local/ns/ns1/sa/foo"
/// );
/// ```
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// Builds a root CA and one intermediate CA (CA:TRUE, pathlen 0) per cluster, all keys of
/// `algorithm`. Workload certificates issued later carry identities in `trust_domain`.
///
/// Cluster names become directory names in [`create_cacerts_dir`], so they are restricted to
/// letters, digits, `.`, `-` and `_`, and `root-ca` is reserved.
pub fn pki(trust_domain: &str, clusters: &[&str], algorithm: KeyAlgorithm) -> Result<MeshPki, PkiError> {
    validate_trust_domain(trust_domain)?;
    let mut seen = BTreeSet::new();
    for &cluster in clusters {
        validate_cluster_name(cluster)?;
        if !seen.insert(cluster) {
            return Err(PkiError::DuplicateCluster {
                cluster: cluster.to_owned(),
            });
        }
    }

    let issued_at = OffsetDateTime::now_utc();
    let root = mk_root_ca(algorithm, issued_at)?;
    let intermediates = clusters
        .iter()
        .map(|&cluster| {
            let intermediate = mk_intermediate_ca(cluster, &root, algorithm, issued_at)?;
            Ok((cluster.to_owned(), intermediate))
        })
        .collect::<Result<BTreeMap<_, _>, PkiError>>()?;

    Ok(MeshPki {
        trust_domain: trust_domain.to_owned(),
        algorithm,
        root,
        intermediates,
    })
}

impl MeshPki {
    /// The trust domain of the identities this PKI issues.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The key algorithm of every key in this PKI.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The root CA certificate, PEM: the trust anchor of every workload in every cluster.
    pub fn root_cert_pem(&self) -> &str {
        self.root.cert_pem()
    }

    /// The root CA (certificate and key). Its key never goes into a cluster.
    pub fn root(&self) -> &CertificateAuthority {
        &self.root
    }

    /// The cluster names, sorted.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.intermediates.keys().map(String::as_str)
    }

    /// The intermediate CA of `cluster`.
    pub fn intermediate(&self, cluster: &str) -> Result<&CertificateAuthority, PkiError> {
        self.intermediates.get(cluster).ok_or_else(|| PkiError::UnknownCluster {
            cluster: cluster.to_owned(),
            known: self.clusters().collect::<Vec<_>>().join(", "),
        })
    }

    /// The contents of `cluster`'s `cacerts` secret.
    pub fn cacerts(&self, cluster: &str) -> Result<CaCerts, PkiError> {
        let intermediate = self.intermediate(cluster)?;
        Ok(CaCerts {
            ca_cert_pem: intermediate.cert_pem.clone(),
            ca_key_pem: intermediate.key_pem.clone(),
            root_cert_pem: self.root.cert_pem.clone(),
            cert_chain_pem: format!("{}{}", intermediate.cert_pem, self.root.cert_pem),
        })
    }

    /// Issues a certificate for `namespace`/`service_account` signed by `cluster`'s intermediate:
    /// the SPIFFE id as the only (URI) SAN, digitalSignature + keyEncipherment, serverAuth +
    /// clientAuth, valid from an hour ago (clock skew) until 24 hours from now.
    pub fn workload_cert(
        &self,
        cluster: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<WorkloadCert, PkiError> {
        validate_path_segment("namespace", namespace)?;
        validate_path_segment("service account", service_account)?;
        let intermediate = self.intermediate(cluster)?;
        let identity = spiffe_id(&self.trust_domain, namespace, service_account);

        let key = generate_key(self.algorithm, &identity)?;
        let issue_error = |source| PkiError::IssueCertificate {
            subject: identity.clone(),
            source,
        };
        let uri = identity.clone().try_into().map_err(issue_error)?;

        let mut params = CertificateParams::default();
        params.distinguished_name = meshfed_subject(None, None);
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, OffsetDateTime::now_utc(), WORKLOAD_CERT_VALIDITY);
        let leaf = params.signed_by(&key, &intermediate.issuer).map_err(issue_error)?;

        Ok(WorkloadCert {
            cert_chain_pem: format!("{}{}", leaf.pem(), intermediate.cert_pem),
            key_pem: PrivateKeyPem(key.serialize_pem()),
            root_cert_pem: self.root.cert_pem.clone(),
            spiffe_id: identity,
        })
    }
}

fn mk_root_ca(algorithm: KeyAlgorithm, issued_at: OffsetDateTime) -> Result<CertificateAuthority, PkiError> {
    let subject = "root CA";
    let key = generate_key(algorithm, subject)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = meshfed_subject(Some("meshfed root CA"), None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, issued_at, ROOT_CA_VALIDITY);
    let cert = params.self_signed(&key).map_err(|source| PkiError::IssueCertificate {
        subject: subject.to_owned(),
        source,
    })?;
    Ok(CertificateAuthority {
        cert_pem: cert.pem(),
        key_pem: PrivateKeyPem(key.serialize_pem()),
        issuer: Issuer::new(params, key),
    })
}

fn mk_intermediate_ca(
    cluster: &str,
    root: &CertificateAuthority,
    algorithm: KeyAlgorithm,
    issued_at: OffsetDateTime,
) -> Result<CertificateAuthority, PkiError> {
    let subject = format!("intermediate CA of cluster {cluster}");
    let key = generate_key(algorithm, &subject)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = meshfed_subject(Some(&format!("meshfed intermediate CA {cluster}")), Some(cluster));
    // pathlen 0: a cluster's CA signs workloads, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, issued_at, INTERMEDIATE_CA_VALIDITY);
    let cert = params
        .signed_by(&key, &root.issuer)
        .map_err(|source| PkiError::IssueCertificate { subject, source })?;
    Ok(CertificateAuthority {
        cert_pem: cert.pem(),
        key_pem: PrivateKeyPem(key.serialize_pem()),
        issuer: Issuer::new(params, key),
    })
}

fn generate_key(algorithm: KeyAlgorithm, subject: &str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(algorithm.signature_algorithm()).map_err(|source| PkiError::GenerateKey {
        subject: subject.to_owned(),
        algorithm,
        source,
    })
}

/// `O=meshfed`, plus `CN` and `L` (Istio's sample CAs put the cluster name in `L`) when given.
fn meshfed_subject(common_name: Option<&str>, locality: Option<&str>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, SUBJECT_ORGANIZATION);
    if let Some(locality) = locality {
        name.push(DnType::LocalityName, locality);
    }
    if let Some(common_name) = common_name {
        name.push(DnType::CommonName, common_name);
    }
    name
}

fn set_validity(params: &mut CertificateParams, issued_at: OffsetDateTime, lifetime: Duration) {
    params.not_before = issued_at - CLOCK_SKEW_ALLOWANCE;
    params.not_after = issued_at + lifetime;
}

/// SPIFFE: a trust domain is lowercase letters, digits, `.`, `-`, `_`.
fn validate_trust_domain(trust_domain: &str) -> Result<(), PkiError> {
    let invalid = |reason| PkiError::InvalidName {
        kind: "trust domain",
        value: trust_domain.to_owned(),
        reason,
    };
    if trust_domain.is_empty() {
        return Err(invalid("it is empty"));
    }
    if trust_domain.len() > 255 {
        return Err(invalid("it is longer than 255 characters"));
    }
    if !trust_domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b))
    {
        return Err(invalid("only lowercase letters, digits, '.', '-' and '_' are allowed"));
    }
    Ok(())
}

/// SPIFFE: a path segment is letters, digits, `.`, `-`, `_`, and not `.` or `..`.
fn validate_path_segment(kind: &'static str, segment: &str) -> Result<(), PkiError> {
    let invalid = |reason| PkiError::InvalidName {
        kind,
        value: segment.to_owned(),
        reason,
    };
    if segment.is_empty() {
        return Err(invalid("it is empty"));
    }
    if segment == "." || segment == ".." {
        return Err(invalid("'.' and '..' are not allowed"));
    }
    if !segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b))
    {
        return Err(invalid("only letters, digits, '.', '-' and '_' are allowed"));
    }
    Ok(())
}

fn validate_cluster_name(cluster: &str) -> Result<(), PkiError> {
    validate_path_segment("cluster name", cluster)?;
    if cluster == ROOT_CA_DIR {
        return Err(PkiError::InvalidName {
            kind: "cluster name",
            value: cluster.to_owned(),
            reason: "it is reserved for the root CA's directory",
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Edge: writing the PKI to disk. Everything above is pure.
// ---------------------------------------------------------------------------------------------

/// Writes `out/<cluster>/{ca-cert,ca-key,root-cert,cert-chain}.pem` for every cluster (Istio's
/// `cacerts` layout) and `out/root-ca/{root-cert,root-key}.pem`. Returns the paths written.
///
/// Key files are created with mode 0600 (a fresh file, renamed into place, so an existing
/// world-readable file is replaced rather than reused); certificates get 0644; directories
/// meshfed creates get 0700.
pub fn create_cacerts_dir(pki: &MeshPki, out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let root_dir = out.join(ROOT_CA_DIR);
    create_private_dir(&root_dir)?;
    written.push(create_pem_file(
        &root_dir,
        public_file(ROOT_CERT_FILE, pki.root_cert_pem()),
    )?);
    written.push(create_pem_file(
        &root_dir,
        private_key_file(ROOT_KEY_FILE, pki.root().key_pem()),
    )?);
    for cluster in pki.clusters() {
        let cacerts = pki.cacerts(cluster).map_err(io::Error::other)?;
        let cluster_dir = out.join(cluster);
        create_private_dir(&cluster_dir)?;
        for file in cacerts.files() {
            written.push(create_pem_file(&cluster_dir, file)?);
        }
    }
    Ok(written)
}

/// Writes a workload's `cert-chain.pem`, `key.pem` (mode 0600) and `root-cert.pem` into `dir`.
pub fn create_workload_files(cert: &WorkloadCert, dir: &Path) -> io::Result<()> {
    create_private_dir(dir)?;
    for file in cert.files() {
        create_pem_file(dir, file)?;
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| with_path("failed to create directory", dir, error))
}

/// Writes a fresh file next to the target with its final mode, then renames it into place.
fn create_pem_file(dir: &Path, file: PemFile<'_>) -> io::Result<PathBuf> {
    let path = dir.join(file.name);
    let staging = dir.join(format!(".{}.meshfed-tmp", file.name));
    let mode = if file.is_private_key { 0o600 } else { 0o644 };
    // A leftover from a crashed run may have any mode; never reuse it.
    match fs::remove_file(&staging) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            return Err(with_path("failed to remove stale", &staging, error));
        }
        _ => {}
    }
    let write = || -> io::Result<()> {
        let mut handle = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&staging)?;
        handle.write_all(file.contents.as_bytes())?;
        handle.sync_all()
    };
    if let Err(error) = write() {
        let _ = fs::remove_file(&staging);
        return Err(with_path("failed to write", &staging, error));
    }
    fs::rename(&staging, &path).map_err(|error| with_path("failed to rename into", &path, error))?;
    Ok(path)
}

fn with_path(what: &str, path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}
