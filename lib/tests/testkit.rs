//! The test cluster cleans up after itself however its process ends.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use orders::testkit::PgCluster;

/// Set in the child process this test starts.
const CHILD: &str = "ORDERS_TESTKIT_CHILD";

/// One test in two roles: the child starts a cluster, prints its directory
/// and port, and dies abruptly (as a panicking or killed test process
/// would); the parent checks that the server stops and the directory goes.
#[test]
fn a_cluster_is_stopped_and_removed_when_its_process_dies() {
    if std::env::var_os(CHILD).is_some() {
        let cluster = PgCluster::start().unwrap();
        println!("{} {}", cluster.dir().display(), cluster.port());
        std::process::abort();
    }

    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_cluster_is_stopped_and_removed_when_its_process_dies",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the child should have aborted");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("orders-pg-"))
        .unwrap_or_else(|| panic!("child printed no cluster: {stdout}"));
    let (dir, port) = line.rsplit_once(' ').unwrap();
    let dir = PathBuf::from(dir);
    let port: u16 = port.parse().unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while dir.exists() || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "cluster in {} still there",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
