//! Checks of the files and directories that `serve` uses, for `hallmark
//! config check`. They run as the user that runs the check, so run it as
//! the service's user to see what the service will see.

use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Access, access};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use super::TlsFiles;

/// Checks that `path` is a regular file that this process can read.
pub(super) fn check_readable(path: &Path) -> Result<(), String> {
    let display = path.display();
    let metadata = std::fs::metadata(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => format!("{display} does not exist"),
        _ => format!("cannot read {display}: {error}"),
    })?;
    if !metadata.is_file() {
        let kind = super::describe_file_type(&metadata.file_type());
        return Err(format!("{display} is {kind}, not a regular file"));
    }
    std::fs::File::open(path)
        .map(drop)
        .map_err(|error| format!("cannot read {display}: {error}"))
}

/// Checks that `directory` is a directory that this process can create
/// files in, or, when it is missing, that its closest existing ancestor
/// is, so that `serve` can create it.
pub(super) fn check_writable_directory(directory: &Path) -> Result<(), String> {
    let display = directory.display();
    let existing = directory
        .ancestors()
        .find(|ancestor| std::fs::symlink_metadata(ancestor).is_ok())
        .unwrap_or(Path::new("/"));
    let metadata = std::fs::metadata(existing)
        .map_err(|error| format!("cannot read {}: {error}", existing.display()))?;
    if !metadata.is_dir() {
        return Err(if existing == directory {
            format!("{display} is not a directory")
        } else {
            format!(
                "{display} cannot be created, because {} is not a directory",
                existing.display()
            )
        });
    }
    access(existing, Access::WRITE_OK | Access::EXEC_OK).map_err(|error| {
        let error = std::io::Error::from(error);
        if existing == directory {
            format!("cannot create files in {display}: {error}")
        } else {
            format!(
                "{display} does not exist and cannot be created in {}: {error}",
                existing.display()
            )
        }
    })
}

/// Kernel file systems, whose directories hold no ordinary files.
const KERNEL_FILE_SYSTEMS: &[&str] = &["/proc", "/sys"];

/// Returns the kernel file system that `directory` is on, judged from the
/// path with `.` and `..` resolved, and with `resolve_links` also from the
/// real path of its closest existing ancestor. A relative path is taken
/// relative to the working directory.
pub(super) fn kernel_file_system(directory: &Path, resolve_links: bool) -> Option<&'static str> {
    let absolute = std::path::absolute(directory).ok()?;
    let mut normal = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    let mut candidates = vec![normal.clone()];
    if resolve_links
        && let Some(existing) = normal.ancestors().find(|a| a.exists())
        && let Ok(real) = std::fs::canonicalize(existing)
        && let Ok(rest) = normal.strip_prefix(existing)
    {
        candidates.push(real.join(rest));
    }
    KERNEL_FILE_SYSTEMS
        .iter()
        .copied()
        .find(|root| candidates.iter().any(|path| path.starts_with(root)))
}

/// Checks that a Unix socket can be created at `path`: its directory
/// exists, and the path is free or is a socket (`serve` replaces a stale
/// one at start).
pub(super) fn check_socket_path(path: &Path) -> Result<(), String> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(format!(
            "the directory {} of the socket does not exist; create it first",
            parent.display()
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if !metadata.file_type().is_socket() => Err(format!(
            "{} exists and is not a socket; choose another path",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// Reads the PEM files and builds the server's TLS settings from them. The
/// settings are tried on a server builder, as `serve` uses them, so that a
/// key that does not match its certificate is reported here.
pub(super) fn server_tls(files: &TlsFiles) -> Result<ServerTlsConfig, String> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
    };
    let identity = Identity::from_pem(read(&files.cert)?, read(&files.key)?);
    let client_ca = Certificate::from_pem(read(&files.client_ca)?);
    let settings = ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(client_ca);
    Server::builder()
        .tls_config(settings.clone())
        .map_err(|error| {
            format!(
                "the PEM files are not a valid TLS identity and CA: {}",
                chain(&error)
            )
        })?;
    Ok(settings)
}

/// Returns an error's message followed by those of its sources.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_file_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("module.so");
        std::fs::write(&file, "x").expect("write");
        assert_eq!(check_readable(&file), Ok(()));

        let missing = dir.path().join("missing.so");
        assert_eq!(
            check_readable(&missing),
            Err(format!("{} does not exist", missing.display()))
        );
        assert_eq!(
            check_readable(dir.path()),
            Err(format!(
                "{} is a directory, not a regular file",
                dir.path().display()
            ))
        );
    }

    #[test]
    fn writable_directory_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(check_writable_directory(dir.path()), Ok(()));
        assert_eq!(
            check_writable_directory(&dir.path().join("audit/nested")),
            Ok(())
        );

        let file = dir.path().join("file");
        std::fs::write(&file, "x").expect("write");
        assert_eq!(
            check_writable_directory(&file),
            Err(format!("{} is not a directory", file.display()))
        );
        let below_file = file.join("audit");
        assert_eq!(
            check_writable_directory(&below_file),
            Err(format!(
                "{} cannot be created, because {} is not a directory",
                below_file.display(),
                file.display()
            ))
        );
    }

    #[test]
    fn kernel_file_systems_are_found() {
        for (path, found) in [
            ("/proc/self", Some("/proc")),
            ("/sys/kernel/audit", Some("/sys")),
            ("/var/../proc/x", Some("/proc")),
            ("/proc", Some("/proc")),
            ("/processes/audit", None),
            ("/var/lib/hallmark/audit", None),
            ("/system/audit", None),
        ] {
            assert_eq!(kernel_file_system(Path::new(path), false), found, "{path}");
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("state");
        std::os::unix::fs::symlink("/proc/self", &link).expect("symlink");
        let below = link.join("audit");
        assert_eq!(kernel_file_system(&below, false), None);
        assert_eq!(kernel_file_system(&below, true), Some("/proc"));
        assert_eq!(kernel_file_system(dir.path(), true), None);
    }

    #[test]
    fn socket_path_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(check_socket_path(&dir.path().join("h.sock")), Ok(()));

        let missing = dir.path().join("run/h.sock");
        assert_eq!(
            check_socket_path(&missing),
            Err(format!(
                "the directory {} of the socket does not exist; create it first",
                dir.path().join("run").display()
            ))
        );
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").expect("write");
        assert_eq!(
            check_socket_path(&file),
            Err(format!(
                "{} exists and is not a socket; choose another path",
                file.display()
            ))
        );
    }
}
