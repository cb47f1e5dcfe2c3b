//! The mesh's PKI: one root CA, one intermediate CA per cluster, and SPIFFE workload certificates.
//!
//! Everything here is built in memory ([`pki()`], [`MeshPki::workload_cert`], [`MeshPki::cacerts`]).
//! Only the two `create_*` functions at the bottom of the module touch the file system (through
//! [`crate::atomic_files`]); they write Istio's `cacerts` layout and a workload's certificate files, key
//! files with mode 0600 from the moment they exist, never through a symlink, and never replace an
//! existing PKI unless asked to.
//!
//! Private keys are wrapped in [`PrivateKeyPem`], whose `Debug` prints `[redacted]`, so a stray
//! `{:?}` or a logged error never leaks key material.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SignatureAlgorithm,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::atomic_files::{Dir, EntryKind, Existing, OutDir, OutDirError};

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

    /// Replaces `cluster`'s intermediate CA by a new one (new key, same subject) signed by the
    /// same root, as an operator rotating `cacerts` does. Certificates issued afterwards chain to
    /// the new intermediate; ones issued before still verify, since peers trust only the root.
    pub fn rotate_intermediate(&mut self, cluster: &str) -> Result<(), PkiError> {
        self.intermediate(cluster)?;
        let rotated = mk_intermediate_ca(cluster, &self.root, self.algorithm, OffsetDateTime::now_utc())?;
        self.intermediates.insert(cluster.to_owned(), rotated);
        Ok(())
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

/// What [`create_cacerts_dir`] does when the output directory already holds a PKI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExistingPki {
    /// Refuse and change nothing (the default): clusters that trust the old root would reject
    /// every certificate of a new one.
    #[default]
    Keep,
    /// Replace the whole directory in one step (`meshfed certs --force`).
    Replace,
}

/// Why [`create_cacerts_dir`] wrote nothing, or could not finish (then the old directory is intact).
#[derive(Debug, thiserror::Error)]
pub enum CacertsDirError {
    /// The output path cannot be used (not a directory, the current directory, …).
    #[error(transparent)]
    Out(#[from] OutDirError),
    /// The output path is a symlink: its target (perhaps a PKI some cluster trusts) would be
    /// replaced through it, so it is refused, also with [`ExistingPki::Replace`].
    #[error(
        "{dir} is a symlink (to {target}); meshfed never writes a PKI through a symlink, also not with \
         --force; nothing was changed. Name the directory itself with --out"
    )]
    Symlink {
        /// The output directory as given.
        dir: PathBuf,
        /// Where it resolves to.
        target: PathBuf,
    },
    /// A PKI is there and [`ExistingPki::Keep`] was asked for.
    #[error(
        "{dir} already holds a PKI ({files}); meshfed never replaces one unasked, because clusters \
         that trust its root would reject certificates issued by a new one; pass --force to replace it"
    )]
    Exists {
        /// The output directory.
        dir: PathBuf,
        /// Some of the existing files, relative to `dir`, comma-separated.
        files: String,
    },
    /// The directory holds something a meshfed PKI never has (other files, symlinks): replacing it
    /// could destroy the user's data, so not even [`ExistingPki::Replace`] does.
    #[error(
        "{dir} holds {entries}, which meshfed did not write (a PKI has only root-ca/ and one \
         directory of cacerts files per cluster, and never a symlink); refusing to replace it, also \
         with --force; choose another --out"
    )]
    Foreign {
        /// The output directory.
        dir: PathBuf,
        /// The offending entries, relative to `dir`, comma-separated.
        entries: String,
    },
    /// A cluster's `cacerts` could not be built.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Reading the old directory or writing the new one failed; the old one is unchanged.
    #[error("failed to write the PKI to {dir} (any earlier PKI there is unchanged)")]
    Write {
        /// The output directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl CacertsDirError {
    /// True when the user can fix it by choosing another path or `--force` (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            CacertsDirError::Out(error) => error.is_bad_input(),
            CacertsDirError::Exists { .. } | CacertsDirError::Foreign { .. } | CacertsDirError::Symlink { .. } => true,
            CacertsDirError::Pki(_) | CacertsDirError::Write { .. } => false,
        }
    }
}

/// Writes `out/<cluster>/{ca-cert,ca-key,root-cert,cert-chain}.pem` for every cluster (Istio's
/// `cacerts` layout) and `out/root-ca/{root-cert,root-key}.pem`. Returns the paths written.
///
/// The whole tree is built in a temporary sibling of `out` and swapped in with one rename, so
/// `out` always holds either the complete old PKI or the complete new one. An existing PKI is
/// replaced only with [`ExistingPki::Replace`]; a directory holding anything else (or any
/// symlink), or an `out` that is itself a symlink, is never replaced. Nothing is written through a symlink. Key files are created with
/// mode 0600 (never chmod-ed later), certificates 0644, directories 0700.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use meshfed::pki::{self, ExistingPki, KeyAlgorithm};
/// let mesh = pki::pki("cluster.local", &["cluster1"], KeyAlgorithm::default())?;
/// pki::create_cacerts_dir(&mesh, "pki".as_ref(), ExistingPki::Keep)?;
/// # Ok(()) }
/// ```
pub fn create_cacerts_dir(pki: &MeshPki, out: &Path, existing: ExistingPki) -> Result<Vec<PathBuf>, CacertsDirError> {
    let out_dir = OutDir::resolve(out)?;
    if out_dir.via_symlink() {
        return Err(CacertsDirError::Symlink {
            dir: out.to_path_buf(),
            target: out_dir.path().to_path_buf(),
        });
    }
    let write_error = |source| CacertsDirError::Write {
        dir: out.to_path_buf(),
        source,
    };
    if let Existing::Directory(old) = out_dir.existing().map_err(write_error)? {
        let survey = survey_pki_dir(&old).map_err(write_error)?;
        if !survey.foreign.is_empty() {
            return Err(CacertsDirError::Foreign {
                dir: out.to_path_buf(),
                entries: abbreviate(&survey.foreign),
            });
        }
        if !survey.pki_files.is_empty() && existing == ExistingPki::Keep {
            return Err(CacertsDirError::Exists {
                dir: out.to_path_buf(),
                files: abbreviate(&survey.pki_files),
            });
        }
    }

    let mut files: Vec<(PathBuf, PemFile<'_>)> = vec![
        (ROOT_CA_DIR.into(), public_file(ROOT_CERT_FILE, pki.root_cert_pem())),
        (
            ROOT_CA_DIR.into(),
            private_key_file(ROOT_KEY_FILE, pki.root().key_pem()),
        ),
    ];
    let cacerts = pki
        .clusters()
        .map(|cluster| Ok((cluster, pki.cacerts(cluster)?)))
        .collect::<Result<Vec<_>, PkiError>>()?;
    for (cluster, cacerts) in &cacerts {
        files.extend(cacerts.files().map(|file| (PathBuf::from(cluster), file)));
    }

    let staged = out_dir.stage(PRIVATE_DIR_MODE).map_err(write_error)?;
    let mut written = Vec::new();
    for (dir, file) in files {
        let relative = dir.join(file.name);
        staged
            .dir()
            .create_file_at(&relative, file.contents.as_bytes(), file_mode(&file), PRIVATE_DIR_MODE)
            .map_err(write_error)?;
        written.push(out.join(relative));
    }
    staged.commit().map_err(write_error)?;
    Ok(written)
}

/// Writes a workload's `cert-chain.pem`, `key.pem` (mode 0600) and `root-cert.pem` into `dir`,
/// each replaced in one step.
pub fn create_workload_files(cert: &WorkloadCert, dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(|error| with_path("failed to create directory", dir, error))?;
    let handle = Dir::open(dir).map_err(|error| with_path("failed to open directory", dir, error))?;
    for file in cert.files() {
        handle
            .write_file_atomic(file.name, file.contents.as_bytes(), file_mode(&file))
            .map_err(|error| with_path("failed to write", &dir.join(file.name), error))?;
    }
    Ok(())
}

const PRIVATE_DIR_MODE: u32 = 0o700;

fn file_mode(file: &PemFile<'_>) -> u32 {
    if file.is_private_key { 0o600 } else { 0o644 }
}

/// What an existing `certs` output directory holds.
struct PkiSurvey {
    /// Files of a PKI layout, relative to the directory, root CA first.
    pki_files: Vec<String>,
    /// Anything else: other names, symlinks, special files.
    foreign: Vec<String>,
}

/// Sorts the entries of an old output directory into PKI files and everything else, without
/// following a symlink.
fn survey_pki_dir(dir: &Dir) -> io::Result<PkiSurvey> {
    let mut survey = PkiSurvey {
        pki_files: Vec::new(),
        foreign: Vec::new(),
    };
    let mut names = dir.names()?;
    // The root CA first: it is what a user most needs to hear about.
    names.sort_by_key(|name| name != ROOT_CA_DIR);
    for name in names {
        let shown = name.to_string_lossy().into_owned();
        match dir.entry(&name)? {
            Some(EntryKind::Directory) => {}
            Some(kind) => {
                survey.foreign.push(describe(&shown, kind));
                continue;
            }
            None => continue,
        }
        let allowed: &[&str] = if name == ROOT_CA_DIR {
            &[ROOT_CERT_FILE, ROOT_KEY_FILE]
        } else {
            &[CA_CERT_FILE, CA_KEY_FILE, ROOT_CERT_FILE, CERT_CHAIN_FILE]
        };
        let subdir = dir.open_dir(&name)?;
        for file in subdir.names()? {
            let shown = format!("{shown}/{}", file.to_string_lossy());
            match subdir.entry(&file)? {
                Some(EntryKind::File) if allowed.iter().any(|allowed| file == *allowed) => survey.pki_files.push(shown),
                Some(kind) => survey.foreign.push(describe(&shown, kind)),
                None => {}
            }
        }
    }
    Ok(survey)
}

fn describe(shown: &str, kind: EntryKind) -> String {
    match kind {
        EntryKind::Symlink => format!("{shown} (a symlink)"),
        EntryKind::Directory => format!("{shown}/"),
        EntryKind::File => shown.to_owned(),
        EntryKind::Other => format!("{shown} (a special file)"),
    }
}

/// The first few items, comma-separated, then how many more.
fn abbreviate(items: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut text = items.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > SHOWN {
        text.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    text
}

fn with_path(what: &str, path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}
