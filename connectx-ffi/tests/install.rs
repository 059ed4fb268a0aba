//! A stack started in Rust, installed for the C calls: the descriptors are the same on both
//! sides, and uninstalling it leaves the C calls with `ENETDOWN`. (Its own test binary: the
//! installed stack is the process's.)

use connectx_api::{Family, Net, SocketType};

#[test]
fn a_stack_started_in_rust_serves_the_c_calls_until_uninstalled() {
    if !tun_driver::netns::require_root(
        "a_stack_started_in_rust_serves_the_c_calls_until_uninstalled",
    ) {
        return;
    }
    std::thread::spawn(|| {
        tun_driver::netns::unshare_net().expect("a private network namespace");
        let net = Net::builder()
            .tun("cx0")
            .address("192.0.2.2/24")
            .peer("192.0.2.1/24")
            .start()
            .expect("the stack starts");
        assert!(connectx::running().is_none());
        connectx::install(net.clone()).expect("nothing installed yet");
        assert!(
            connectx::install(net.clone()).is_err(),
            "one stack per process"
        );

        // A descriptor from C is one of the Rust handle's, and the other way round.
        let from_c = connectx::abi::cx_socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(
            from_c >= 3,
            "cx_socket: {}",
            std::io::Error::last_os_error()
        );
        let rust = connectx::running().expect("installed");
        rust.set_nonblocking(from_c, true).unwrap();
        assert_eq!(
            connectx::abi::cx_fcntl(from_c, libc::F_GETFL, 0) & libc::O_NONBLOCK,
            libc::O_NONBLOCK
        );
        let from_rust = net.socket(Family::V4, SocketType::Datagram).unwrap();
        assert_eq!(connectx::abi::cx_close(from_rust), 0);
        assert!(net.close(from_rust).is_err(), "closed from C");

        assert!(connectx::uninstall().is_some());
        assert!(connectx::uninstall().is_none());
        assert_eq!(
            connectx::abi::cx_socket(libc::AF_INET, libc::SOCK_STREAM, 0),
            -1
        );
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENETDOWN)
        );
        // The stack itself still runs for Rust.
        net.close(from_c).unwrap();
        net.stop();
    })
    .join()
    .unwrap();
}
