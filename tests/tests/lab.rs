//! The network lab itself (`meshcast_tests::lab`): its NAT types behave as
//! named, over real UDP across namespaces, and nothing (namespace or
//! process) is left behind after a lab is dropped, a test panics, or its
//! process gets Ctrl-C or SIGKILL. Skipped, saying why, without root or
//! `ip`/`nft`.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use meshcast_lab::link::Link;
use meshcast_lab::net::{Host, Lab, Nat, namespaces};

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
    if Lab::skip_test() {
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
    if Lab::skip_test() {
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
    let host = lab.natted_host(Nat::PortPreserving);
    // A process on a host, as a volunteer's node or the browser viewer is.
    let mut process = meshcast_lab::process::command_in(&host, "sleep")
        .arg("600")
        .spawn()
        .expect("sleep starts");
    println!("PROCESS {}", process.id());
    println!("LAB {}", lab.prefix());
    std::thread::sleep(Duration::from_secs(60));
    // Only when nobody killed this process in time.
    let _ = process.kill();
    let _ = process.wait();
}

#[test]
fn nothing_is_left_behind_after_ctrl_c_or_sigkill() {
    use std::io::BufRead as _;
    if Lab::skip_test() {
        return;
    }
    use std::os::unix::process::CommandExt as _;
    for signal in ["-INT", "-KILL"] {
        let mut command = std::process::Command::new(std::env::current_exe().expect("test binary"));
        command
            .args([
                "hold_a_lab_until_killed",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env("MESHCAST_LAB_HOLD", "1")
            .stdout(std::process::Stdio::piped());
        // A shell that ran the tests in the background left SIGINT ignored
        // for all its descendants: the child would sleep through it. A
        // terminal's Ctrl-C is what this test means.
        // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("the child starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok);
        let process: i32 = lines
            .find_map(|line| line.strip_prefix("PROCESS ")?.parse().ok())
            .expect("the child started a process");
        let prefix = lines
            .find_map(|line| line.strip_prefix("LAB ").map(str::to_string))
            .expect("the child made a lab");
        // Running: a zombie is dead (whoever adopted it may not reap it).
        let exists = || {
            std::fs::read_to_string(format!("/proc/{process}/stat"))
                .ok()
                .and_then(|stat| Some(stat.rsplit_once(") ")?.1.starts_with('Z')))
                .is_some_and(|zombie| !zombie)
        };
        assert!(exists(), "the child's process is not running");
        assert_eq!(namespaces(&prefix).len(), 3, "wan, router, host");
        let killed = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let status = child.wait().expect("the child ends");
        // Killed, not done holding its lab (60 s) and dropping it itself.
        assert!(
            std::os::unix::process::ExitStatusExt::signal(&status).is_some(),
            "kill {signal} did not kill the child: {status}"
        );
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
        // The kernel killed it (PR_SET_PDEATHSIG); init reaps it.
        while exists() && std::time::Instant::now() < deadline + Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !exists(),
            "after kill {signal} its process {process} runs on"
        );
    }
}

/// Round trips of one-datagram pings from `from` to an echo on `to`
/// (`count` of them, each given `timeout`): the times of those answered.
fn ping(from: &Host, to: &Host, port: u16, count: usize, timeout: Duration) -> Vec<Duration> {
    let server = echo_source(to, port, count);
    std::thread::sleep(Duration::from_millis(200));
    let dest = SocketAddr::from((to.addr, port));
    let times = from.enter(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket.set_read_timeout(Some(timeout)).expect("timeout");
        let mut times = Vec::new();
        let mut buf = [0u8; 64];
        for _ in 0..count {
            let sent = std::time::Instant::now();
            socket.send_to(b"ping", dest).expect("send");
            if socket.recv_from(&mut buf).is_ok() {
                times.push(sent.elapsed());
            }
        }
        times
    });
    drop(server);
    times
}

/// Reads `conn` to its end: bytes per second from the first byte.
fn receive(mut conn: std::net::TcpStream) -> f64 {
    use std::io::Read as _;
    let mut buf = vec![0u8; 1 << 16];
    let (mut total, mut started) = (0u64, None);
    while let Ok(n @ 1..) = conn.read(&mut buf) {
        // From the first byte: the handshake is not the rate.
        started.get_or_insert_with(std::time::Instant::now);
        total += n as u64;
    }
    total as f64 / started.map_or(f64::NAN, |s| s.elapsed().as_secs_f64())
}

/// Writes to `conn` for `seconds`, then closes it.
fn send(mut conn: std::net::TcpStream, seconds: f64) {
    use std::io::Write as _;
    let chunk = vec![7u8; 1 << 14];
    let until = std::time::Instant::now() + Duration::from_secs_f64(seconds);
    while std::time::Instant::now() < until {
        if conn.write_all(&chunk).is_err() {
            return;
        }
    }
}

/// Bytes per second of a TCP transfer lasting `seconds` over a connection
/// `client` opens to `server` (so a NATed client works), sent by the client
/// when `upload`, else by the server.
fn transfer(client: &Host, server: &Host, port: u16, seconds: f64, upload: bool) -> f64 {
    let server = server.clone();
    let dest = SocketAddr::from((server.addr, port));
    let far_end = std::thread::spawn(move || {
        server.clone().enter(move || {
            let listener = std::net::TcpListener::bind((server.addr, port)).expect("bind");
            let (conn, _) = listener.accept().expect("accept");
            if upload {
                receive(conn)
            } else {
                send(conn, seconds);
                f64::NAN
            }
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    let near_end = client.enter(move || {
        let conn = std::net::TcpStream::connect(dest).expect("connect");
        if upload {
            send(conn, seconds);
            f64::NAN
        } else {
            receive(conn)
        }
    });
    let far_end = far_end.join().expect("the far end");
    if upload { far_end } else { near_end }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// The links have the delay, loss and rates they were given, with real
/// packets through whatever makes them here (netem, or the userspace stage:
/// the test says which).
#[test]
fn links_have_the_delay_loss_and_rates_asked_for() {
    if Lab::skip_test() {
        return;
    }
    let mut lab = Lab::start();
    eprintln!("delay and loss from {}", lab.impairment().name());
    let plain = lab.public_host();
    let far = lab.public_host_with(&Link {
        delay: Duration::from_millis(25),
        ..Link::default()
    });
    let lossy = lab.public_host_with(&Link {
        delay: Duration::from_millis(1),
        loss: 0.2,
        ..Link::default()
    });
    let thin = lab.natted_host_with(
        Nat::PortPreserving,
        &Link {
            up: Some(2_000_000),
            down: Some(8_000_000),
            ..Link::default()
        },
    );

    // 25 ms each way on one side: a 50 ms round trip (the plain link adds
    // next to nothing). Bounds are loose: the machine is shared.
    let rtt = median(ping(&plain, &far, 7100, 20, Duration::from_millis(500)));
    eprintln!("round trip {rtt:?}");
    assert!(
        rtt >= Duration::from_millis(49) && rtt < Duration::from_millis(80),
        "round trip {rtt:?}, wanted 50 ms"
    );
    // 20% each way: about 64% of round trips complete.
    let answered = ping(&plain, &lossy, 7101, 400, Duration::from_millis(60)).len() as f64 / 400.0;
    eprintln!("{answered:.2} answered");
    assert!(
        (0.52..0.76).contains(&answered),
        "{answered:.2} of pings answered, wanted about 0.64"
    );
    // Rates: 2 Mbit/s up, 8 Mbit/s down, through the NAT.
    let up = transfer(&thin, &plain, 7102, 3.0, true) * 8.0;
    eprintln!("up {:.2} Mbit/s", up / 1e6);
    assert!(
        (1.5e6..2.3e6).contains(&up),
        "uplink {:.2} Mbit/s, wanted 2",
        up / 1e6
    );
    let down = transfer(&thin, &plain, 7103, 3.0, false) * 8.0;
    eprintln!("down {:.2} Mbit/s", down / 1e6);
    assert!(
        (6.0e6..9.0e6).contains(&down),
        "downlink {:.2} Mbit/s, wanted 8",
        down / 1e6
    );
}
