//! `include/connectx.h` is written by hand: these tests hold it to the Rust functions and
//! struct it declares (names, parameter and return types, `sa_endpoints_t`'s layout as the C
//! compiler lays it out), so the two cannot drift apart.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const HEADER: &str = include_str!("../include/connectx.h");
const ABI: &str = include_str!("../src/abi.rs");

/// The C spelling of a Rust parameter or return type of `abi.rs`.
fn c_type(rust: &str) -> String {
    let t: String = rust.split_whitespace().collect::<Vec<_>>().join(" ");
    let (prefix, base) = if let Some(b) = t.strip_prefix("*const ") {
        ("const ", b)
    } else if let Some(b) = t.strip_prefix("*mut ") {
        ("", b)
    } else {
        return match t.as_str() {
            "" => "void",
            "c_int" => "int",
            "c_uint" => "unsigned int",
            "size_t" => "size_t",
            "ssize_t" => "ssize_t",
            "socklen_t" => "socklen_t",
            "libc::nfds_t" => "nfds_t",
            "SaeAssocId" => "sae_associd_t",
            "SaeConnId" => "sae_connid_t",
            other => panic!("no C spelling for {other}"),
        }
        .to_owned();
    };
    let base = match base {
        "c_char" => "char",
        "c_void" => "void",
        "CxNet" => "cx_net",
        "SaEndpointsC" => "sa_endpoints_t",
        "iovec" => "struct iovec",
        "sockaddr" => "struct sockaddr",
        "pollfd" => "struct pollfd",
        "size_t" => "size_t",
        "socklen_t" => "socklen_t",
        "SaeConnId" => "sae_connid_t",
        other => panic!("no C spelling for pointer to {other}"),
    };
    format!("{prefix}{base} *")
}

/// Split at top-level commas.
fn params(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every `extern "C" fn` of `abi.rs`: name → (C parameter types, C return type).
fn rust_functions() -> BTreeMap<String, (Vec<String>, String)> {
    let mut out = BTreeMap::new();
    for chunk in ABI.split("extern \"C\" fn ").skip(1) {
        let name = chunk[..chunk.find('(').unwrap()].trim().to_owned();
        let open = chunk.find('(').unwrap();
        let close = open + chunk[open..].find(')').unwrap();
        let types = params(&chunk[open + 1..close])
            .iter()
            .map(|p| c_type(p.split_once(':').unwrap().1))
            .collect();
        let rest = &chunk[close + 1..chunk.find('{').unwrap()];
        let ret = c_type(rest.trim().trim_start_matches("->"));
        out.insert(name, (types, ret));
    }
    out
}

/// A C declaration's type without its parameter name: `const char *name` → `const char *`.
fn strip_name(decl: &str) -> String {
    let d = decl.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut = d
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let ty = d[..cut].trim_end();
    if let Some(base) = ty.strip_suffix('*') {
        format!("{} *", base.trim_end())
    } else {
        ty.to_owned()
    }
}

/// Every function prototype of the header: name → (parameter types, return type).
fn header_functions() -> BTreeMap<String, (Vec<String>, String)> {
    let mut text = HEADER.to_owned();
    while let Some(start) = text.find("/*") {
        let end = start + text[start..].find("*/").unwrap() + 2;
        text.replace_range(start..end, " ");
    }
    let code: String = text
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with('#') && !l.contains("extern \"C\"") && l.trim() != "}"
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = BTreeMap::new();
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        if stmt.starts_with("typedef") || !stmt.contains('(') || stmt.contains('{') {
            continue;
        }
        let open = stmt.find('(').unwrap();
        let head = strip_name(&stmt[..open]);
        let name = stmt[..open]
            .trim()
            .rsplit([' ', '*'])
            .next()
            .unwrap()
            .to_owned();
        let list = &stmt[open + 1..stmt.rfind(')').unwrap()];
        let types = if list.trim() == "void" {
            Vec::new()
        } else {
            params(list).iter().map(|p| strip_name(p)).collect()
        };
        out.insert(name, (types, head));
    }
    out
}

#[test]
fn the_header_declares_exactly_the_functions_of_the_library() {
    let rust = rust_functions();
    let header = header_functions();
    assert!(rust.len() >= 30, "found {} functions in abi.rs", rust.len());
    let rust_names: Vec<&String> = rust.keys().collect();
    let header_names: Vec<&String> = header.keys().collect();
    assert_eq!(rust_names, header_names, "the same functions");
    for (name, (types, ret)) in &rust {
        let (h_types, h_ret) = &header[name];
        assert_eq!(
            (types, ret),
            (h_types, h_ret),
            "{name}: Rust's signature against the header's"
        );
    }
}

#[test]
fn sa_endpoints_t_has_the_layout_c_gives_it() {
    use connectx::abi::SaEndpointsC;
    use std::mem::{offset_of, size_of};
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let src = dir.join("layout.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <stddef.h>\n#include \"connectx.h\"\n\
         int main(void) { printf(\"%zu %zu %zu %zu %zu %zu\", sizeof(sa_endpoints_t), \
         offsetof(sa_endpoints_t, sae_srcif), offsetof(sa_endpoints_t, sae_srcaddr), \
         offsetof(sa_endpoints_t, sae_srcaddrlen), offsetof(sa_endpoints_t, sae_dstaddr), \
         offsetof(sa_endpoints_t, sae_dstaddrlen)); return 0; }\n",
    )
    .unwrap();
    let exe = dir.join("layout");
    let status = support::cc()
        .args(["-Wall", "-Werror", "-I"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("cc (the system's C compiler)");
    assert!(status.success());
    let out = Command::new(&exe).output().unwrap();
    let c = String::from_utf8(out.stdout).unwrap();
    let rust = format!(
        "{} {} {} {} {} {}",
        size_of::<SaEndpointsC>(),
        offset_of!(SaEndpointsC, sae_srcif),
        offset_of!(SaEndpointsC, sae_srcaddr),
        offset_of!(SaEndpointsC, sae_srcaddrlen),
        offset_of!(SaEndpointsC, sae_dstaddr),
        offset_of!(SaEndpointsC, sae_dstaddrlen)
    );
    assert_eq!(c, rust, "C's layout against Rust's");
}
