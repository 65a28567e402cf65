//! The network lab itself (`meshcast_tests::lab`): its NAT types behave as
//! named, over real UDP across namespaces, and nothing is left behind after
//! a lab is dropped or a test panics. Skipped, saying why, without root or
//! `ip`/`nft`.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use meshcast_lab::net::{Host, Lab, Nat, namespaces};

fn skip() -> bool {
    match Lab::unavailable() {
        Some(why) => {
            eprintln!("SKIPPED: the network lab cannot run here: {why}");
            true
        }
        None => false,
    }
}

/// A UDP server on `host`:`port` that answers every datagram with the
/// source address it saw, for `datagrams` datagrams.
fn echo_source(host: &Host, port: u16, datagrams: usize) -> std::thread::JoinHandle<()> {
    let host = host.clone();
    std::thread::spawn(move || {
        host.clone().enter(move || {
            let socket =
                UdpSocket::bind(SocketAddrV4::new(host.addr, port)).expect("bind the echo");
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut buf = [0u8; 64];
            for _ in 0..datagrams {
                let Ok((_, from)) = socket.recv_from(&mut buf) else {
                    return;
                };
                let _ = socket.send_to(from.to_string().as_bytes(), from);
            }
        })
    })
}

/// From `host`, one socket bound to `port` sends to each of `to` and reads
/// the source address each saw.
fn seen_from(host: &Host, port: u16, to: Vec<SocketAddr>) -> Vec<SocketAddr> {
    host.enter(move || {
        let socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        to.iter()
            .map(|dest| {
                let mut buf = [0u8; 64];
                // Datagrams may be lost while the lab's links come up.
                for _ in 0..20 {
                    socket.send_to(b"who am i", dest).expect("send");
                    if let Ok((n, _)) = socket.recv_from(&mut buf) {
                        return std::str::from_utf8(&buf[..n])
                            .expect("utf-8")
                            .parse()
                            .expect("an address");
                    }
                }
                panic!("no answer from {dest}");
            })
            .collect()
    })
}

#[test]
fn nat_types_map_and_filter_as_named_over_real_udp() {
    if skip() {
        return;
    }
    let mut lab = Lab::start();
    let p = lab.public_host();
    let q = lab.public_host();
    let home = lab.natted_host(Nat::PortPreserving);
    let symmetric = lab.natted_host(Nat::Symmetric);
    let servers = [echo_source(&p, 7000, 2), echo_source(&q, 7000, 2)];
    let to = vec![
        SocketAddr::from((p.addr, 7000)),
        SocketAddr::from((q.addr, 7000)),
    ];

    // Port-preserving: both servers see the router's address and the
    // host's own port (one mapping for every destination).
    let seen = seen_from(&home, 4000, to.clone());
    for s in &seen {
        assert_eq!(*s, SocketAddr::from((home.public, 4000)), "{seen:?}");
    }
    // Symmetric: a mapping per destination, on random ports.
    let seen = seen_from(&symmetric, 4000, to);
    assert!(seen.iter().all(|s| s.ip() == symmetric.public), "{seen:?}");
    assert_ne!(seen[0].port(), seen[1].port(), "{seen:?}");
    for server in servers {
        server.join().expect("echo");
    }

    // Filtering: an unsolicited datagram to the router's mapped port (from
    // a host the LAN host never sent to from there) is dropped, and the LAN
    // address is not routed to from the WAN.
    let listener = {
        let home = home.clone();
        std::thread::spawn(move || {
            home.enter(|| {
                let socket = UdpSocket::bind("0.0.0.0:4000").expect("bind");
                socket
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                let mut buf = [0u8; 16];
                socket.recv_from(&mut buf).is_ok()
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (home_lan, home_public) = (home.addr, home.public);
    q.enter(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        for _ in 0..5 {
            let _ = socket.send_to(b"hello", (home_public, 4000));
            let _ = socket.send_to(b"hello", (home_lan, 4000));
        }
    });
    assert!(
        !listener.join().expect("listener"),
        "an unsolicited datagram crossed the NAT"
    );
}

#[test]
fn nothing_is_left_behind_after_a_drop_or_a_panic() {
    if skip() {
        return;
    }
    let prefix = {
        let mut lab = Lab::start();
        lab.public_host();
        lab.natted_host(Nat::PortPreserving);
        let prefix = lab.prefix().to_string();
        assert_eq!(namespaces(&prefix).len(), 4, "wan, host, router, host");
        prefix
    };
    assert!(namespaces(&prefix).is_empty(), "{:?}", namespaces(&prefix));

    let panicked = std::panic::catch_unwind(|| {
        let mut lab = Lab::start();
        lab.natted_host(Nat::Symmetric);
        let prefix = lab.prefix().to_string();
        std::panic::panic_any(prefix);
    });
    let prefix = panicked
        .expect_err("it panicked")
        .downcast::<String>()
        .expect("the prefix");
    assert!(namespaces(&prefix).is_empty(), "{:?}", namespaces(&prefix));
}

/// Not a test of its own: the child process of
/// `nothing_is_left_behind_after_ctrl_c_or_sigkill`, holding a lab until it
/// is killed.
#[test]
#[ignore = "a child process of nothing_is_left_behind_after_ctrl_c_or_sigkill"]
fn hold_a_lab_until_killed() {
    if std::env::var_os("MESHCAST_LAB_HOLD").is_none() {
        return;
    }
    let mut lab = Lab::start();
    lab.natted_host(Nat::PortPreserving);
    println!("LAB {}", lab.prefix());
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn nothing_is_left_behind_after_ctrl_c_or_sigkill() {
    use std::io::BufRead as _;
    if skip() {
        return;
    }
    for signal in ["-INT", "-KILL"] {
        let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "hold_a_lab_until_killed",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env("MESHCAST_LAB_HOLD", "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the child starts");
        let stdout = child.stdout.take().expect("stdout");
        let prefix = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("LAB ").map(str::to_string))
            .expect("the child made a lab");
        assert_eq!(namespaces(&prefix).len(), 3, "wan, router, host");
        let killed = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        child.wait().expect("the child ends");
        // No lab starts meanwhile: the child's guardian does it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !namespaces(&prefix).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            namespaces(&prefix).is_empty(),
            "after kill {signal}: {:?}",
            namespaces(&prefix)
        );
    }
}
