//! The mesh PKI checked by an independent verifier: the `openssl` command-line tool.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::temp_dir::{TempDir, temp_dir};

use meshfed::pki::{
    self, CacertsDirError, ExistingPki, KeyAlgorithm, MeshPki, PkiError, create_cacerts_dir, create_workload_files,
    spiffe_id,
};

/// Writes `contents` to `name` in `dir` and returns its path.
fn write_in(dir: &TempDir, name: &str, contents: &str) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, contents).unwrap();
    path
}

fn openssl(args: &[&str]) -> Output {
    Command::new("/usr/bin/openssl")
        .args(args)
        .output()
        .expect("run /usr/bin/openssl")
}

fn openssl_stdout(args: &[&str]) -> String {
    let output = openssl(args);
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `openssl req`: a new P-256 key at `key` and a signing request for `subject` at `csr`.
fn openssl_ec_csr(key: &str, csr: &str, subject: &str) {
    openssl_stdout(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        csr,
        "-subj",
        subject,
    ]);
}

/// `openssl x509 -req`: signs `csr` with `ca` and `ca_key` for a day into `out`; `extra` adds
/// options such as `-extfile`.
fn openssl_sign(csr: &str, ca: &str, ca_key: &str, extra: &[&str], out: &str) {
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-days",
        "1",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-out", out]);
    openssl_stdout(&args);
}

/// `openssl verify -CAfile root [-untrusted chain] [-attime t] leaf`; Ok(stdout) or Err(all output).
fn openssl_verify(
    root: &Path,
    untrusted: Option<&Path>,
    at_unix_time: Option<u64>,
    leaf: &Path,
) -> Result<String, String> {
    let mut args = vec!["verify".to_owned(), "-CAfile".to_owned(), path_str(root)];
    if let Some(untrusted) = untrusted {
        args.extend(["-untrusted".to_owned(), path_str(untrusted)]);
    }
    if let Some(time) = at_unix_time {
        args.extend(["-attime".to_owned(), time.to_string()]);
    }
    args.push(path_str(leaf));
    let output = Command::new("/usr/bin/openssl")
        .args(&args)
        .output()
        .expect("run /usr/bin/openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() { Ok(text) } else { Err(text) }
}

fn path_str(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// The PEM blocks of a file holding several certificates, each ending with its END line.
fn pem_blocks(pem: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    pem.split_inclusive(END)
        .map(str::trim_start)
        .filter(|block| block.contains(END))
        .map(|block| format!("{block}\n"))
        .collect()
}

fn text_of(cert: &Path) -> String {
    openssl_stdout(&["x509", "-in", &path_str(cert), "-text", "-noout"])
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn file_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|name| name.to_string()).collect()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn two_cluster_pki(algorithm: KeyAlgorithm) -> MeshPki {
    pki::pki("cluster.local", &["cluster1", "cluster2"], algorithm).unwrap()
}

#[test]
fn workload_leaf_verifies_against_root_with_intermediate_as_untrusted() {
    for algorithm in KeyAlgorithm::ALL {
        let mesh = two_cluster_pki(algorithm);
        let dir = temp_dir("verify");
        let cert = mesh.workload_cert("cluster1", "ns1", "foo").unwrap();
        let chain = pem_blocks(&cert.cert_chain_pem);
        assert_eq!(chain.len(), 2, "cert chain is leaf + intermediate");
        assert_eq!(chain[1], mesh.intermediate("cluster1").unwrap().cert_pem());

        let root = write_in(&dir, "root.pem", &cert.root_cert_pem);
        let intermediate = write_in(&dir, "intermediate.pem", &chain[1]);
        let leaf = write_in(&dir, "leaf.pem", &chain[0]);
        let verdict = openssl_verify(&root, Some(&intermediate), None, &leaf);
        assert!(verdict.is_ok(), "{algorithm}: {verdict:?}");

        // Without the intermediate the leaf alone must not verify: the root did not sign it.
        assert!(openssl_verify(&root, None, None, &leaf).is_err());
    }
}

#[test]
fn leaves_from_every_cluster_verify_against_the_shared_root() {
    let mesh = pki::pki("cluster.local", &["east", "west", "north"], KeyAlgorithm::default()).unwrap();
    let dir = temp_dir("shared-root");
    let root = write_in(&dir, "root.pem", mesh.root_cert_pem());
    for cluster in ["east", "west", "north"] {
        let cert = mesh.workload_cert(cluster, "ns2", "bar").unwrap();
        let chain = pem_blocks(&cert.cert_chain_pem);
        let leaf = write_in(&dir, &format!("{cluster}-leaf.pem"), &chain[0]);
        let own = write_in(&dir, &format!("{cluster}-int.pem"), &chain[1]);
        assert!(openssl_verify(&root, Some(&own), None, &leaf).is_ok());
        // Another cluster's intermediate is not this leaf's issuer.
        let other = if cluster == "east" { "west" } else { "east" };
        let wrong = write_in(
            &dir,
            &format!("{cluster}-wrong-int.pem"),
            mesh.intermediate(other).unwrap().cert_pem(),
        );
        assert!(openssl_verify(&root, Some(&wrong), None, &leaf).is_err());
    }
}

#[test]
fn leaf_from_another_root_fails_verification() {
    let ours = two_cluster_pki(KeyAlgorithm::default());
    let theirs = two_cluster_pki(KeyAlgorithm::default());
    let dir = temp_dir("other-root");
    let foreign = theirs.workload_cert("cluster1", "ns1", "foo").unwrap();
    let chain = pem_blocks(&foreign.cert_chain_pem);
    let our_root = write_in(&dir, "our-root.pem", ours.root_cert_pem());
    let their_root = write_in(&dir, "their-root.pem", theirs.root_cert_pem());
    let their_intermediate = write_in(&dir, "their-int.pem", &chain[1]);
    let leaf = write_in(&dir, "leaf.pem", &chain[0]);

    // Sanity: the same files do verify against the root that issued them.
    assert!(openssl_verify(&their_root, Some(&their_intermediate), None, &leaf).is_ok());
    let verdict = openssl_verify(&our_root, Some(&their_intermediate), None, &leaf);
    assert!(verdict.is_err(), "foreign leaf verified: {verdict:?}");
}

#[test]
fn intermediate_is_a_ca_with_pathlen_zero_and_root_is_an_unconstrained_ca() {
    let mesh = two_cluster_pki(KeyAlgorithm::default());
    let dir = temp_dir("ca-flags");
    let root = write_in(&dir, "root.pem", mesh.root_cert_pem());
    let intermediate = write_in(&dir, "int.pem", mesh.intermediate("cluster2").unwrap().cert_pem());

    let intermediate_text = text_of(&intermediate);
    assert!(intermediate_text.contains("CA:TRUE, pathlen:0"), "{intermediate_text}");
    assert!(intermediate_text.contains("Certificate Sign"));
    assert!(intermediate_text.contains("O = meshfed"));
    assert!(intermediate_text.contains("L = cluster2"));

    let root_text = text_of(&root);
    assert!(root_text.contains("CA:TRUE"), "{root_text}");
    assert!(!root_text.contains("pathlen"), "{root_text}");
    assert!(root_text.contains("O = meshfed"));

    assert!(openssl_verify(&root, None, None, &intermediate).is_ok());
}

#[test]
fn a_ca_signed_by_an_intermediate_is_rejected_by_pathlen_zero() {
    let mesh = two_cluster_pki(KeyAlgorithm::default());
    let dir = temp_dir("pathlen");
    let cacerts = mesh.cacerts("cluster1").unwrap();
    let root = write_in(&dir, "root.pem", &cacerts.root_cert_pem);
    let intermediate = write_in(&dir, "int.pem", &cacerts.ca_cert_pem);
    let intermediate_key = write_in(&dir, "int-key.pem", cacerts.ca_key_pem.expose_pem());
    let (int_s, int_key_s) = (path_str(&intermediate), path_str(&intermediate_key));
    let d = |name: &str| path_str(&dir.path().join(name));

    // openssl mints a sub-CA under our intermediate, then a leaf under that sub-CA.
    openssl_ec_csr(&d("sub-key.pem"), &d("sub.csr"), "/CN=rogue sub CA");
    fs::write(
        dir.path().join("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=keyCertSign\n",
    )
    .unwrap();
    openssl_sign(
        &d("sub.csr"),
        &int_s,
        &int_key_s,
        &["-extfile", &d("ca.ext")],
        &d("sub.pem"),
    );
    openssl_ec_csr(&d("rogue-key.pem"), &d("rogue.csr"), "/CN=rogue");
    openssl_sign(&d("rogue.csr"), &d("sub.pem"), &d("sub-key.pem"), &[], &d("rogue.pem"));
    let untrusted = write_in(
        &dir,
        "untrusted.pem",
        &(fs::read_to_string(dir.path().join("sub.pem")).unwrap() + &cacerts.ca_cert_pem),
    );

    let sub_ca = openssl_verify(&root, Some(&intermediate), None, &dir.path().join("sub.pem"));
    assert!(sub_ca.is_ok(), "the sub-CA itself is within pathlen: {sub_ca:?}");
    let verdict = openssl_verify(&root, Some(&untrusted), None, &dir.path().join("rogue.pem"));
    let error = verdict.expect_err("a leaf two CAs below the intermediate must not verify");
    assert!(error.contains("path length"), "{error}");
}

#[test]
fn leaf_uri_san_is_exactly_the_spiffe_id_and_usages_are_mtls() {
    let mesh = pki::pki("example.org", &["cluster1"], KeyAlgorithm::default()).unwrap();
    let cert = mesh.workload_cert("cluster1", "ns2", "bar").unwrap();
    assert_eq!(cert.spiffe_id, "spiffe://example.org/ns/ns2/sa/bar");

    let dir = temp_dir("san");
    let leaf = write_in(&dir, "leaf.pem", &pem_blocks(&cert.cert_chain_pem)[0]);
    let san = openssl_stdout(&["x509", "-in", &path_str(&leaf), "-noout", "-ext", "subjectAltName"]);
    let entries: Vec<&str> = san
        .lines()
        .skip_while(|line| !line.contains("Subject Alternative Name"))
        .skip(1)
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    assert_eq!(entries, vec![format!("URI:{}", cert.spiffe_id)], "{san}");

    let text = text_of(&leaf);
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("Digital Signature, Key Encipherment"), "{text}");
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("Subject: O = meshfed"), "{text}");
}

#[test]
fn leaf_is_valid_from_an_hour_ago_for_a_day() {
    let mesh = two_cluster_pki(KeyAlgorithm::default());
    let cert = mesh.workload_cert("cluster1", "ns1", "foo").unwrap();
    let dir = temp_dir("validity");
    let chain = pem_blocks(&cert.cert_chain_pem);
    let root = write_in(&dir, "root.pem", &cert.root_cert_pem);
    let intermediate = write_in(&dir, "int.pem", &chain[1]);
    let leaf = write_in(&dir, "leaf.pem", &chain[0]);
    let now = unix_now();

    // A peer whose clock is 50 minutes behind still accepts it; one 2 hours behind does not.
    let lagging = openssl_verify(&root, Some(&intermediate), Some(now - 50 * 60), &leaf);
    assert!(lagging.is_ok(), "{lagging:?}");
    assert!(openssl_verify(&root, Some(&intermediate), Some(now - 2 * 3600), &leaf).is_err());

    // `-checkend N` exits 0 when the certificate is still valid N seconds from now.
    let still_valid_in = |seconds: u64| {
        openssl(&[
            "x509",
            "-in",
            &path_str(&leaf),
            "-noout",
            "-checkend",
            &seconds.to_string(),
        ])
        .status
        .success()
    };
    assert!(still_valid_in(23 * 3600));
    assert!(!still_valid_in(25 * 3600));
}

#[test]
fn key_algorithm_selects_the_curve_and_signature_hash() {
    for (algorithm, curve, signature) in [
        (KeyAlgorithm::EcdsaP256, "prime256v1", "ecdsa-with-SHA256"),
        (KeyAlgorithm::EcdsaP384, "secp384r1", "ecdsa-with-SHA384"),
    ] {
        let mesh = two_cluster_pki(algorithm);
        let cert = mesh.workload_cert("cluster2", "ns1", "foo").unwrap();
        let dir = temp_dir("curve");
        for (name, pem) in [
            ("root.pem", mesh.root_cert_pem().to_owned()),
            ("leaf.pem", pem_blocks(&cert.cert_chain_pem)[0].clone()),
        ] {
            let text = text_of(&write_in(&dir, name, &pem));
            assert!(
                text.contains(&format!("ASN1 OID: {curve}")),
                "{algorithm} {name}: {text}"
            );
            assert!(text.contains(signature), "{algorithm} {name}: {text}");
        }
        let key = write_in(&dir, "key.pem", cert.key_pem.expose_pem());
        let key_text = openssl_stdout(&["pkey", "-in", &path_str(&key), "-noout", "-text"]);
        assert!(key_text.contains(curve), "{key_text}");
    }
}

#[test]
fn key_algorithm_reads_from_scenario_names_and_defaults_to_p256() {
    assert_eq!(KeyAlgorithm::default(), KeyAlgorithm::EcdsaP256);
    let parsed: Vec<KeyAlgorithm> = serde_json::from_str(r#"["ecdsa-p256", "ecdsa-p384"]"#).unwrap();
    assert_eq!(parsed, KeyAlgorithm::ALL.to_vec());
    assert!(serde_json::from_str::<KeyAlgorithm>(r#""rsa-2048""#).is_err());
    assert_eq!("ecdsa-p384".parse::<KeyAlgorithm>().unwrap(), KeyAlgorithm::EcdsaP384);
    let error = "p256".parse::<KeyAlgorithm>().unwrap_err().to_string();
    assert!(error.contains("ecdsa-p256, ecdsa-p384"), "{error}");
}

#[test]
fn spiffe_id_follows_istio_format() {
    assert_eq!(
        spiffe_id("cluster.local", "ns1", "foo"),
        "spiffe://cluster.local/ns/ns1/sa/foo"
    );
}

#[test]
fn create_cacerts_dir_writes_exactly_istio_cacerts_files_with_private_keys_0600() {
    let mesh = two_cluster_pki(KeyAlgorithm::default());
    let out = temp_dir("cacerts");
    let written = create_cacerts_dir(&mesh, out.path(), ExistingPki::Keep).unwrap();

    assert_eq!(file_names(out.path()), names(&["cluster1", "cluster2", "root-ca"]));
    let root_dir = out.path().join("root-ca");
    assert_eq!(file_names(&root_dir), names(&["root-cert.pem", "root-key.pem"]));
    assert_eq!(mode_of(&root_dir.join("root-key.pem")), 0o600);
    assert_eq!(
        fs::read_to_string(root_dir.join("root-key.pem")).unwrap(),
        mesh.root().key_pem().expose_pem()
    );

    let root_key = mesh.root().key_pem().expose_pem().to_owned();
    for cluster in ["cluster1", "cluster2"] {
        let dir = out.path().join(cluster);
        assert_eq!(
            file_names(&dir),
            names(&["ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"])
        );
        for name in ["ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"] {
            let expected = if name == "ca-key.pem" { 0o600 } else { 0o644 };
            assert_eq!(mode_of(&dir.join(name)), expected, "{cluster}/{name}");
            let contents = fs::read_to_string(dir.join(name)).unwrap();
            assert!(!contents.contains(&root_key), "root key leaked into {cluster}/{name}");
        }
    }
    assert_eq!(written.len(), 2 + 2 * 4, "{written:?}");
    assert!(written.iter().all(|path| path.is_file()));
}

#[test]
fn an_existing_pki_is_kept_unless_replacing_is_asked_for() {
    let out = temp_dir("cacerts-existing");
    let first = two_cluster_pki(KeyAlgorithm::default());
    create_cacerts_dir(&first, out.path(), ExistingPki::Keep).unwrap();
    let snapshot = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        for sub in ["root-ca", "cluster1", "cluster2"] {
            for name in file_names(&dir.join(sub)) {
                let path = dir.join(sub).join(&name);
                files.push((path.clone(), fs::read(&path).unwrap()));
            }
        }
        files
    };
    let before = snapshot(out.path());

    let second = two_cluster_pki(KeyAlgorithm::default());
    let error = create_cacerts_dir(&second, out.path(), ExistingPki::Keep).unwrap_err();
    assert!(matches!(error, CacertsDirError::Exists { .. }), "{error:?}");
    assert!(error.is_bad_input());
    let message = error.to_string();
    assert!(
        message.contains("root-ca/root-cert.pem") && message.contains("--force"),
        "{message}"
    );
    assert_eq!(snapshot(out.path()), before, "nothing changed");

    create_cacerts_dir(&second, out.path(), ExistingPki::Replace).unwrap();
    assert_eq!(
        fs::read_to_string(out.path().join("root-ca/root-cert.pem")).unwrap(),
        second.root_cert_pem()
    );
    assert_ne!(second.root_cert_pem(), first.root_cert_pem());
}

#[test]
fn replacing_a_pki_writes_fresh_key_files_0600_instead_of_reusing_world_readable_ones() {
    let mesh = two_cluster_pki(KeyAlgorithm::default());
    let out = temp_dir("cacerts-rewrite");
    let cluster_dir = out.path().join("cluster1");
    fs::create_dir(&cluster_dir).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(cluster_dir.join("ca-key.pem"))
        .unwrap();
    fs::set_permissions(cluster_dir.join("ca-key.pem"), fs::Permissions::from_mode(0o644)).unwrap();

    create_cacerts_dir(&mesh, out.path(), ExistingPki::Replace).unwrap();
    assert_eq!(mode_of(&cluster_dir.join("ca-key.pem")), 0o600);
    assert_eq!(
        file_names(&cluster_dir),
        names(&["ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"]),
        "no staging files left behind"
    );
    assert_eq!(file_names(out.path()), names(&["cluster1", "cluster2", "root-ca"]));
}

#[test]
fn cacerts_on_disk_form_a_chain_that_verifies_and_keys_match_certs() {
    let mesh = two_cluster_pki(KeyAlgorithm::EcdsaP384);
    let out = temp_dir("cacerts-chain");
    create_cacerts_dir(&mesh, out.path(), ExistingPki::Keep).unwrap();
    let dir = out.path().join("cluster2");
    let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap();

    let chain = pem_blocks(&read("cert-chain.pem"));
    assert_eq!(chain, vec![read("ca-cert.pem"), read("root-cert.pem")]);
    assert_eq!(read("root-cert.pem"), mesh.root_cert_pem());
    let root = dir.join("root-cert.pem");
    assert!(openssl_verify(&root, None, None, &dir.join("cert-chain.pem")).is_ok());

    // A workload issued by this cluster verifies with only the files Istio gets.
    let cert = mesh.workload_cert("cluster2", "ns1", "foo").unwrap();
    let scratch = temp_dir("cacerts-leaf");
    let leaf = write_in(&scratch, "leaf.pem", &pem_blocks(&cert.cert_chain_pem)[0]);
    let verdict = openssl_verify(&root, Some(&dir.join("cert-chain.pem")), None, &leaf);
    assert!(verdict.is_ok(), "{verdict:?}");

    let public_of_key = openssl_stdout(&["pkey", "-in", &path_str(&dir.join("ca-key.pem")), "-pubout"]);
    let public_of_cert = openssl_stdout(&["x509", "-in", &path_str(&dir.join("ca-cert.pem")), "-noout", "-pubkey"]);
    assert_eq!(public_of_key, public_of_cert);
}

#[test]
fn create_workload_files_writes_istio_workload_files_with_key_0600() {
    let mesh = two_cluster_pki(KeyAlgorithm::default());
    let cert = mesh.workload_cert("cluster1", "ns1", "foo").unwrap();
    let out = temp_dir("workload");
    let dir = out.path().join("ns1-foo-0");
    create_workload_files(&cert, &dir).unwrap();

    assert_eq!(file_names(&dir), names(&["cert-chain.pem", "key.pem", "root-cert.pem"]));
    assert_eq!(mode_of(&dir.join("key.pem")), 0o600);
    let verdict = openssl_verify(
        &dir.join("root-cert.pem"),
        Some(&dir.join("cert-chain.pem")),
        None,
        &dir.join("cert-chain.pem"),
    );
    assert!(verdict.is_ok(), "{verdict:?}");
    let public_of_key = openssl_stdout(&["pkey", "-in", &path_str(&dir.join("key.pem")), "-pubout"]);
    let public_of_cert = openssl_stdout(&[
        "x509",
        "-in",
        &path_str(&dir.join("cert-chain.pem")),
        "-noout",
        "-pubkey",
    ]);
    assert_eq!(public_of_key, public_of_cert, "key.pem belongs to the leaf");
}

#[test]
fn debug_output_redacts_private_keys() {
    let mesh = two_cluster_pki(KeyAlgorithm::default());
    let cert = mesh.workload_cert("cluster1", "ns1", "foo").unwrap();
    let cacerts = mesh.cacerts("cluster1").unwrap();
    let keys = [
        mesh.root().key_pem().expose_pem(),
        mesh.intermediate("cluster1").unwrap().key_pem().expose_pem(),
        mesh.intermediate("cluster2").unwrap().key_pem().expose_pem(),
        cert.key_pem.expose_pem(),
    ];
    let key_bodies: Vec<&str> = keys
        .iter()
        .map(|pem| pem.lines().nth(1).expect("PEM has a body line"))
        .collect();

    let debug_outputs = [
        format!("{mesh:?}"),
        format!("{mesh:#?}"),
        format!("{cert:?}"),
        format!("{cacerts:?}"),
        format!("{:?}", cacerts.files()),
        format!("{:?}", cert.files()),
    ];
    for output in &debug_outputs {
        assert!(output.contains("redacted"), "{output}");
        assert!(!output.contains("PRIVATE KEY"), "{output}");
        for body in &key_bodies {
            assert!(!output.contains(body), "key material in {output}");
        }
    }
    // The certificates themselves are public and still shown.
    assert!(debug_outputs[0].contains("BEGIN CERTIFICATE"));
}

#[test]
fn names_that_are_not_spiffe_safe_or_collide_are_rejected() {
    let algorithm = KeyAlgorithm::default();
    for (trust_domain, clusters) in [
        ("Cluster.Local", vec!["c1"]),
        ("", vec!["c1"]),
        ("cluster.local", vec!["../etc"]),
        ("cluster.local", vec![".."]),
        ("cluster.local", vec!["root-ca"]),
        ("cluster.local", vec![""]),
    ] {
        let result = pki::pki(trust_domain, &clusters, algorithm);
        assert!(
            matches!(result, Err(PkiError::InvalidName { .. })),
            "{trust_domain:?} {clusters:?}: {result:?}"
        );
    }
    assert!(matches!(
        pki::pki("cluster.local", &["c1", "c1"], algorithm),
        Err(PkiError::DuplicateCluster { .. })
    ));

    let mesh = two_cluster_pki(algorithm);
    assert!(matches!(
        mesh.workload_cert("cluster1", "ns/1", "foo"),
        Err(PkiError::InvalidName { kind: "namespace", .. })
    ));
    let unknown = mesh.workload_cert("cluster9", "ns1", "foo").unwrap_err();
    assert_eq!(
        unknown.to_string(),
        r#"no intermediate CA for cluster "cluster9" (clusters: cluster1, cluster2)"#
    );
}

#[test]
fn a_rotated_intermediate_is_new_under_the_same_root_and_old_leaves_still_verify() {
    let mut mesh = two_cluster_pki(KeyAlgorithm::EcdsaP256);
    let dir = temp_dir("rotate");
    let old_intermediate = mesh.intermediate("cluster1").unwrap().cert_pem().to_owned();
    let other_intermediate = mesh.intermediate("cluster2").unwrap().cert_pem().to_owned();
    let old_cert = mesh.workload_cert("cluster1", "ns1", "foo").unwrap();
    let root_before = mesh.root_cert_pem().to_owned();

    mesh.rotate_intermediate("cluster1").unwrap();
    let new_cert = mesh.workload_cert("cluster1", "ns1", "foo").unwrap();
    let new_chain = pem_blocks(&new_cert.cert_chain_pem);
    assert_ne!(new_chain[1], old_intermediate, "a new intermediate");
    assert_eq!(new_chain[1], mesh.intermediate("cluster1").unwrap().cert_pem());
    assert_eq!(mesh.root_cert_pem(), root_before, "the same root");
    assert_eq!(
        mesh.intermediate("cluster2").unwrap().cert_pem(),
        other_intermediate,
        "other clusters keep theirs"
    );

    let root = write_in(&dir, "root.pem", mesh.root_cert_pem());
    for (name, cert) in [("new", &new_cert), ("old", &old_cert)] {
        let chain = pem_blocks(&cert.cert_chain_pem);
        let intermediate = write_in(&dir, &format!("{name}-intermediate.pem"), &chain[1]);
        let leaf = write_in(&dir, &format!("{name}-leaf.pem"), &chain[0]);
        let verdict = openssl_verify(&root, Some(&intermediate), None, &leaf);
        assert!(verdict.is_ok(), "the {name} leaf: {verdict:?}");
    }
    // The new leaf was signed by the new intermediate, not the old one.
    let old_intermediate_file = write_in(&dir, "old-for-new.pem", &old_intermediate);
    let new_leaf = write_in(&dir, "new-leaf-again.pem", &new_chain[0]);
    assert!(openssl_verify(&root, Some(&old_intermediate_file), None, &new_leaf).is_err());
    assert!(
        mesh.rotate_intermediate("cluster9").is_err(),
        "an unknown cluster is refused"
    );
}
