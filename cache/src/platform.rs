//! The platform fingerprint that enters every action key: the same inputs built on another
//! architecture, kernel family or C library are another action.

/// `ARCH-OS-LIBC`, e.g. `x86_64-linux-glibc2.36`.
pub fn fingerprint() -> String {
    format!(
        "{}-{}-{}",
        std::env::consts::ARCH,
        std::env::consts::OS,
        libc_version()
    )
}

/// The C library this process runs on, e.g. `glibc2.36`, or `unknown-libc`.
fn libc_version() -> String {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
        format!("glibc{}", v.to_string_lossy())
    }
    #[cfg(all(target_os = "linux", target_env = "musl"))]
    {
        "musl".to_string()
    }
    #[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
    {
        "unknown-libc".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_names_arch_os_and_libc() {
        let f = fingerprint();
        let parts: Vec<&str> = f.splitn(3, '-').collect();
        assert_eq!(parts[0], std::env::consts::ARCH);
        assert_eq!(parts[1], std::env::consts::OS);
        #[cfg(target_env = "gnu")]
        assert!(parts[2].starts_with("glibc2."), "{f}");
    }
}
