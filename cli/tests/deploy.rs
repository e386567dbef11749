//! The deployment files in deploy/: the Kubernetes manifests render as checked in and ask
//! the node only for flags it has, and the container image runs nodes that form a ring.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{eventually, free_port};

/// The repository's deploy/ directory.
fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether `program` runs at all (found on PATH and executable).
fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let o = run(program, args);
    assert!(
        o.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn manifests_render_as_checked_in() {
    let rendered = read(&deploy().join("k8s/rendered.yaml"));
    if have("kubectl") {
        let k8s = deploy().join("k8s");
        let now = ok("kubectl", &["kustomize", k8s.to_str().unwrap()]);
        assert_eq!(
            now, rendered,
            "deploy/k8s renders differently from deploy/k8s/rendered.yaml; \
             if the change is meant, run `kubectl kustomize deploy/k8s > deploy/k8s/rendered.yaml`"
        );
    } else {
        eprintln!(
            "kubectl not found: the rendering is not redone, only its checked-in copy checked"
        );
    }
    // What the deployment relies on, in what is applied.
    for needle in [
        "clusterIP: None",
        "publishNotReadyAddresses: true",
        "podManagementPolicy: Parallel",
        "serviceName: peerlab",
        "prometheus.io/scrape: \"true\"",
        "prometheus.io/port: \"9100\"",
        "--metrics=0.0.0.0:9100",
        "peerlab-0.peerlab.${POD_NAMESPACE}.svc.cluster.local/udp/4001/quic-v1",
        "readinessProbe:",
        "livenessProbe:",
        "runAsNonRoot: true",
        "image: localhost/peerlab:latest",
        // The API other pods reach is TLS with the pod's names in its certificate.
        "--allow-remote-api",
        "--api-name=\"${POD_NAME}.peerlab\"",
        "containerPort: 7000",
    ] {
        assert!(
            rendered.contains(needle),
            "rendered manifests lack {needle:?}"
        );
    }
}

/// The `--flags` given to `peerlab node` in `text`.
fn node_flags(text: &str) -> Vec<String> {
    let mut flags = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || "\"',[]".contains(c)) {
        if let Some(flag) = word.strip_prefix("--") {
            let name: String = flag
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            if !name.is_empty() && !flags.contains(&name) {
                flags.push(name);
            }
        }
    }
    flags
}

#[test]
fn deployments_ask_the_node_only_for_flags_it_has() {
    let help = ok(env!("CARGO_BIN_EXE_peerlab"), &["node", "--help"]);
    let statefulset = read(&deploy().join("k8s/statefulset.yaml"));
    // The start-up script of the StatefulSet: from `peerlab node` to the end of the args.
    let node_line = &statefulset[statefulset.find("peerlab node").unwrap()..];
    let node_line = &node_line[..node_line.find("ports:").unwrap()];
    let compose = read(&deploy().join("compose.yaml"));
    let containerfile = read(&deploy().join("Containerfile"));
    let cmd = containerfile
        .lines()
        .find(|l| l.starts_with("CMD"))
        .expect("a CMD line");
    let mut checked = 0;
    for (file, text) in [
        ("statefulset.yaml", node_line),
        ("compose.yaml", compose.as_str()),
        ("Containerfile", cmd),
    ] {
        let flags = node_flags(text);
        assert!(!flags.is_empty(), "{file}: no flags found");
        for f in flags {
            // `--scale` and friends belong to compose's own command lines in comments.
            if file == "compose.yaml" && ["scale", "v"].contains(&f.as_str()) {
                continue;
            }
            assert!(
                help.contains(&format!("--{f}")),
                "{file} passes --{f}, which `peerlab node` does not know"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} flags checked");
}

/// Everything the podman test made, removed when it ends (also on failure).
struct Podman {
    tag: String,
    containers: Vec<String>,
    dir: tempfile::TempDir,
}

impl Drop for Podman {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = run("podman", &["rm", "-f", "-t", "0", c]);
        }
        for image in [format!("{}-base", self.tag), self.tag.clone()] {
            let _ = run("podman", &["rmi", "-f", &image]);
        }
    }
}

/// Copies `file` and the shared libraries `ldd` lists for it into `root`, at their paths.
fn install(root: &Path, file: &Path, as_path: &Path) {
    let dest = root.join(as_path.strip_prefix("/").unwrap());
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(file, &dest).unwrap();
    let ldd = ok("ldd", &[file.to_str().unwrap()]);
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let dest = root.join(lib.trim_start_matches('/'));
        if !dest.exists() {
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(lib, &dest).unwrap();
        }
    }
}

/// Three containers of the image deploy/Containerfile builds form a ring: one started
/// alone, two bootstrapping through it (one by address, one by DNS name), on the host's
/// loopback. The base image is made here from this machine's own binaries (a shell, the
/// tools the Containerfile runs and the libraries the node needs), so no registry is needed.
#[test]
fn three_containers_form_a_ring() {
    let root_user = run("id", &["-u"]).stdout == b"0\n";
    if !have("podman") || !root_user {
        eprintln!(
            "skipped: needs podman, run as root (found podman: {})",
            have("podman")
        );
        return;
    }
    let tag = format!("localhost/peerlab-deploy-test:{}", std::process::id());
    let mut p = Podman {
        tag: tag.clone(),
        containers: Vec::new(),
        dir: tempfile::tempdir().unwrap(),
    };
    let rootfs = p.dir.path().join("rootfs");
    for (tool, as_path) in [
        ("/bin/dash", "/bin/sh"),
        ("/bin/mkdir", "/bin/mkdir"),
        ("/bin/chown", "/bin/chown"),
        ("/bin/chmod", "/bin/chmod"),
    ] {
        install(&rootfs, Path::new(tool), Path::new(as_path));
    }
    let binary = Path::new(env!("CARGO_BIN_EXE_peerlab"));
    install(&rootfs, binary, Path::new("/usr/local/bin/peerlab"));
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
    let tar = p.dir.path().join("rootfs.tar");
    ok(
        "tar",
        &[
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    let base = format!("{tag}-base");
    ok("podman", &["import", tar.to_str().unwrap(), &base]);
    let context = p.dir.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy(binary, context.join("peerlab")).unwrap();
    let containerfile = deploy().join("Containerfile");
    ok(
        "podman",
        &[
            "build",
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
            "--build-arg",
            &format!("BASE={base}"),
            "--build-arg",
            "INSTALL_LIBS=0",
            "-f",
            containerfile.to_str().unwrap(),
            "-t",
            &tag,
            context.to_str().unwrap(),
        ],
    );

    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let bootstraps = [
        None,
        Some(format!("/ip4/127.0.0.1/udp/{}/quic-v1", ports[0])),
        Some(format!("/dns4/localhost/udp/{}/quic-v1", ports[0])),
    ];
    for (i, boot) in bootstraps.iter().enumerate() {
        let name = format!("peerlab-deploy-test-{}-{i}", std::process::id());
        let listen = format!("--listen=/ip4/127.0.0.1/udp/{}/quic-v1", ports[i]);
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
            &tag,
            "node",
            &listen,
            "--threads=1",
            // The controller below reaches the API from outside the container.
            "--allow-remote-api",
        ];
        let flag = boot.as_ref().map(|b| format!("--bootstrap={b}"));
        if let Some(f) = &flag {
            args.push(f);
        }
        ok("podman", &args);
        p.containers.push(name);
    }
    // Each container's node, asked through the CLI inside it (the API and its token stay
    // in the container).
    let exec = |c: &str, args: &[&str]| {
        let mut all = vec!["exec", c, "/usr/local/bin/peerlab"];
        all.extend_from_slice(args);
        run("podman", &all)
    };
    let alive = |c: &str| {
        let o = exec(c, &["members"]);
        String::from_utf8_lossy(&o.stdout)
            .matches(" alive ")
            .count()
    };
    let formed = eventually(Duration::from_secs(30), || {
        p.containers.iter().all(|c| alive(c) == 2)
    });
    let logs: Vec<String> = p
        .containers
        .iter()
        .map(|c| String::from_utf8_lossy(&run("podman", &["logs", c]).stderr).into_owned())
        .collect();
    assert!(
        formed,
        "the containers did not all see each other: {logs:#?}"
    );
    let put = exec(&p.containers[1], &["put", "deploy-test", "v"]);
    assert!(put.status.success(), "{put:?}");
    let read_back = eventually(Duration::from_secs(10), || {
        p.containers.iter().all(|c| {
            String::from_utf8_lossy(&exec(c, &["get", "deploy-test"]).stdout).trim() == "v"
        })
    });
    assert!(
        read_back,
        "a put in one container is not read in all: {logs:#?}"
    );

    // A controller outside the containers, as on a cluster: credentials out through the
    // engine's exec, then lookups over each node's pinned TLS API.
    let creds: Vec<String> = p
        .containers
        .iter()
        .map(|c| {
            let o = exec(c, &["credentials"]);
            assert!(o.status.success(), "credentials: {o:?}");
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        })
        .collect();
    let creds_file = p.dir.path().join("creds.jsonl");
    std::fs::write(&creds_file, creds.join("\n")).unwrap();
    let tn = p.dir.path().join("tn");
    let peerlab = |args: &[&str]| {
        let mut all = vec!["testnet"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--dir", tn.to_str().unwrap(), "--json"]);
        run(env!("CARGO_BIN_EXE_peerlab"), &all)
    };
    let o = peerlab(&["attach", "--credentials", creds_file.to_str().unwrap()]);
    assert!(o.status.success(), "attach: {o:?}");
    let o = peerlab(&["lookups", "--count", "30"]);
    assert!(o.status.success(), "lookups: {o:?}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (r["failed"].as_u64(), r["wrong_owner"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
}
