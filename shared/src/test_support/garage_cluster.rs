//! A Garage cluster of its own for a fault test: nodes on loopback ports with data in a
//! temp folder, every object replicated on each of them (`replication_factor` = nodes, one
//! zone per node), a bucket and a key; nodes can be stopped and started again; every node
//! is killed and the folder removed when the cluster is dropped, even when the test fails.
//! Needs the `garage` binary on the `PATH` (`scripts/test` installs it when missing).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;

use crate::config::S3Config;

const BUCKET: &str = "stayler-cluster-test";
const KEY_NAME: &str = "stayler-cluster-key";
const KEY_ID: &str = "GK5354a7e4c0ffee00000000c1";
const SECRET: &str = "5354a7e4c0ffee000000000000000000000000000000000000000000000000c1";
const RPC_SECRET: &str = "c1c1a7e4c0ffee5354a7e4c0ffee5354a7e4c0ffee5354a7e4c0ffee5354a7e4";
/// How long cluster set-up steps may take on a busy machine.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// See the module documentation.
pub struct GarageCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

struct Node {
    config: PathBuf,
    s3_port: u16,
    process: Option<Child>,
}

impl GarageCluster {
    /// Starts `size` nodes, joins them in one layout and creates the bucket and key.
    pub fn start(size: usize) -> Self {
        let dir = tempfile::tempdir().expect("a temp folder for the cluster");
        // Every port held until all are chosen, so no two are the same.
        let listeners: Vec<TcpListener> =
            (0..size * 2).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
        let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().expect("a bound port").port()).collect();
        drop(listeners);
        let nodes = (0..size)
            .map(|index| Node::configure(dir.path(), index, size, ports[2 * index], ports[2 * index + 1]))
            .collect();
        let mut cluster = Self { dir, nodes };
        for index in 0..size {
            cluster.start_node(index);
        }
        let ids: Vec<String> = (0..size).map(|index| cluster.node_id(index)).collect();
        for id in &ids[1..] {
            cluster.garage_until_ok(&["node", "connect", id]);
        }
        for (index, id) in ids.iter().enumerate() {
            let node = id.split('@').next().expect("an id");
            cluster.garage_until_ok(&["layout", "assign", "-z", &format!("zone{index}"), "-c", "1G", node]);
        }
        cluster.garage_until_ok(&["layout", "apply", "--version", "1"]);
        cluster.garage_until_ok(&["bucket", "create", BUCKET]);
        cluster.garage_until_ok(&["key", "import", "--yes", "-n", KEY_NAME, KEY_ID, SECRET]);
        cluster.garage_until_ok(&["bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_NAME]);
        cluster
    }

    /// Settings for the bucket through node `index`'s S3 endpoint, under a prefix of the
    /// test's own.
    pub fn s3_config(&self, index: usize) -> S3Config {
        S3Config {
            endpoint: format!("http://127.0.0.1:{}", self.nodes[index].s3_port),
            bucket: BUCKET.to_owned(),
            region: "garage".to_owned(),
            access_key_id: KEY_ID.to_owned(),
            secret_access_key: SecretString::from(SECRET),
            prefix: format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            request_timeout_secs: 10,
            connect_timeout_secs: 2,
            ..S3Config::default()
        }
    }

    /// Kills node `index` (no goodbye to the others: a machine gone).
    pub fn stop_node(&mut self, index: usize) {
        if let Some(mut process) = self.nodes[index].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts node `index` again with its data, and waits until its S3 port answers.
    pub fn start_node(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        assert!(node.process.is_none(), "node {index} is running");
        let log = std::fs::File::create(self.dir.path().join(format!("node{index}.log"))).expect("a log file");
        let process = Command::new("garage")
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .expect("starting garage: is it installed? (scripts/test installs it)");
        node.process = Some(process);
        let port = node.s3_port;
        wait_until(&format!("garage node {index} listening on {port}"), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    fn node_id(&self, index: usize) -> String {
        let config = &self.nodes[index].config;
        let mut id = String::new();
        wait_until(&format!("the id of garage node {index}"), || {
            let output = Command::new("garage").arg("-c").arg(config).args(["node", "id", "-q"]).output();
            match output {
                Ok(output) if output.status.success() => {
                    id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                    !id.is_empty()
                }
                _ => false,
            }
        });
        id
    }

    /// Runs a `garage` command against the first node until it succeeds (the cluster takes
    /// a moment to agree on a new layout).
    fn garage_until_ok(&self, args: &[&str]) {
        let config = &self.nodes[0].config;
        wait_until(&format!("garage {}", args.join(" ")), || {
            Command::new("garage")
                .arg("-c")
                .arg(config)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        });
    }
}

impl Node {
    fn configure(dir: &Path, index: usize, size: usize, s3_port: u16, rpc_port: u16) -> Self {
        let folder = dir.join(format!("node{index}"));
        let config = dir.join(format!("node{index}.toml"));
        let text = format!(
            r#"metadata_dir = "{folder}/meta"
data_dir = "{folder}/data"
db_engine = "sqlite"
replication_factor = {size}
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{RPC_SECRET}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"
"#,
            folder = folder.display()
        );
        std::fs::write(&config, text).expect("writing a node's configuration");
        Self { config, s3_port, process: None }
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.stop_node(index);
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not done within {SETUP_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
