//! What the C tests share.

use std::process::{Command, Stdio};

/// The system's C compiler: `$CC`, else `cc`, else `gcc`.
pub fn cc() -> Command {
    if let Some(cc) = std::env::var_os("CC").filter(|c| !c.is_empty()) {
        return Command::new(cc);
    }
    let has_cc = Command::new("cc")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    Command::new(if has_cc { "cc" } else { "gcc" })
}
