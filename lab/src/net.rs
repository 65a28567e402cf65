//! A network lab of real kernel networking: network namespaces joined by
//! veth pairs on a "WAN" bridge, hosts either on the WAN or behind a router
//! namespace of their own that does NAT with nftables. Needs root, `ip`
//! (iproute2) and `nft` (nftables); [`Lab::unavailable`] says why not.
//!
//! Every namespace of a lab is named `ml<pid>…`, and every link lives inside
//! those namespaces, so deleting them removes everything: [`Lab`]'s `Drop`
//! does (also while a panic unwinds); a guardian shell deletes them when the
//! process ends without unwinding (Ctrl-C, SIGKILL); and [`Lab::start`]
//! first deletes the namespaces of labs whose process is gone, in case the
//! guardian was killed too. Only addresses inside these namespaces are used: 10.77.0.0/24 is
//! the WAN, 10.77.N.0/24 the LAN behind router N.
//!
//! Code runs inside a host with [`Host::enter`] (a thread of its own that
//! joins the host's namespace with `setns`) or [`Host::runtime`] (a tokio
//! runtime whose threads all joined it), so sockets it opens are the host's.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;

use crate::link::{Impairment, Link, forward, netem_args, open_tap, tbf_args};

/// How a router maps and filters (RFC 4787 terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Nat {
    /// Endpoint-independent mapping, address-and-port-dependent filtering:
    /// Linux `masquerade` (keeps the source port when it can). The common
    /// home router.
    PortPreserving,
    /// Endpoint-independent mapping and filtering ("full cone"): once the
    /// host has sent from a port, anyone may send to that port of the
    /// router (kept for 2 minutes after the host last sent from it).
    FullCone,
    /// Endpoint-dependent mapping: `masquerade fully-random`, a new random
    /// port per flow ("symmetric").
    Symmetric,
}

impl Nat {
    /// Every NAT type, from the easiest to traverse to the hardest.
    pub const ALL: [Nat; 3] = [Nat::FullCone, Nat::PortPreserving, Nat::Symmetric];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Nat::PortPreserving => "port-preserving",
            Nat::FullCone => "full cone",
            Nat::Symmetric => "symmetric",
        }
    }
}

/// One host of the lab.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its namespace.
    pub netns: String,
    /// Its own address (on the WAN, or on its LAN behind a router).
    pub addr: Ipv4Addr,
    /// The address the WAN sees it from: its router's, or its own.
    pub public: Ipv4Addr,
}

impl Host {
    /// Runs `f` on a thread inside this host's network namespace and returns
    /// what it returns. Sockets `f` opens belong to the host.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.netns);
        std::thread::spawn(move || {
            join_netns(&path);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// A runtime of two threads inside this host (threads inherit the
    /// namespace of the thread that starts them, so its blocking pool is
    /// inside too).
    pub fn runtime(&self) -> Runtime {
        let path = format!("/var/run/netns/{}", self.netns);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || join_netns(&path))
            .build()
            .expect("a tokio runtime");
        Runtime(Some(runtime))
    }
}

/// Joins the calling thread to the network namespace at `path`.
fn join_netns(path: &str) {
    let ns = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns on this thread only, with a namespace file we hold open.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// A tokio runtime whose every thread lives in one host's namespace, so that
/// nodes spawned on it open their sockets there. Shut down (without
/// waiting) when dropped, which may happen inside another runtime.
pub struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    /// Runs `future` on this host.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(runtime) => runtime.spawn(future),
            None => unreachable!("a runtime is taken only when dropped"),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A lab: deleted with everything in it when dropped.
pub struct Lab {
    prefix: String,
    wan: String,
    /// Namespaces made, in order.
    made: Vec<String>,
    next_wan: u8,
    next_lan: u8,
    /// How delay and loss are made, found at the first impaired link.
    impairment: Option<Impairment>,
    /// The userspace stage's forwarders, on a runtime of their own.
    forwarders: Option<tokio::runtime::Runtime>,
}

/// Runs a command, panicking with its output if it fails.
fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Loads an nftables ruleset into `ns` (`nft -f -`).
fn nft(ns: &str, ruleset: &str) {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(ruleset.as_bytes()).expect("nft input");
    }
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft in {ns}: {}\n{ruleset}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns(ns: &str, args: &[&str]) {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all);
}

/// Namespaces whose name starts with `prefix`.
pub fn namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn delete(ns: &str) {
    let _ = Command::new("ip").args(["netns", "del", ns]).output();
}

impl Lab {
    /// Why the lab cannot run here, if it cannot: not root, `ip`, `tc` or
    /// `nft` missing, or no TUN device (the userspace link stage).
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not root (network namespaces need CAP_NET_ADMIN)".into());
        }
        for tool in ["ip", "tc", "nft"] {
            let found = Command::new(tool).arg("-V").output().is_ok();
            if !found {
                return Some(format!(
                    "`{tool}` is missing (cargo xtask setup installs it)"
                ));
            }
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            return Some("no /dev/net/tun (TUN/TAP devices)".into());
        }
        None
    }

    /// For tests: whether to skip, having said why on standard error when
    /// the lab cannot run here.
    pub fn skip_test() -> bool {
        match Lab::unavailable() {
            Some(why) => {
                eprintln!("SKIPPED: the network lab cannot run here: {why}");
                true
            }
            None => false,
        }
    }

    /// A lab with an empty WAN. Deletes first what labs of dead processes
    /// left behind.
    pub fn start() -> Lab {
        for ns in namespaces("ml") {
            let pid = ns[2..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|p| p.parse::<i32>().ok());
            // SAFETY: kill with signal 0 only checks that the process exists.
            let alive = pid.is_some_and(|p| unsafe { libc::kill(p, 0) } == 0);
            if !alive {
                delete(&ns);
            }
        }
        start_guardian();
        let prefix = format!("ml{}{}", std::process::id(), next_lab_letter());
        let wan = format!("{prefix}w");
        let mut lab = Lab {
            prefix,
            wan: wan.clone(),
            made: Vec::new(),
            next_wan: 10,
            next_lan: 1,
            impairment: None,
            forwarders: None,
        };
        lab.namespace(&wan);
        in_ns(&wan, &["ip", "link", "add", "br0", "type", "bridge"]);
        in_ns(&wan, &["ip", "link", "set", "br0", "up"]);
        lab
    }

    /// The namespaces' common prefix (to check that none is left).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn namespace(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.made.push(name.to_string());
        // The lab is IPv4 only. Without this, each new link gets an IPv6
        // link-local address a moment later (after duplicate address
        // detection), and Chromium takes that for a network change and fails
        // its requests in flight (ERR_NETWORK_CHANGED: a lab run's browser
        // viewer lost its first playlist that way). Not fatal where the
        // kernel has no IPv6.
        let _ = Command::new("ip")
            .args(["netns", "exec", name, "sysctl", "-q", "-w"])
            .args([
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])
            .output();
        in_ns(name, &["ip", "link", "set", "lo", "up"]);
    }

    /// How this lab's links make delay and loss (found once, at the first
    /// link that asks for any).
    pub fn impairment(&mut self) -> Impairment {
        *self.impairment.get_or_insert_with(Impairment::detect)
    }

    /// Plugs `ns` into the WAN bridge with `addr`/24 on its side (`wan0`),
    /// over a link with `link`'s conditions.
    fn plug_wan(&mut self, ns: &str, addr: Ipv4Addr, link: &Link) {
        let port = format!("p{}", self.made.len());
        let userspace = link.impaired() && self.impairment() == Impairment::Userspace;
        if userspace {
            self.tap_pair(ns, &port, link);
        } else {
            run(&[
                "ip", "link", "add", "wan0", "netns", ns, "type", "veth", "peer", "name", &port,
                "netns", &self.wan,
            ]);
        }
        in_ns(&self.wan, &["ip", "link", "set", &port, "master", "br0"]);
        in_ns(&self.wan, &["ip", "link", "set", &port, "up"]);
        in_ns(
            ns,
            &["ip", "addr", "add", &format!("{addr}/24"), "dev", "wan0"],
        );
        in_ns(ns, &["ip", "link", "set", "wan0", "up"]);
        let netem = link.impaired() && !userspace;
        for (dev_ns, dev, rate) in [
            (ns, "wan0", link.up),
            (self.wan.as_str(), port.as_str(), link.down),
        ] {
            let mut tc = vec![
                "tc".to_string(),
                "qdisc".into(),
                "add".into(),
                "dev".into(),
                dev.into(),
            ];
            match (netem, rate) {
                (true, rate) => {
                    let mut root = tc.clone();
                    root.extend(["root".into(), "handle".into(), "1:".into()]);
                    root.extend(netem_args(link));
                    in_ns(dev_ns, &root.iter().map(String::as_str).collect::<Vec<_>>());
                    if let Some(rate) = rate {
                        tc.extend(["parent".into(), "1:".into(), "handle".into(), "2:".into()]);
                        tc.extend(tbf_args(rate));
                        in_ns(dev_ns, &tc.iter().map(String::as_str).collect::<Vec<_>>());
                    }
                }
                (false, Some(rate)) => {
                    tc.push("root".into());
                    tc.extend(tbf_args(rate));
                    in_ns(dev_ns, &tc.iter().map(String::as_str).collect::<Vec<_>>());
                }
                (false, None) => {}
            }
        }
    }

    /// The link as two TAP devices, `wan0` in `ns` and `port` in the WAN,
    /// with a forwarder each way applying `link`'s delay and loss.
    fn tap_pair(&mut self, ns: &str, port: &str, link: &Link) {
        let open_in = |ns: String, name: String| {
            let path = format!("/var/run/netns/{ns}");
            let tap = name.clone();
            std::thread::spawn(move || {
                join_netns(&path);
                open_tap(&tap)
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
            .unwrap_or_else(|e| panic!("TAP device {name} in {ns}: {e}"))
        };
        let host_side = open_in(ns.to_string(), "wan0".into());
        let wan_side = open_in(self.wan.clone(), port.to_string());
        let runtime = self.forwarders.get_or_insert_with(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("lab-links")
                .enable_all()
                .build()
                .expect("a tokio runtime")
        });
        let _entered = runtime.enter();
        // SAFETY: the AsyncFd owns each descriptor (opened non-blocking),
        // which nothing else closes or replaces.
        let register = |fd| unsafe { AsyncFd::register(fd) }.expect("a TAP device in the reactor");
        let host_side = Arc::new(register(host_side));
        let wan_side = Arc::new(register(wan_side));
        let seed = u64::from(self.next_wan) << 8 | self.made.len() as u64;
        runtime.spawn(forward(host_side.clone(), wan_side.clone(), *link, seed));
        runtime.spawn(forward(wan_side, host_side, *link, !seed));
    }

    fn wan_addr(&mut self) -> Ipv4Addr {
        let a = Ipv4Addr::new(10, 77, 0, self.next_wan);
        self.next_wan = self.next_wan.checked_add(1).expect("at most 245 WAN hosts");
        a
    }

    /// A host with an address on the WAN.
    pub fn public_host(&mut self) -> Host {
        self.public_host_with(&Link::default())
    }

    /// A host alone on a LAN behind a router of its own doing `nat`.
    pub fn natted_host(&mut self, nat: Nat) -> Host {
        self.natted_host_with(nat, &Link::default())
    }

    /// A host with an address on the WAN, over `link`.
    pub fn public_host_with(&mut self, link: &Link) -> Host {
        let netns = format!("{}h{}", self.prefix, self.made.len());
        let addr = self.wan_addr();
        self.namespace(&netns);
        self.plug_wan(&netns, addr, link);
        Host {
            netns,
            addr,
            public: addr,
        }
    }

    /// A host alone on a LAN behind a router of its own doing `nat`, the
    /// router's link to the WAN being `link`.
    pub fn natted_host_with(&mut self, nat: Nat, link: &Link) -> Host {
        let lan = self.next_lan;
        self.next_lan = self.next_lan.checked_add(1).expect("at most 254 LANs");
        let router = format!("{}r{lan}", self.prefix);
        let netns = format!("{}h{}", self.prefix, self.made.len());
        let public = self.wan_addr();
        self.namespace(&router);
        self.plug_wan(&router, public, link);
        self.namespace(&netns);
        let gateway = Ipv4Addr::new(10, 77, lan, 1);
        let addr = Ipv4Addr::new(10, 77, lan, 2);
        run(&[
            "ip", "link", "add", "lan0", "netns", &router, "type", "veth", "peer", "name", "eth0",
            "netns", &netns,
        ]);
        in_ns(
            &router,
            &["ip", "addr", "add", &format!("{gateway}/24"), "dev", "lan0"],
        );
        in_ns(&router, &["ip", "link", "set", "lan0", "up"]);
        in_ns(
            &netns,
            &["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"],
        );
        in_ns(&netns, &["ip", "link", "set", "eth0", "up"]);
        in_ns(
            &netns,
            &["ip", "route", "add", "default", "via", &gateway.to_string()],
        );
        in_ns(&router, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        let masquerade = match nat {
            Nat::PortPreserving | Nat::FullCone => "masquerade",
            Nat::Symmetric => "masquerade fully-random",
        };
        // Full cone: the ports the host sent from (the same on the WAN, as
        // masquerade keeps them for a lone host) are forwarded to it from
        // anyone.
        let (cone_sets, cone_dnat, cone_mark) = if nat == Nat::FullCone {
            (
                "set udp_out { type inet_service; flags timeout; timeout 2m; }
                 set tcp_out { type inet_service; flags timeout; timeout 2m; }",
                format!(
                    "chain pre {{ type nat hook prerouting priority dstnat;
                       iifname \"wan0\" udp dport @udp_out dnat to {addr};
                       iifname \"wan0\" tcp dport @tcp_out dnat to {addr}; }}"
                ),
                "iifname \"lan0\" meta l4proto udp update @udp_out { udp sport };
                 iifname \"lan0\" meta l4proto tcp update @tcp_out { tcp sport };
                 ct status dnat accept;",
            )
        } else {
            ("", String::new(), "")
        };
        // Filtering: only replies to what the LAN sent out come in (conntrack
        // state), and the LAN is never routed to from the WAN directly. The
        // router itself drops what nobody asked for, as a home router's
        // firewall does: a packet accepted for the router would leave a
        // conntrack entry that a later outbound flow to that peer clashes
        // with, and masquerade would then move that flow to another port
        // (which made hole punching fail between two port-preserving NATs).
        let rules = format!(
            "table ip lab {{
              {cone_sets}
              {cone_dnat}
              chain post {{ type nat hook postrouting priority srcnat; oifname \"wan0\" {masquerade}; }}
              chain forward_lan {{ type filter hook forward priority filter; policy drop;
                {cone_mark}
                iifname \"lan0\" accept;
                ct state established,related accept; }}
              chain input {{ type filter hook input priority filter; policy accept;
                iifname \"wan0\" ct state != established,related drop; }}
            }}"
        );
        nft(&router, &rules);
        Host {
            netns,
            addr,
            public,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The forwarders first: closing their TAP devices deletes them.
        if let Some(runtime) = self.forwarders.take() {
            runtime.shutdown_background();
        }
        for ns in self.made.iter().rev() {
            delete(ns);
        }
    }
}

/// Starts, once per process, a shell in a process group of its own that
/// waits for this process to end and then deletes its namespaces: so a lab
/// ended by Ctrl-C (which reaches only the foreground group) or SIGKILL,
/// where no `Drop` runs, leaves nothing behind either. The shell ends
/// with that; while this process lives it sleeps.
fn start_guardian() {
    use std::os::unix::process::CommandExt as _;
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let pid = std::process::id();
        // `ml<pid>` then a letter: another pid that starts with the same
        // digits never matches.
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             for ns in $(ip netns list | cut -d' ' -f1 | grep '^ml{pid}[a-z]'); do ip netns del \"$ns\"; done"
        );
        let spawned = Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn();
        // Without it the next lab's start still sweeps what this one leaves.
        if let Err(e) = spawned {
            eprintln!("lab: no guardian process ({e}); a killed lab is swept at the next start");
        }
    });
}

/// A letter per lab made by this process, so that tests running at once
/// get different prefixes.
fn next_lab_letter() -> char {
    use std::sync::atomic::{AtomicU8, Ordering};
    static NEXT: AtomicU8 = AtomicU8::new(0);
    (b'a' + NEXT.fetch_add(1, Ordering::Relaxed) % 26) as char
}
