//! Network namespaces: opening them at start, and the helper thread that creates sockets
//! inside them so executor threads never change namespace.

mod helper;

pub use helper::{
    NamespaceHelper, SocketRequestError, Transport, outbound_datagram_socket, outbound_socket,
};

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

/// `ioctl(NS_GET_NSTYPE)`: asks nsfs which kind of namespace a file refers to.
/// Available since Linux 4.11.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Index of an opened namespace in its [`NamespaceTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespaceId(usize);

/// A namespace as a route refers to it: its id, and its name as the user wrote it for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceRef {
    /// Which opened namespace.
    pub id: NamespaceId,
    /// The value from the configuration (`ns1` or `/proc/42/ns/net`).
    pub name: Arc<str>,
}

impl fmt::Display for NamespaceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Why a namespace value could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// An empty value.
    #[error(
        "the namespace is empty; give a name under /run/netns or a path such as /proc/PID/ns/net"
    )]
    Empty,
    /// A relative path, which would depend on the working directory.
    #[error("\"{0}\" is neither a name under /run/netns nor an absolute path")]
    Relative(String),
    /// The file could not be opened.
    #[error("cannot open {path}: {source}{hint}")]
    Open {
        /// The file tried.
        path: String,
        /// What the kernel said.
        source: std::io::Error,
        /// How to create it, for names.
        hint: String,
    },
    /// The file exists but is not a network namespace.
    #[error("{0} is not a network namespace")]
    NotNetwork(String),
}

/// The namespaces a configuration uses, each opened once and kept open for the life of the
/// process, so that a namespace deleted after start (`ip netns del`) still works for dials.
///
/// Entries are only ever added: a reload opens every namespace again, and one that is the
/// same namespace as an entry (same nsfs inode) keeps that entry's id, so routes, listeners
/// and pools of the running configuration stay valid.
#[derive(Debug, Default)]
pub struct NamespaceTable {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    name: Arc<str>,
    file: File,
    /// `(st_dev, st_ino)` of the nsfs file: which namespace this is.
    identity: (u64, u64),
}

impl NamespaceTable {
    /// Opens the namespace named by a configuration value; a namespace already in the table
    /// (under any name or path) keeps its entry and id.
    ///
    /// A value starting with `/` is a path (`/proc/PID/ns/net`); anything else is a name
    /// under `/run/netns`, as `ip netns add` creates.
    pub fn open(&mut self, value: &str) -> Result<NamespaceRef, NamespaceError> {
        let (path, hint) = namespace_path(value)?;
        let file = File::open(&path).map_err(|source| NamespaceError::Open {
            path: path.display().to_string(),
            hint: if source.kind() == std::io::ErrorKind::NotFound {
                hint
            } else {
                String::new()
            },
            source,
        })?;
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the open file.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
        if kind != libc::CLONE_NEWNET {
            return Err(NamespaceError::NotNetwork(path.display().to_string()));
        }
        let metadata = file.metadata().map_err(|source| NamespaceError::Open {
            path: path.display().to_string(),
            hint: String::new(),
            source,
        })?;
        let identity = (metadata.dev(), metadata.ino());
        let name: Arc<str> = Arc::from(value);
        let index = match self.entries.iter().position(|e| e.identity == identity) {
            Some(index) => index,
            None => {
                self.entries.push(Entry {
                    name: name.clone(),
                    file,
                    identity,
                });
                self.entries.len() - 1
            }
        };
        Ok(NamespaceRef {
            id: NamespaceId(index),
            name,
        })
    }

    /// A copy sharing the same namespaces (each file duplicated), for a reload to compile
    /// into while the helper keeps serving from this one.
    pub fn try_clone(&self) -> std::io::Result<NamespaceTable> {
        let entries = self
            .entries
            .iter()
            .map(|entry| {
                Ok(Entry {
                    name: entry.name.clone(),
                    file: entry.file.try_clone()?,
                    identity: entry.identity,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(NamespaceTable { entries })
    }

    /// The number of namespaces opened.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the configuration uses no namespace.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn file(&self, id: NamespaceId) -> &File {
        &self.entries[id.0].file
    }

    fn name(&self, id: NamespaceId) -> &str {
        &self.entries[id.0].name
    }
}

fn namespace_path(value: &str) -> Result<(PathBuf, String), NamespaceError> {
    if value.is_empty() {
        return Err(NamespaceError::Empty);
    }
    if value.starts_with('/') {
        return Ok((PathBuf::from(value), String::new()));
    }
    if value.contains('/') || value == "." || value == ".." {
        return Err(NamespaceError::Relative(value.to_owned()));
    }
    let hint = format!(" (create it with `ip netns add {value}`, or give a path)");
    Ok((PathBuf::from("/run/netns").join(value), hint))
}
