//! TLS servers of a test's own, to prove the client side of the backends' TLS against real
//! servers: certificates made in process ([`TestCertificates`]: a CA and a server
//! certificate it signs for 127.0.0.1 and `localhost`), a proxy that ends TLS in front of a
//! plain server such as the test broker ([`TlsProxy`]), a throwaway PostgreSQL cluster with
//! `ssl = on` ([`TlsPostgres`]) and a Redis that speaks only TLS ([`TlsRedis`]). Each stops
//! its server and removes its files when dropped, even when the test fails.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::uri::AMQPUri;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::RabbitConfig;

/// How long a server of a test may take to start on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A CA of a test's own and a server certificate it signed for 127.0.0.1 and `localhost`;
/// the CA's PEM file is `ca_file`, what a client is given as its `caFile`.
pub struct TestCertificates {
    dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    /// The server's certificate, PEM.
    pub certificate_pem: String,
    /// The server's private key, PKCS#8 PEM.
    pub key_pem: String,
    certificate: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestCertificates {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Stayler test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).expect("a self-signed CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("a server key");
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("server parameters");
        server_params.distinguished_name.push(DnType::CommonName, "localhost");
        let server = server_params.signed_by(&server_key, &issuer).expect("a server certificate");

        let dir = tempfile::tempdir().expect("a temp folder for the certificates");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("writing the CA file");
        Self {
            dir,
            ca_file,
            certificate_pem: server.pem(),
            key_pem: server_key.serialize_pem(),
            certificate: server.der().clone(),
            key_der: server_key.serialize_der(),
        }
    }

    /// A file in a folder that lives as long as these certificates.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A rustls server configuration presenting the server certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        // rustls picks its provider from its features: ring, the only one built.
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![self.certificate.clone()], key)
            .expect("a TLS server configuration");
        Arc::new(config)
    }
}

impl Default for TestCertificates {
    fn default() -> Self {
        Self::new()
    }
}

/// Ends TLS on 127.0.0.1 (random port) with the certificate of [`TestCertificates`] and
/// forwards the plain bytes to `target`: a broker seen through it is an `amqps://` broker.
pub struct TlsProxy {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl TlsProxy {
    /// A proxy in front of the test broker (`STAYLER_TEST_RABBITMQ_URL` or the default).
    pub async fn for_test_broker(certificates: &TestCertificates) -> Self {
        let uri: AMQPUri = super::test_broker_url().expose_secret().parse().expect("a valid test broker URL");
        Self::start(format!("{}:{}", uri.authority.host, uri.authority.port), certificates).await
    }

    pub async fn start(target: String, certificates: &TestCertificates) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the TLS proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let acceptor = TlsAcceptor::from(certificates.server_config());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let (acceptor, target, stopped) = (acceptor.clone(), target.clone(), stopped.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake: nothing to forward.
                    let Ok(mut client) = acceptor.accept(client).await else { return };
                    let Ok(mut server) = TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        () = stopped.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        Self { addr, stop }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `config` reaching the broker through this proxy over `amqps://` (the test broker's
    /// default credentials and vhost), trusting `ca_file`.
    pub fn amqps(&self, config: &RabbitConfig, ca_file: Option<&Path>) -> RabbitConfig {
        let url = format!("amqps://guest:guest@127.0.0.1:{}/%2f", self.addr.port());
        RabbitConfig { url: SecretString::from(url), ca_file: ca_file.map(Path::to_path_buf), ..config.clone() }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A PostgreSQL cluster of a test's own on a free loopback port with `ssl = on` and the
/// server certificate of [`TestCertificates`], trust login for `postgres`, data in a temp
/// folder; stopped and removed when dropped. Uses Debian's server binaries
/// (`/usr/lib/postgresql/<version>/bin`, else the `PATH`); run as root, the server runs as
/// the `postgres` user, which PostgreSQL demands.
pub struct TlsPostgres {
    dir: tempfile::TempDir,
    port: u16,
    owner: Option<(u32, u32)>,
}

impl TlsPostgres {
    pub fn start(certificates: &TestCertificates) -> Self {
        let dir = tempfile::tempdir().expect("a temp folder for the cluster");
        let owner = if rustix::process::geteuid().is_root() { Some(postgres_user()) } else { None };
        let data = dir.path().join("data");
        let (certificate, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
        std::fs::write(&certificate, &certificates.certificate_pem).expect("writing the server certificate");
        std::fs::write(&key, &certificates.key_pem).expect("writing the server key");
        set_mode(&key, 0o600);
        if let Some((uid, gid)) = owner {
            for path in [dir.path(), &certificate, &key] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("handing the cluster to postgres");
            }
        }
        let port = free_port();
        let cluster = Self { dir, port, owner };
        cluster.run("initdb", |command| {
            command.arg("-D").arg(&data).args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]);
        });
        let settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\nssl = on\n\
             ssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\nmax_connections = 30\n",
            certificate.display(),
            key.display()
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("reading postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("writing postgresql.conf");
        let log = cluster.dir.path().join("server.log");
        cluster.run("pg_ctl", |command| {
            command.arg("-D").arg(&data).arg("-l").arg(&log).args(["-w", "-t", "60", "start"]);
        });
        wait_until(&format!("PostgreSQL on 127.0.0.1:{port}"), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        cluster
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres?sslmode=<sslmode>`.
    pub fn url(&self, sslmode: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode={sslmode}", self.port)
    }

    /// Runs one of the server's programs as the cluster's owner; panics with its output if
    /// it fails.
    fn run(&self, program: &str, arguments: impl FnOnce(&mut Command)) {
        let mut command = Command::new(postgres_binary(program));
        arguments(&mut command);
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        let output = command.output().unwrap_or_else(|error| panic!("running {program}: {error}"));
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let mut command = Command::new(postgres_binary("pg_ctl"));
        command.arg("-D").arg(&data).args(["-m", "immediate", "-w", "stop"]);
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        if let Err(error) = command.status() {
            eprintln!("could not stop the test cluster in {}: {error}", data.display());
        }
    }
}

/// A Redis server of a test's own that accepts only TLS, on a free loopback port, with the
/// server certificate of [`TestCertificates`]; nothing saved to disk; killed when dropped.
/// Needs Debian's `redis-server` (built with TLS), which `scripts/test` installs.
pub struct TlsRedis {
    port: u16,
    process: Child,
}

impl TlsRedis {
    pub fn start(certificates: &TestCertificates) -> Self {
        let (certificate, key) = (certificates.path("redis.crt"), certificates.path("redis.key"));
        std::fs::write(&certificate, &certificates.certificate_pem).expect("writing the server certificate");
        std::fs::write(&key, &certificates.key_pem).expect("writing the server key");
        let port = free_port();
        let process = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&certificate)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&certificates.ca_file)
            .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(certificates.path(""))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server: is it installed? (scripts/test installs it)");
        let redis = Self { port, process };
        wait_until(&format!("redis-server on 127.0.0.1:{port}"), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        redis
    }

    /// `rediss://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The newest Debian PostgreSQL's `program`, else `program` from the `PATH`.
fn postgres_binary(program: &str) -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let binary = entry.path().join("bin").join(program);
            binary.exists().then_some((version, binary))
        })
        .collect();
    versions.sort();
    versions.pop().map_or_else(|| PathBuf::from(program), |(_, binary)| binary)
}

/// The uid and gid of the `postgres` user, from `/etc/passwd`.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("reading /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .expect("a postgres user to run the test cluster as (Debian's postgresql package creates it)")
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("setting a file's mode");
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound port").port()
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < START_TIMEOUT, "timed out after {START_TIMEOUT:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
